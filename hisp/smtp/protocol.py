"""aiosmtpd's SMTP protocol with the stricter rules a HISP needs on the wire.

aiosmtpd already ends DATA only at ``<CRLF>.<CRLF>`` (its SMTP smuggling fix), answers ``503``
for commands out of sequence and ``552`` over the size limit. On top of that:

- command lines must end in CRLF and hold no other CR (RFC 5321 section 2.3.8: a bare LF is not
  a line ending), and a message body containing a bare CR or bare LF is refused (see
  :func:`bare_line_ending`), which also refuses every ``<LF>.<CR><LF>`` / ``<CR><LF>.<LF>``
  smuggling variant;
- an idle session is told ``421`` before it is closed; AUTH mechanism names are
  case-insensitive;
- local parts are limited to 64 octets (RFC 5321 section 4.5.3.1.1).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

# RFC 5321 section 4.5.3.1: local part 64, path 256 (with the angle brackets), 100 recipients
# is the minimum a server must accept and what we accept at most.
MAX_PATH = 254
MAX_RECIPIENTS = 100
IDLE_TIMEOUT = 300.0  # RFC 5321 section 4.5.3.2.7: the server timeout is at least 5 minutes

BARE_LINE_ENDING = "550 5.6.0 Bare CR or LF in message; lines must end in CRLF (RFC 5321 2.3.8)"
PATH_TOO_LONG = "501 5.1.3 Path too long (RFC 5321 4.5.3.1.3)"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
SESSION_COMMAND_LIMIT = 20_000


def bare_line_ending(data: bytes) -> bool:
    """True when ``data`` has a CR not followed by LF or an LF not preceded by CR."""
    crlf = data.count(b"\r\n")
    return data.count(b"\r") != crlf or data.count(b"\n") != crlf


class _CrlfLineReader(asyncio.StreamReader):
    """Command lines ending in a bare LF, or with a bare CR inside, are handed on empty, which
    aiosmtpd answers with ``500 Error: bad syntax`` instead of executing them (RFC 5321 section
    2.3.8: CR and LF only ever appear together, as the line ending)."""

    async def readuntil(self, separator: Any = b"\n") -> bytes:  # typeshed: a private alias
        line = await super().readuntil(separator)
        if separator == b"\n" and (not line.endswith(b"\r\n") or b"\r" in line[:-2]):
            return b"\r\n"
        return line


class HispSMTP(SMTP):
    local_part_limit = 64

    async def smtp_AUTH(self, arg: str) -> None:
        # SASL mechanism names are case-insensitive (RFC 4954 section 4); aiosmtpd compares
        # them as sent. Only the name is upper-cased, never the initial response.
        if arg:
            name, space, rest = arg.lstrip().partition(" ")
            arg = name.upper() + space + rest
        await super().smtp_AUTH(arg)

    def _timeout_cb(self) -> None:
        # RFC 5321 section 3.8 / 4.5.3.2.7: say why before closing an idle session (421), so
        # the client knows to retry rather than guessing from a dropped connection.
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(f"421 4.4.2 {self.hostname} Idle timeout; closing\r\n".encode())
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def _cb_client_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        reader.__class__ = _CrlfLineReader  # same object, stricter readuntil()
        super()._cb_client_connected(reader, writer)


class HispController(Controller):
    """A threaded aiosmtpd controller that builds :class:`HispSMTP` sessions."""

    def factory(self) -> SMTP:
        return HispSMTP(self.handler, **self.SMTP_kwargs)

    def stop(self, no_assert: bool = False) -> None:
        from hisp.smtp import threads

        super().stop(no_assert=no_assert)
        threads.shutdown()


def smtp_options(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments common to both listeners."""
    from django.conf import settings

    options: dict[str, Any] = {
        "data_size_limit": settings.HISP_MAX_MESSAGE_BYTES,
        "enable_SMTPUTF8": False,
        "decode_data": False,
        "server_hostname": settings.HISP_HOSTNAME,
        "ident": "HISP ESMTP",
        "timeout": IDLE_TIMEOUT,
        # Bounded so a client cannot keep a session busy forever with cheap commands, yet high
        # enough for a partner HISP that sends thousands of messages over one session (the
        # per-message recipient limit is enforced in handle_RCPT; these count per session).
        "command_call_limit": {"*": SESSION_COMMAND_LIMIT, "RCPT": SESSION_COMMAND_LIMIT,
                               "AUTH": 5},
    }
    options.update(overrides)
    return options
