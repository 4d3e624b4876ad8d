"""Small shared helpers for the operator CLI (a stable public interface, see README).

Every command exits non-zero with a one-line error on bad input (``CommandError``), and with
``--json`` prints exactly one JSON array or object on stdout and nothing else.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from hisp.mailtext import printable

# The actor recorded in the audit log for actions taken at the command line.
CLI_ACTOR = "cli"


def _default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_json(command: BaseCommand, data: list[Any] | dict[str, Any]) -> None:
    command.stdout.write(json.dumps(data, default=_default, indent=2), ending="\n")


# What an error line echoes of the operator's (or a stranger's) input: the services quote what
# they refuse, and a 100 KB argument or file name would otherwise come back whole.
LONGEST_ECHOED_WORD = 100
LONGEST_ERROR_LINE = 500
_ELLIPSIS = "\u2026"
# Unicode categories that show nothing or act on the terminal: controls, format characters
# (bidirectional overrides, CVE-2021-42574), surrogates (bytes that were not UTF-8), private
# use, and line and paragraph separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def one_line(message: object) -> str:
    """``message`` as one readable line for the operator's terminal, the one place every
    command's error passes: whitespace runs become one space, each invisible or terminal-
    controlling character its escape (``\\x1b``, ``\\u202e``), a word longer than
    ``LONGEST_ECHOED_WORD`` is cut with an ellipsis, and so is a line longer than
    ``LONGEST_ERROR_LINE`` (in its middle: the start says what failed, the end often why)."""
    words = [_capped(_visible(word)) for word in str(message).split()]
    line = " ".join(words)
    if len(line) <= LONGEST_ERROR_LINE:
        return line
    tail = LONGEST_ERROR_LINE // 4
    return f"{line[:LONGEST_ERROR_LINE - tail - 3]} {_ELLIPSIS} {line[-tail:]}"


def _visible(word: str) -> str:
    if word.isprintable():
        return word
    return "".join(
        ch.encode("unicode_escape", "backslashreplace").decode("ascii")
        if unicodedata.category(ch) in _INVISIBLE else ch
        for ch in word
    )


def _capped(word: str) -> str:
    if len(word) <= LONGEST_ECHOED_WORD:
        return word
    return word[:LONGEST_ECHOED_WORD] + _ELLIPSIS


def shown(text: str) -> str:
    """A stranger's words (a partner's certificate subject, a discovered certificate) as one
    line for the operator's terminal: a control character could move the cursor, recolour or
    rewrite what the operator reads, so each becomes U+FFFD (JSON output escapes them anyway)."""
    return printable(str(text)).replace("\r", "\ufffd").replace("\n", "\ufffd").replace(
        "\t", " ")


@contextmanager
def user_errors(*kinds: type[Exception]) -> Iterator[None]:
    """Turn the services' typed errors (bad input) into a one-line ``CommandError`` whose echo
    of the input is bounded (``one_line``)."""
    handled: tuple[type[Exception], ...] = (ValueError, *kinds)
    try:
        yield
    except CommandError as exc:
        # Raised inside the block by a command's own check: shortened the same way, keeping
        # its class and exit status.
        exc.args = (one_line(str(exc)), *exc.args[1:])
        raise
    except handled as exc:
        raise CommandError(one_line(str(exc))) from None


def read_file(path: str) -> bytes:
    """The file's bytes, up to the message size limit: nothing the CLI reads (a certificate, a
    key, a bundle, a message or an attachment) is larger, and a device such as /dev/zero given
    by mistake must end in an error, not fill the memory."""
    limit = settings.HISP_MAX_MESSAGE_BYTES
    try:
        with open(path, "rb") as stream:
            data = stream.read(limit + 1)
    except OSError as exc:
        raise CommandError(one_line(f"cannot read {path}: {exc.strerror or exc}")) from None
    if len(data) > limit:
        raise CommandError(one_line(f"cannot read {path}: larger than {limit} bytes "
                                    "(HISP_MAX_MESSAGE_BYTES)"))
    return data


def write_output(command: BaseCommand, data: bytes, out: str | None) -> None:
    """Write to ``out`` (a file) or to stdout."""
    if out:
        try:
            Path(out).write_bytes(data)
        except OSError as exc:
            raise CommandError(one_line(f"cannot write {out}: {exc.strerror or exc}")) from None
        return
    command.stdout.write(data.decode("ascii"), ending="")


def read_secret(stream: IO[str] | None = None) -> str:
    """A password given on stdin (``--password-stdin``): its first line, without the newline."""
    line = (stream or sys.stdin).readline().rstrip("\r\n")
    if not line:
        raise CommandError("--password-stdin: no password on standard input")
    return line
