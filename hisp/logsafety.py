"""Log lines that words from outside cannot forge or disguise.

Much of what the HISP logs was written by someone else: an SMTP client's commands and paths
(aiosmtpd logs an unknown command and every MAIL and RCPT address with ``%s``), a remote
server's reply, a certificate's subject. A line end in one would start a forged log line; a
terminal escape would rewrite what an operator sees in ``journalctl`` or ``tail``; a bidi
override would reorder it. Escaping each such call site misses the ones in libraries, so every
record is escaped once, on its way to a handler.
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any

# C0 and C1 controls (line ends and tab included: one record is one line), DEL, the Unicode line
# and paragraph separators, and the bidi embeddings, overrides and isolates.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escaped(text: str) -> str:
    """``text`` with every unsafe character written as a Python escape (``\\x1b``, ``\\u202e``)."""
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


class ControlCharacterFilter(logging.Filter):
    """A handler filter: the record's message is formatted and escaped here, so the formatter
    writes it as one line of visible characters. A traceback keeps its line ends; anything
    else unsafe in it is escaped too."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        safe = escaped(message)
        if safe is not message:
            record.msg, record.args = safe, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = _traceback(record.exc_info[1])
        elif record.exc_text:
            record.exc_text = "\n".join(escaped(line) for line in record.exc_text.split("\n"))
        return True


class ExpectedRefusal(logging.Filter):
    """A logger filter for refusals that anyone on the internet can provoke at will (Django's
    ``DisallowedHost``, which scanners send all day): one warning line each, without the
    traceback of our own frames that Django attaches, so real errors stay easy to find."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _traceback(error: BaseException) -> str:
    """The usual traceback, each exception's own text on one escaped line: that text (a
    remote reply, a parser's complaint quoting input) may hold a line end of its own, while
    the frames around it are ours."""
    formatted = traceback.TracebackException.from_exception(error)
    text = "".join(formatted.format())
    seen: set[int] = set()
    chain: list[traceback.TracebackException] = [formatted]
    while chain:
        each = chain.pop()
        if id(each) in seen:
            continue
        seen.add(id(each))
        only = "".join(each.format_exception_only())
        text = text.replace(only, escaped(only.removesuffix("\n")) + "\n")
        chain += [e for e in (each.__cause__, each.__context__) if e is not None]
        chain += [e for group in [each.exceptions or []] for e in group]
    return "\n".join(escaped(line) for line in text.removesuffix("\n").split("\n"))


def protect_handlers(logger: logging.Logger | None = None, **_: Any) -> None:
    """Add the filter to every handler of ``logger`` (the root logger by default): for the
    handlers Celery's worker sets up itself (``after_setup_logger`` signal)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, ControlCharacterFilter) for f in handler.filters):
            handler.addFilter(ControlCharacterFilter())
