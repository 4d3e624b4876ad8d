"""aiosmtpd's SMTP protocol with the stricter rules a HISP needs on the wire.

aiosmtpd already ends DATA only at ``<CRLF>.<CRLF>`` (its SMTP smuggling fix), answers ``503``
for commands out of sequence and ``552`` over the size limit. On top of that:

- command lines must end in CRLF and hold no other CR (RFC 5321 section 2.3.8: a bare LF is not
  a line ending), and a message body containing a bare CR or bare LF is refused (see
  :func:`bare_line_ending`), which also refuses every ``<LF>.<CR><LF>`` / ``<CR><LF>.<LF>``
  smuggling variant;
- an idle session is told ``421`` before it is closed; during DATA "idle" means no bytes for
  the timeout, and the timer is stopped while the DATA handler commits (see
  :meth:`HispSMTP._handle_data`);
  AUTH mechanism names are case-insensitive, a listener that offers AUTH takes the ``AUTH=``
  parameter of MAIL (RFC 4954 section 5), and one that offers none answers AUTH ``504``;
- local parts are limited to 64 octets (RFC 5321 section 4.5.3.1.1), and a MAIL or RCPT path
  with bytes beyond ASCII gets RFC 6531's ``553 5.6.7`` (SMTPUTF8 is not offered), or a syntax
  error when they are not UTF-8 (see :func:`non_ascii_path_reply`);
- an AUTH exchange gets exactly one reply per line: ``*`` cancels with one ``501``, an
  undecodable or overlong response gets one ``501`` or ``500 5.5.6`` (RFC 4954 section 4),
  and what a client answers to a challenge is never logged (see :meth:`HispSMTP.challenge_auth`);
- one client address (an IPv6 client: its /64) holds at most
  :data:`MAX_CONNECTIONS_PER_ADDRESS` sessions at a time, all addresses together at most
  :data:`MAX_SESSIONS` (``421`` past either), and a session sends at most
  :data:`JUNK_COMMAND_LIMIT` commands in a row without starting a mail transaction; a nearly
  full listener closes idle sessions after :data:`STRESS_TIMEOUT`, and the messages its
  sessions hold in memory at once are bounded (``452 4.3.1`` past it, see :class:`DataBudget`);
- refused recipients are answered ever more slowly, and past a limit the session is closed
  (see :data:`REFUSED_RECIPIENT_LIMIT`), so addresses cannot be guessed at full speed; every
  refused RCPT counts, the listener's own ``553 5.6.7`` included (see
  :meth:`HispSMTP._recipient_reply`);
- a session sends at most :data:`AUTH_COMMAND_LIMIT` AUTH commands (``421`` past it);
- a ``421`` reply from the error handler ends the session, as a ``421`` must (RFC 5321 3.8);
- STARTTLS inside TLS is ``503`` (aiosmtpd began a second handshake inside the first, which
  failed with tracebacks), and a failed handshake is one warning line, not a traceback;
- DATA is read in large pieces rather than one ``readuntil`` per line (see :class:`_DataReader`),
  with aiosmtpd's replies, limits and hook calls kept as they were;
- stopping the listener is graceful (see :meth:`HispController.stop`): a DATA being committed
  gets its reply, every other session a ``421`` (aiosmtpd cancelled them all, so a committed
  message went unanswered and its sender sent it again).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from warnings import warn

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import DATA_SIZE_DEFAULT as DEFAULT_DATA_SIZE_LIMIT
from aiosmtpd.smtp import MISSING, SMTP, TLSSetupException, syntax

from hisp.mailtext import has_control_character

# The limits below an operator may tune are the defaults of the HISP_SMTP_... settings, which
# smtp_options() reads and the classes take as arguments (README, Configuration).
# RFC 5321 section 4.5.3.1: local part 64, path 256 (with the angle brackets), 100 recipients
# is the minimum a server must accept and what we accept by default.
MAX_PATH = 254
MAX_RECIPIENTS = 100
IDLE_TIMEOUT = 300.0  # RFC 5321 section 4.5.3.2.7: the server timeout is at least 5 minutes

BARE_LINE_ENDING = "550 5.6.0 Bare CR or LF in message; lines must end in CRLF (RFC 5321 2.3.8)"
PATH_TOO_LONG = "501 5.1.3 Path too long (RFC 5321 4.5.3.1.3)"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
# Paths with bytes beyond ASCII (SMTPUTF8 is not offered): see non_ascii_path_reply.
NON_ASCII_ADDRESS = "553 5.6.7 Non-ASCII addresses not permitted (no SMTPUTF8 here, RFC 6531)"
NON_ASCII_DOMAIN = (
    "553 5.6.7 Non-ASCII domain not permitted (no SMTPUTF8 here): send its A-label (xn--...)"
)
NOT_UTF8_SENDER = "501 5.1.7 Bad sender address syntax: bytes that are neither ASCII nor UTF-8"
NOT_UTF8_RECIPIENT = (
    "501 5.1.3 Bad recipient address syntax: bytes that are neither ASCII nor UTF-8"
)
NON_ASCII_PARAMETER = "501 5.5.4 Invalid parameters: non-ASCII characters"
SESSION_COMMAND_LIMIT = 20_000
# AUTH commands in one session (each a guess at a password); one more is 421 and the session
# is closed (aiosmtpd's command_call_limit). The guessing limits that span sessions and
# listeners are hisp.smtp.credentials'; this one makes a guesser reconnect.
AUTH_COMMAND_LIMIT = 5
# Sessions one client address may hold at once: a partner HISP's MTA opens a handful in parallel
# (Postfix at most 20 per destination), while a client holding hundreds (each kept alive by a
# NOOP or a byte of DATA within the idle timeout) would use up the listener's file descriptors.
MAX_CONNECTIONS_PER_ADDRESS = 50
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections from your address; try again later"
# Sessions one listener holds at once, from all addresses together: many addresses (a botnet,
# each under the per-address limit) would otherwise run the process out of file descriptors,
# and then the accept loop stalls while the database and broker connections the listener
# needs for every message fail too. Two listeners at this limit stay under the usual soft
# limit of 1024 descriptors, with room for those connections (Postfix serves 100 at once).
MAX_SESSIONS = 400
TOO_BUSY = "421 4.3.2 Too many connections; try again later"  # RFC 3463 4.3.2
# Once a listener holds STRESS_SHARE of MAX_SESSIONS, a session idle for STRESS_TIMEOUT is
# closed (Postfix's stress mode, with its 10 s). A client that sends a byte or a NOOP just
# within the 5-minute idle timeout (RFC 5321 4.5.3.2.7) holds its session for hours, so a few
# addresses doing that would fill the listener and shut every partner out; under that load
# the timeout is the lesser evil. A working client is never idle that long.
STRESS_SHARE = 0.75
STRESS_TIMEOUT = 10.0
# Messages of the largest size the sessions of one listener may hold in memory at once, from
# their first byte of DATA to the reply (see DataBudget). A session keeps its whole message
# until the commit, so the session limit alone let clients sending large messages at once
# (MAX_SESSIONS x HISP_MAX_MESSAGE_BYTES: 10 GB at the defaults) run the process out of memory.
DATA_BUDGET_MESSAGES = 16
NO_ROOM = "452 4.3.1 Insufficient system storage; try again later"  # RFC 5321 4.2.2, RFC 3463
# Commands that carry no mail, allowed in a row before a MAIL is accepted (Postfix's
# smtpd_junk_command_limit): a real client needs a few, a flood needs thousands.
JUNK_COMMANDS = ("NOOP", "RSET", "HELP", "VRFY", "EXPN", "HELO", "EHLO")
JUNK_COMMAND_LIMIT = 100
TOO_MANY_JUNK = "421 4.7.0 Too many commands without a mail transaction; closing"
# Recipients refused (5xx) in a session since it last delivered a message, as Postfix's error
# limits count them: the first FAST_REFUSALS are answered at once, each later one after
# REFUSED_RECIPIENT_DELAY, and past REFUSED_RECIPIENT_LIMIT the session is closed. Without
# them a client could try 20,000 addresses a session (the RCPT call limit) at full speed and
# learn which Direct addresses exist (a patient portal's say who is whose patient). A partner
# loses nothing: a message has at most MAX_RECIPIENTS, and a delivered one starts afresh.
FAST_REFUSALS = 10
REFUSED_RECIPIENT_DELAY = 1.0
REFUSED_RECIPIENT_LIMIT = 100
TOO_MANY_REFUSED = "421 4.7.0 Too many refused recipients; closing"
SHUTTING_DOWN = "421 4.3.2 Service shutting down; try again later"  # RFC 3463 4.3.2
TLS_ALREADY_ACTIVE = "503 5.5.1 TLS already active"
TLS_FAILED = "421 4.7.0 TLS handshake failed"  # not sent: the connection is gone by then
NO_MECHANISM = "504 5.5.4 Unrecognized authentication type"  # aiosmtpd's wording
AUTH_CANCELLED = "501 5.7.0 Authentication cancelled"  # RFC 4954 section 4: a "*" response
AUTH_UNDECODABLE = "501 5.5.2 Cannot decode the response"
AUTH_LINE_TOO_LONG = "500 5.5.6 Authentication Exchange line is too long"  # RFC 4954 section 4
# The longest answer to an AUTH challenge we read, CRLF included. RFC 4954 section 4: a server
# MUST handle the largest response its mechanisms generate, whatever its other line limits; for
# PLAIN that is RFC 4616's authzid, authcid and passwd of 255 octets each (which a server MUST
# accept), 767 octets and 1,024 in base64. The reader's own limit, the 1,001 octets of a text
# line, refused those as too long; past this one the line is drained and refused with 500 5.5.6.
AUTH_LINE_LIMIT = 2048

# aiosmtpd's own wording, kept so clients see the same replies as before.
DATA_LINE_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
DATA_TOO_MUCH = "552 Error: Too much mail data"

# Seconds beyond twice HISP_SMTP_DB_TIMEOUT (the INSERT, then the look for its row when its
# commit went unconfirmed: services.mail) that stopping a listener waits for DATA replies owed.
DRAIN_MARGIN = 5.0

END_OF_DATA = b"\r\n.\r\n"  # RFC 5321 4.1.1.4; its leading CRLF ends the message's last line
_DOT_LINE = END_OF_DATA[2:]

log = logging.getLogger("mail.log")  # aiosmtpd's logger

# The records in which aiosmtpd logs a client's line (or, at DEBUG, its reply quoting an unknown
# command back), and where in their arguments that line is.
_LINE_RECORDS = {
    "%r >> %r": 1,
    "_handle_client readline: %r": 0,
    "%r unrecognised: %s": 1,
    "%r << %r": 1,
}
_QUOTING_REPLY = b'500 Error: command "'
_VERBS = frozenset(
    b"EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY EXPN HELP AUTH STARTTLS".split()
)


def _shown(template: str, text: bytes) -> bool:
    if template == "%r << %r":
        return not text.startswith(_QUOTING_REPLY)
    return text.strip().partition(b" ")[0].upper() in _VERBS


def max_recipients(server: SMTP) -> int:
    """The recipients one message may have on ``server``'s listener (HISP_SMTP_MAX_RECIPIENTS)."""
    return getattr(server, "max_recipients", MAX_RECIPIENTS)


class StrayLineFilter(logging.Filter):
    """aiosmtpd logs every command line as sent (INFO, DEBUG) and an unknown command's name
    (WARNING, and DEBUG in the reply that quotes it); it masks what follows
    ``AUTH <mechanism>``, but a line that is no command at all may be a credential: a client
    that sends its AUTH LOGIN answers although the AUTH was refused (504 on the backbone, 530
    before STARTTLS) has them read as commands. Such lines are logged by their length only."""

    def filter(self, record: logging.LogRecord) -> bool:
        where = _LINE_RECORDS.get(record.msg) if isinstance(record.msg, str) else None
        args = record.args
        if where is None or not isinstance(args, tuple) or len(args) <= where:
            return True
        line = args[where]
        text = line if isinstance(line, bytes) else str(line).encode("utf-8", "replace")
        if not _shown(str(record.msg), text):
            record.args = (*args[:where], f"<{len(text)} octets not shown>", *args[where + 1 :])
        return True


log.addFilter(StrayLineFilter())


def address_group(host: str) -> str:
    """The client address that per-address limits count under: an IPv4 address as it is, an
    IPv6 address as its /64 (one site gets a whole /64 and may send from any address in it),
    and an IPv4-mapped IPv6 address (a dual-stack listener) as the IPv4 address it maps."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class ClientConnections:
    """The sessions each client address group, and all of them together, hold on one
    listener. Used only from that listener's event loop, so it needs no lock."""

    def __init__(
        self,
        limit: int,
        total: int = MAX_SESSIONS,
        stress_timeout: float = STRESS_TIMEOUT,
        stress_share: float = STRESS_SHARE,
    ) -> None:
        self.limit = limit
        self.total = total
        self.stress_timeout = stress_timeout
        self.stress_share = stress_share
        self._open: dict[str, int] = {}
        self._held = 0

    def admit(self, group: str) -> str | None:
        """None when a session from ``group`` may start (it is counted), else the reply
        that refuses it."""
        if self._held >= self.total:
            return TOO_BUSY
        held = self._open.get(group, 0)
        if held >= self.limit:
            return TOO_MANY_CONNECTIONS
        self._open[group] = held + 1
        self._held += 1
        return None

    def idle_timeout(self, normal: float) -> float:
        """How long a session may be idle now: ``normal``, or less while the listener is
        nearly full (see :data:`STRESS_SHARE`)."""
        if self._held >= self.total * self.stress_share:
            return min(normal, self.stress_timeout)
        return normal

    def release(self, group: str) -> None:
        self._held -= 1
        held = self._open.pop(group) - 1
        if held:
            self._open[group] = held


class DataBudget:
    """The bytes of messages that the sessions of one listener hold. A message that does not
    fit is drained and answered :data:`NO_ROOM` (a 4xx: the sender retries, RFC 5321 4.2.5).
    Used only from that listener's event loop, so it needs no lock."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size


def bare_line_ending(data: bytes) -> bool:
    """True when ``data`` has a CR not followed by LF or an LF not preceded by CR."""
    crlf = data.count(b"\r\n")
    return data.count(b"\r") != crlf or data.count(b"\n") != crlf


class _CrlfLineReader(asyncio.StreamReader):
    """Command lines ending in a bare LF, or with a bare CR inside, are handed on empty, which
    aiosmtpd answers with ``500 Error: bad syntax`` instead of executing them (RFC 5321 section
    2.3.8: CR and LF only ever appear together, as the line ending).

    A MAIL or RCPT line with bytes beyond ASCII is kept in :attr:`eight_bit_line` and handed on
    with each such byte as DEL: aiosmtpd (without SMTPUTF8) answered any non-ASCII argument
    ``500 strict ASCII mode`` before running the command, so the reply could not say what was
    refused (RFC 6531 3.5 asks for ``553 5.6.7``), and those lines escaped the command limits.
    Now they reach :meth:`HispSMTP.smtp_MAIL` and ``smtp_RCPT``, which answer from the bytes
    kept (see :func:`non_ascii_path_reply`); no address holding DEL reaches a handler."""

    eight_bit_line: bytes | None = None  # the last command line, when it is such a line

    async def readuntil(self, separator: Any = b"\n") -> bytes:  # typeshed: a private alias
        line = await super().readuntil(separator)
        if separator != b"\n":
            return line
        self.eight_bit_line = None
        if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
            return b"\r\n"
        if not line.isascii() and line[:5].upper() in _PATH_COMMANDS:
            self.eight_bit_line = line
            return line.translate(_EIGHT_BIT_AS_DEL)
        return line


_PATH_COMMANDS = (b"MAIL ", b"RCPT ")
_EIGHT_BIT_AS_DEL = bytes(range(128)) + b"\x7f" * 128


def non_ascii_path_reply(line: bytes, *, sender: bool) -> str | None:
    """The reply to a MAIL (``sender``) or RCPT command line with bytes beyond ASCII, or None
    when it lacks its ``FROM:``/``TO:`` (a plain syntax error, left to aiosmtpd).

    SMTPUTF8 is not offered, so an address in UTF-8 is refused with ``553 5.6.7`` (RFC 6531
    section 3.5; RFC 3463 X.6.7 "non-ASCII addresses not permitted"); one whose only non-ASCII
    part is the domain could have been sent as its A-label (RFC 5890), and the reply says so.
    Bytes that are not UTF-8 form no address at all: a syntax error (X.1.7 for the sender,
    X.1.3 for a recipient). Non-ASCII only after the path is a bad parameter (X.5.4)."""
    keyword = b"FROM:" if sender else b"TO:"
    argument = line.rstrip(b"\r\n").partition(b" ")[2].strip()
    if argument[: len(keyword)].upper() != keyword:
        return None
    rest = argument[len(keyword) :].lstrip()
    if rest.startswith(b"<"):
        path = rest[1:].partition(b">")[0]
    else:
        path = rest.partition(b" ")[0]
    if path.isascii():
        return NON_ASCII_PARAMETER
    try:
        text = path.decode("utf-8")
    except UnicodeDecodeError:
        return NOT_UTF8_SENDER if sender else NOT_UTF8_RECIPIENT
    local, at, _domain = text.rpartition("@")
    if at and local.isascii():
        return NON_ASCII_DOMAIN
    return NON_ASCII_ADDRESS


def _pending_end(window: bytes) -> int:
    """How many bytes at the end of ``window`` could be the start of :data:`END_OF_DATA`."""
    for size in range(min(len(window), len(END_OF_DATA) - 1), 0, -1):
        if window.endswith(END_OF_DATA[:size]):
            return size
    return 0


class _DataReader:
    """Reads the DATA stream in large pieces and stops right after the ``<CRLF>.<CRLF>`` that
    ends it, never later: a client may pipeline its next command behind the dot (RFC 2920), and
    those bytes must stay in the StreamReader for the command loop.

    ``StreamReader.readuntil`` raises ``LimitOverrunError`` once more than its limit (the line
    length limit) has been buffered without the separator, and ``error.consumed`` bytes are then
    known to hold no start of it: those are read as data. The one thing ``readuntil`` cannot see
    is a terminator that begins in bytes already read: the stream starts as if after a CRLF (a
    first line ``.`` is an empty message), and any piece may end in ``\r``, ``\r\n``... So
    ``_pending`` counts the bytes at the end of what was read that may begin the terminator
    without that being ruled out yet, and while it is not zero the next read is chosen so that
    it cannot go past the terminator: ``readexactly`` of the missing bytes, or ``readuntil`` of
    ``.<CRLF>`` (the terminator's tail, which lies wholly in the buffer when at most its CRLF was
    read) followed by a look at the two bytes before it.
    """

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._pending = 2  # the virtual CRLF before the first line
        self._after_dot_line = False
        self.finished = False

    async def read(self) -> bytes:
        """The next piece of the message as sent (still dot-stuffed); sets :attr:`finished`
        once the terminator has been consumed. Pieces may be empty."""
        if self._pending == 0:
            return await self._read_until_end()
        if self._pending > 2 or self._after_dot_line:
            return await self._read_exactly_rest()
        return await self._read_until_dot_line()

    async def _read_until_end(self) -> bytes:
        try:
            piece = await self._reader.readuntil(END_OF_DATA)
        except asyncio.LimitOverrunError as error:
            # Nothing that ends before the last len(END_OF_DATA) - 1 buffered bytes can start
            # the terminator, and read() never takes more than error.consumed: _pending stays 0.
            return await self._reader.read(error.consumed)
        self.finished = True
        return piece[: -len(_DOT_LINE)]

    async def _read_exactly_rest(self) -> bytes:
        # Reading exactly what would complete the pending start cannot go past any terminator:
        # one ending sooner would need a longer pending start.
        pending = self._pending
        self._after_dot_line = False
        window = END_OF_DATA[:pending] + await self._reader.readexactly(len(END_OF_DATA) - pending)
        # The CRLF of a pending start was handed out already (it ends a line of the message,
        # or is the virtual one); a pending "." or ".\r" was held back.
        sent = min(pending, 2)
        if window == END_OF_DATA:
            self.finished = True
            return window[sent:2]
        self._pending = _pending_end(window)
        return window[sent : len(window) - max(self._pending - 2, 0)]

    async def _read_until_dot_line(self) -> bytes:
        # At most "\r\n" of a terminator was read, so its ".\r\n" is wholly unread and the
        # first ".\r\n" found does not lie past the end of the first terminator.
        before = END_OF_DATA[: self._pending]
        try:
            piece = await self._reader.readuntil(_DOT_LINE)
        except asyncio.LimitOverrunError as error:
            piece = await self._reader.read(error.consumed)
            # No ".\r\n" starts in this piece, so only a trailing "\r" or "\r\n" may still
            # begin the terminator.
            self._pending = 2 if piece.endswith(b"\r\n") else int(piece.endswith(b"\r"))
            return piece
        data = piece[: -len(_DOT_LINE)]
        if (before + data)[-2:] == b"\r\n":
            self.finished = True
            return data
        # A line ending in "." then CRLF, as prose often has: look at the next three bytes
        # rather than searching for ".\r\n" again, which would come back once per such line.
        self._pending = 2
        self._after_dot_line = True
        return piece


class _DataCollector:
    """Keeps the message while checking it the way aiosmtpd's line loop did, at C speed.

    aiosmtpd counted every line (with its CRLF, before unstuffing) towards ``data_size_limit``
    and refused lines longer than ``line_length_limit``. Its reader has that same limit, so a
    line whose text alone is longer fails at its first fragment (``500`` even if that line also
    crosses the size limit); other lines are checked whole, size first. The first problem wins,
    the rest of the message is only drained, and nothing more is kept (bounded memory).
    What it keeps is taken from ``budget``, and :meth:`release` gives it back.
    """

    def __init__(
        self, size_limit: int | None, line_limit: int, budget: DataBudget | None = None
    ) -> None:
        self.parts: list[bytes] = []
        self.error: str | None = None
        self._size_limit = size_limit or 0
        self._line_limit = line_limit
        self._size = 0  # bytes of the complete lines so far
        self._line = b""  # the unfinished last line, only while there is no error
        self._budget = budget
        self._taken = 0  # bytes taken from the budget

    def feed(self, piece: bytes) -> None:
        if self.error is not None or not piece:
            return
        text = self._line + piece if self._line else piece
        lines = text.split(b"\r\n")
        self._line = lines.pop()
        complete = len(text) - len(self._line)
        if lines and (
            max(map(len, lines)) + 2 > self._line_limit
            or (self._size_limit and self._size + complete > self._size_limit)
        ):
            self.error = self._first_problem(lines)
        elif len(self._line) - 1 > self._line_limit:
            # Even if the line's last byte is the CR of its CRLF, its text is too long.
            self.error = DATA_LINE_TOO_LONG
        if self.error is None and self._budget is not None:
            if self._budget.take(len(piece)):
                self._taken += len(piece)
            else:
                self.error = NO_ROOM
        if self.error is not None:
            self.parts.clear()
            self._line = b""
            self.release()
            return
        self._size += complete
        self.parts.append(piece)

    def release(self) -> None:
        """Give back what was taken from the budget (the message is no longer kept)."""
        if self._budget is not None:
            self._budget.give_back(self._taken)
        self._taken = 0

    def _first_problem(self, lines: list[bytes]) -> str | None:
        size = self._size
        for text in lines:
            if len(text) > self._line_limit:
                return DATA_LINE_TOO_LONG
            size += len(text) + 2
            if self._size_limit and size > self._size_limit:
                return DATA_TOO_MUCH
            if len(text) + 2 > self._line_limit:
                return DATA_LINE_TOO_LONG
        return None  # pragma: no cover - only called when one of the lines has a problem


def _unstuff(data: bytes) -> bytes:
    """RFC 5321 4.5.2: drop the first character of every line that starts with a dot."""
    if data.startswith(b"."):
        data = data[1:]
    return data.replace(b"\r\n.", b"\r\n")


# A path of the everyday form ``<dot-atom@domain>`` (RFC 5321 section 4.1.2), then the
# parameters: recognised without the email package's header parser, which aiosmtpd runs on
# every MAIL and RCPT (a tenth of the listener's CPU). Anything else goes to that parser.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(
    rf"<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>[ \t]*([^( \t].*)?",
    re.DOTALL,
)


def _without_auth_parameter(arg: str) -> str:
    """``FROM:<path> [parameters]`` without its AUTH parameters.

    RFC 4954 section 5: a server that offers AUTH takes ``AUTH=<mailbox>`` or ``AUTH=<>`` on
    MAIL, and one that does not trust the client to vouch for the original submitter (we
    relay nothing by SMTP AUTH) behaves as if it were ``AUTH=<>``, which changes nothing
    here. aiosmtpd knew no such parameter and answered 555, so every message from an MTA
    relaying through the submission port (Exim and sendmail add ``AUTH=<>`` once they have
    authenticated, Postfix ``AUTH=<sender>``) was refused. The parameters are the words after
    the first that ends in ``>``: the end of the path, for any address a mailbox has."""
    if "AUTH=" not in arg.upper():
        return arg
    words = arg.split(" ")
    end = next((i for i, word in enumerate(words) if word.endswith(">")), None)
    if end is None:
        return arg
    kept = [word for word in words[end + 1 :] if not word.upper().startswith("AUTH=")]
    return " ".join(words[: end + 1] + kept)


class HispSMTP(SMTP):
    local_part_limit = 64
    _reading_data = False  # between the 354 and the end of the message's bytes
    _bytes_at = 0.0  # loop.time() when bytes last arrived
    _connections: ClientConnections | None = None
    _admitted: str | None = None  # the address group this session counts under
    _refusal: str | None = None  # over a session limit: this reply instead of a greeting
    _junk = 0  # commands in a row without a mail transaction
    _refused_recipients = 0  # 5xx answers to RCPT since the session last delivered a message
    _sessions: set[HispSMTP] | None = None  # the listener's open sessions, for its shutdown
    _budget: DataBudget | None = None  # the listener's bytes of messages held
    _draining = False  # the listener is stopping: 421 as soon as no reply is owed
    _replied: asyncio.Future[None] | None = None  # while a DATA reply is owed: done once sent

    def __init__(
        self,
        handler: Any,
        *,
        connections: ClientConnections | None = None,
        sessions: set[HispSMTP] | None = None,
        budget: DataBudget | None = None,
        junk_command_limit: int = JUNK_COMMAND_LIMIT,
        refused_recipient_limit: int = REFUSED_RECIPIENT_LIMIT,
        refused_recipient_delay: float = REFUSED_RECIPIENT_DELAY,
        fast_refusals: int = FAST_REFUSALS,
        max_recipients: int = MAX_RECIPIENTS,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._refused_limit = refused_recipient_limit
        self._refused_delay = refused_recipient_delay
        self._fast_refusals = fast_refusals
        self.max_recipients = max_recipients  # the handlers' limit per message
        self._connections = connections
        self._sessions = sessions
        self._budget = budget
        self._junk_limit = junk_command_limit
        for name in JUNK_COMMANDS:
            self._smtp_methods[name] = self._counted_as_junk(self._smtp_methods[name])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called again once STARTTLS's handshake is done (then _original_transport is set):
        # that is the same connection, already counted.
        if self._original_transport is None and self._connections is not None:
            peer = transport.get_extra_info("peername")
            group = address_group(str(peer[0] if isinstance(peer, tuple) else peer))
            self._refusal = self._connections.admit(group)
            if self._refusal is None:
                self._admitted = group
            elif self._refusal == TOO_BUSY:
                log.warning(
                    "refused a connection from %s: the listener holds %d sessions",
                    group,
                    self._connections.total,
                )
            else:
                log.warning(
                    "refused a connection from %s: it already has %d",
                    group,
                    self._connections.limit,
                )
        if self._sessions is not None:
            self._sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        # aiosmtpd may call this twice (a failed TLS handshake), so release only once.
        if self._admitted is not None and self._connections is not None:
            self._connections.release(self._admitted)
            self._admitted = None
        if self._sessions is not None:
            self._sessions.discard(self)
        super().connection_lost(error)

    async def drain(self) -> None:
        """The listener is stopping: end this session with a ``421`` (RFC 5321 section 3.8),
        but only once the reply to a DATA whose handler has started has been sent. That
        handler may have committed the message: cut off before its ``250``, the sender would
        send the message again and it would be stored twice. A session still receiving its
        message's bytes is refused: nothing of it is stored, and the sender retries."""
        self._draining = True
        if self._replied is not None:
            await asyncio.shield(self._replied)  # _deliver says goodbye after the reply
        self._goodbye()

    def _goodbye(self) -> None:
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(f"{SHUTTING_DOWN}\r\n".encode())
            transport.close()  # after the buffered writes

    async def _handle_client(self) -> None:
        if self._refusal is not None:
            await self.push(self._refusal)
            self._close()
            return
        await super()._handle_client()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _counted_as_junk(
        self, method: Callable[[str], Awaitable[None]]
    ) -> Callable[[str], Awaitable[None]]:
        @functools.wraps(method)  # keeps the syntax that HELP shows
        async def counted(arg: str) -> None:
            self._junk += 1
            if self._junk > self._junk_limit:
                assert self.session is not None
                log.warning("%r sent too many commands without mail", self.session.peer)
                await self.push(TOO_MANY_JUNK)
                self._close()
                return
            await method(arg)

        return counted

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        status = await super()._call_handler_hook(command, *args)
        if command == "RCPT" and isinstance(status, str):
            return await self._recipient_reply(status)
        return status

    async def _recipient_reply(self, status: str) -> str:
        """``status``, the reply to a RCPT, after counting it if it refuses the recipient
        (5xx): slowed past :data:`FAST_REFUSALS`, and past the session's limit replaced by
        :data:`TOO_MANY_REFUSED` with the session closed. Every refusal counts, whoever
        refused it (the handler, or the listener for a non-ASCII path), or a client could
        guess addresses without limit through the refusal that does not count."""
        if not status.startswith("5"):
            return status
        self._refused_recipients += 1
        if self._refused_recipients > self._refused_limit:
            assert self.session is not None
            log.warning("%r had too many recipients refused", self.session.peer)
            if self.transport is not None:
                # Closed once the reply is written (push() writes before it yields).
                self.loop.call_soon(self.transport.close)
            return TOO_MANY_REFUSED
        if self._refused_recipients > self._fast_refusals:
            await asyncio.sleep(self._refused_delay)
        return status

    # The overridden commands keep aiosmtpd's @syntax: HELP lists only the methods that carry
    # it (without it MAIL, DATA and AUTH were missing, and "HELP MAIL" was a 501), and
    # shows a command only while its "when" attribute is true.
    def _non_ascii_refusal(self, *, sender: bool) -> str | None:
        line = getattr(self._reader, "eight_bit_line", None)
        return None if line is None else non_ascii_path_reply(line, sender=sender)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        refusal = self._non_ascii_refusal(sender=True)
        if refusal is not None:
            # After aiosmtpd's own preconditions, as any other refused address would be.
            if not await self.check_helo_needed() and not await self.check_auth_needed("MAIL"):
                await self.push(refusal)
            return
        if arg and self._auth_methods:
            arg = _without_auth_parameter(arg)
        started = self.envelope is not None and bool(self.envelope.mail_from)
        await super().smtp_MAIL(arg)
        if not started and self.envelope is not None and self.envelope.mail_from:
            self._junk = 0

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        refusal = self._non_ascii_refusal(sender=False)
        if refusal is None:
            await super().smtp_RCPT(arg)
            return
        if await self.check_helo_needed() or await self.check_auth_needed("RCPT"):
            return
        if self.envelope is None or not self.envelope.mail_from:
            await self.push("503 Error: need MAIL command")  # aiosmtpd's order and wording
            return
        await self.push(await self._recipient_reply(refusal))

    @property
    def _tls_offered(self) -> bool:
        return self.tls_context is not None and self._tls_protocol is None

    @syntax("STARTTLS", when="_tls_offered")
    async def smtp_STARTTLS(self, arg: str) -> None:
        if self._tls_protocol is not None:
            # RFC 3207 section 4.2: a client must not start TLS inside TLS (nor is it offered).
            await self.push(TLS_ALREADY_ACTIVE)
            return
        await super().smtp_STARTTLS(arg)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            # A client too old for our TLS versions, or a scanner: anyone can cause it at will,
            # so it must not fill the log with tracebacks. aiosmtpd closes the connection.
            assert self.session is not None
            log.warning("%r TLS handshake failed: %s", self.session.peer, error.__cause__)
            return TLS_FAILED
        status: str = await super().handle_exception(error)
        if status.startswith("421") and self.transport is not None:
            # RFC 5321 section 3.8: after a 421 the server closes; aiosmtpd would go on reading
            # commands. Closed once the reply is written (push() writes before it yields).
            self.loop.call_soon(self.transport.close)
        return status

    async def challenge_auth(
        self,
        challenge: str | bytes,
        encode_to_b64: bool = True,
        log_client_response: bool = False,
    ) -> Any:
        """aiosmtpd's challenge, then the client's answer decoded, or MISSING once this method
        has replied. Unlike aiosmtpd's, it never logs the answer (a password typed where base64
        was due would reach a debug log), and an answer longer than a line is drained and
        refused with RFC 4954's ``500 5.5.6``: aiosmtpd's raised, so the session error handler
        ran (a traceback in the log) and the rest of the line was read as commands. So
        ``log_client_response`` is ignored."""
        text = challenge.encode() if isinstance(challenge, str) else challenge
        await self.push(b"334 " + (base64.b64encode(text) if encode_to_b64 else text))
        line = await self._read_auth_line()
        if line is None:
            await self.push(AUTH_LINE_TOO_LONG)
            return MISSING
        blob = line.strip()
        if blob == b"*":
            await self.push(AUTH_CANCELLED)
            return MISSING
        try:
            return base64.b64decode(blob, validate=True)
        except binascii.Error:
            await self.push(AUTH_UNDECODABLE)
            return MISSING

    async def _read_auth_line(self) -> bytes | None:
        """The next line, or None (and the line drained) when it is longer than
        :data:`AUTH_LINE_LIMIT`. Read in pieces of at most the reader's limit, so no more than
        that limit and :data:`AUTH_LINE_LIMIT` is ever held."""
        line = b""
        while len(line) <= AUTH_LINE_LIMIT:
            try:
                line += await self._reader.readuntil(b"\n")
            except asyncio.LimitOverrunError as error:
                line += await self._reader.read(error.consumed)
                continue
            return line if len(line) <= AUTH_LINE_LIMIT else None
        while True:
            try:
                await self._reader.readuntil(b"\n")
                return None
            except asyncio.LimitOverrunError as error:
                await self._reader.read(error.consumed)

    def data_received(self, data: bytes) -> None:
        # One clock read per chunk: the idle timer checks it only when it fires.
        self._bytes_at = self.loop.time()
        super().data_received(data)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        found = _PLAIN_PATH.fullmatch(arg)
        if found is None:
            try:
                address, rest = super()._getaddr(arg)
            except IndexError:  # the email parser on an address cut short, e.g. "a@": malformed
                return None, None
            if address and has_control_character(address):
                # RFC 5321 4.1.2 allows no control character in a path; a NUL would also reach
                # the database (which refuses it) and come back as a 451, retried for ever.
                return None, None
            return address, rest
        address, rest = found.group(1), found.group(2) or ""
        if len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

    @syntax("AUTH <mechanism>", when="_auth_methods")
    async def smtp_AUTH(self, arg: str) -> None:
        if not self._auth_methods and self.session is not None and self.session.extended_smtp:
            # A listener without mechanisms (the backbone) refuses AUTH with the same 504
            # in the clear as inside TLS: aiosmtpd's 538 "encryption required" told the
            # client to retry over TLS, as if the backbone had accounts.
            await self.push(NO_MECHANISM)
            return
        # SASL mechanism names are case-insensitive (RFC 4954 section 4); aiosmtpd compares
        # them as sent. Only the name is upper-cased, never the initial response.
        if arg:
            name, space, rest = arg.lstrip().partition(" ")
            arg = name.upper() + space + rest
        await super().smtp_AUTH(arg)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd's smtp_DATA awaits readuntil(b"\r\n") and does Python bookkeeping once per
        # line; this reads the body in large pieces. Preconditions, replies, limits and the
        # handler call are aiosmtpd's (1.4). aiosmtpd restarts the idle timer only per command,
        # which would cut off a large message on a slow link; here any bytes received keep the
        # session alive (_timeout_cb), and a client stalling mid-DATA still gets its 421.
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        collector = _DataCollector(self.data_size_limit, self.line_length_limit, self._budget)
        try:
            await self._receive(collector)
        finally:
            # Held until the reply: a message waiting for a database thread is still here.
            collector.release()

    async def _receive(self, collector: _DataCollector) -> None:
        self._reading_data = True
        try:
            reader = _DataReader(self._reader)
            while not reader.finished:
                collector.feed(await reader.read())
        except asyncio.CancelledError:
            log.info("Connection lost during DATA")
            self._writer.close()
            raise
        finally:
            self._reading_data = False
        self._reset_timeout()  # the client's last bytes just arrived
        if collector.error is not None:
            if collector.error == NO_ROOM:
                assert self.session is not None
                log.warning("%r: no room for its message (452)", self.session.peer)
            await self.push(collector.error)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        original_content = _unstuff(b"".join(collector.parts))
        collector.parts.clear()
        await self._deliver(original_content)

    async def _deliver(self, original_content: bytes) -> None:
        """aiosmtpd's end of DATA: decode if asked to, call the handler, reply."""
        assert self.envelope is not None
        if self._draining:
            # Told 421 and closed while the rest of the message sat in the read buffer: its
            # reply could not be sent, so it must not be stored.
            return
        content: str | bytes = original_content
        if self._decode_data:
            if self.enable_SMTPUTF8:
                content = original_content.decode("utf-8", errors="surrogateescape")
            else:
                try:
                    content = original_content.decode("ascii", errors="strict")
                except UnicodeDecodeError:
                    await self.push("500 Error: strict ASCII mode")
                    return
        self.envelope.content = content
        self.envelope.original_content = original_content
        self._replied = self.loop.create_future()
        try:
            reply = await self._handle_data()
            if reply.startswith("2"):
                self._refused_recipients = 0  # it delivers mail: errors are forgiven
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push(reply)
        finally:
            replied, self._replied = self._replied, None
            replied.set_result(None)
        if self._draining:
            self._goodbye()

    async def _handle_data(self) -> str:
        """The handler's reply to DATA. Once the handler runs, the message may be committed, so
        nothing on our side may leave it without its reply: a sending HISP that sees none
        retries, and the message is stored twice.

        So the idle timer is stopped meanwhile (fired, it would close the session and cancel
        this task), and the handler is shielded from the session task's cancellation (aiosmtpd
        cancels it on EOF, and a client may half-close after the dot and still read replies).
        """
        self._stop_timeout()
        handler = asyncio.ensure_future(self._call_data_handler())
        try:
            return await asyncio.shield(handler)
        except asyncio.CancelledError:
            await self._reply_when_done(handler)
            raise
        finally:
            if self.transport is not None:  # None once the connection is lost
                # Restarted before the reply is written, and push() writes before it first
                # awaits, so the timer cannot come between the commit and its reply.
                self._reset_timeout()

    async def _call_data_handler(self) -> str:
        if "DATA" in self._handle_hooks:
            status = await self._call_handler_hook("DATA")
        else:
            status = await self._process_message()
        return "250 OK" if status is MISSING else status

    async def _reply_when_done(self, handler: asyncio.Future[str]) -> None:
        """The session is ending while the handler runs: let it finish and write its reply if
        the connection can still carry it."""
        try:
            reply = await asyncio.shield(handler)
        except Exception:
            log.exception("DATA handler failed while its session ended")
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            with contextlib.suppress(ConnectionError):
                await self.push(reply)

    async def _process_message(self) -> Any:
        # aiosmtpd's fallback for handlers written against its pre-1.0 API.
        assert self.envelope is not None and self.session is not None
        process = getattr(self.event_handler, "process_message", None)
        if process is None:
            return MISSING
        warn(
            "Use handler.handle_DATA() instead of .process_message()",
            DeprecationWarning,
            stacklevel=2,
        )
        args = (
            self.session.peer,
            self.envelope.mail_from,
            self.envelope.rcpt_tos,
            self.envelope.content,
        )
        status = await process(*args) if asyncio.iscoroutinefunction(process) else process(*args)
        return MISSING if status is None else status

    def _idle_timeout(self) -> float:
        if self._connections is None:
            return float(self._timeout_duration)
        return self._connections.idle_timeout(self._timeout_duration)

    def _reset_timeout(self, duration: float | None = None) -> None:
        # Asked afresh at every reset, so a session already open gets the shorter timeout
        # of a nearly full listener from its next command, or when its timer next fires.
        idle = self._idle_timeout()
        super()._reset_timeout(idle if duration is None else min(duration, idle))

    def _stop_timeout(self) -> None:
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()

    def _timeout_cb(self) -> None:
        if self._reading_data:
            # Idle during DATA means no bytes for the whole timeout, not a slow transfer.
            quiet = self.loop.time() - self._bytes_at
            idle = self._idle_timeout()
            if quiet < idle:
                self._reset_timeout(idle - quiet)
                return
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
    """A threaded aiosmtpd controller that builds :class:`HispSMTP` sessions, which share one
    count of the sessions each client address, and all of them together, hold.

    The limits come in as arguments (:func:`smtp_options` reads them from the settings), with
    this module's constants as defaults; ``max_buffered`` defaults to ``data_budget_messages``
    messages of the session's ``data_size_limit``."""

    def __init__(
        self,
        handler: Any,
        *args: Any,
        max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS,
        max_sessions: int = MAX_SESSIONS,
        stress_timeout: float = STRESS_TIMEOUT,
        stress_share: float = STRESS_SHARE,
        data_budget_messages: int = DATA_BUDGET_MESSAGES,
        max_buffered: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, *args, **kwargs)
        self.connections = ClientConnections(
            max_connections_per_address, max_sessions, stress_timeout, stress_share
        )
        self.sessions: set[HispSMTP] = set()  # used only from the listener's event loop
        if max_buffered is None:
            size = self.SMTP_kwargs.get("data_size_limit") or DEFAULT_DATA_SIZE_LIMIT
            max_buffered = data_budget_messages * size
        self.budget = DataBudget(max_buffered)

    def factory(self) -> SMTP:
        return HispSMTP(
            self.handler,
            connections=self.connections,
            sessions=self.sessions,
            budget=self.budget,
            **self.SMTP_kwargs,
        )

    def stop(self, no_assert: bool = False) -> None:
        """Stop gracefully: refuse new connections, let every DATA whose handler is running
        send its reply, tell every session ``421``, then stop (aiosmtpd's own stop cancels
        the sessions at once). The wait is bounded by what a DATA handler may take (twice
        HISP_SMTP_DB_TIMEOUT) and a margin; a process manager should give the listener that
        long to stop before it kills it."""
        from hisp.smtp import threads

        self._drain()
        super().stop(no_assert=no_assert)
        threads.shutdown()

    def _drain(self) -> None:
        from django.conf import settings

        if self._thread is None or self.server is None or not self.loop.is_running():
            return
        limit = 2 * settings.HISP_SMTP_DB_TIMEOUT.total_seconds() + DRAIN_MARGIN
        drained = asyncio.run_coroutine_threadsafe(self._drain_sessions(limit), self.loop)
        try:
            drained.result(timeout=limit + DRAIN_MARGIN)
        except Exception:  # a timeout, or the loop gone meanwhile: aiosmtpd's stop ends the rest
            log.warning("SMTP sessions still open at shutdown were cut off")
            drained.cancel()

    async def _drain_sessions(self, limit: float) -> None:
        assert self.server is not None
        self.server.close()  # no new connections from now on
        sessions = [asyncio.ensure_future(session.drain()) for session in list(self.sessions)]
        if sessions:
            _done, pending = await asyncio.wait(sessions, timeout=limit)
            for waiting in pending:
                waiting.cancel()


def smtp_options(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments common to both listeners, for :class:`HispController`: the limits
    an operator may tune come from the settings (``HISP_SMTP_...``, checked at start-up)."""
    from django.conf import settings

    options: dict[str, Any] = {
        "data_size_limit": settings.HISP_MAX_MESSAGE_BYTES,
        "enable_SMTPUTF8": False,
        "decode_data": False,
        "server_hostname": settings.HISP_HOSTNAME,
        "ident": "HISP ESMTP",
        "timeout": settings.HISP_SMTP_IDLE_TIMEOUT.total_seconds(),
        "junk_command_limit": settings.HISP_SMTP_JUNK_COMMAND_LIMIT,
        "max_recipients": settings.HISP_SMTP_MAX_RECIPIENTS,
        "fast_refusals": settings.HISP_SMTP_FAST_REFUSALS,
        "refused_recipient_delay": settings.HISP_SMTP_REFUSED_RECIPIENT_DELAY.total_seconds(),
        "refused_recipient_limit": settings.HISP_SMTP_REFUSED_RECIPIENT_LIMIT,
        # Bounded so a client cannot keep a session busy forever with cheap commands, yet high
        # enough for a partner HISP that sends thousands of messages over one session (the
        # per-message recipient limit is enforced in handle_RCPT; these count per session).
        "command_call_limit": {
            "*": settings.HISP_SMTP_SESSION_COMMAND_LIMIT,
            "RCPT": settings.HISP_SMTP_SESSION_COMMAND_LIMIT,
            "AUTH": settings.HISP_SMTP_AUTH_COMMAND_LIMIT,
        },
        # Taken by HispController, for all of the listener's sessions together.
        "max_sessions": settings.HISP_SMTP_MAX_SESSIONS,
        "max_connections_per_address": settings.HISP_SMTP_MAX_SESSIONS_PER_ADDRESS,
        "stress_share": settings.HISP_SMTP_STRESS_SHARE,
        "stress_timeout": settings.HISP_SMTP_STRESS_TIMEOUT.total_seconds(),
        "data_budget_messages": settings.HISP_SMTP_DATA_BUDGET_MESSAGES,
    }
    options.update(overrides)
    return options
