"""One POP3 session (RFC 1939) on an already encrypted connection.

States: AUTHORIZATION (CAPA, USER/PASS, AUTH PLAIN, QUIT), TRANSACTION (STAT, LIST, UIDL, RETR,
TOP, DELE, RSET, NOOP, CAPA, QUIT), UPDATE (after QUIT: the deletions are applied, then the
connection closes). Anything else, or a command in the wrong state, is ``-ERR`` and the session
goes on.

Limits: a command line is at most 255 octets with its CRLF (RFC 2449 section 4), a SASL
response line at most :data:`MAX_SASL_LINE`; a longer line is refused whole with one ``-ERR``.
A session sends at most ``command_limit`` commands and makes at most :data:`LOGIN_ATTEMPTS`
login attempts; past either it is closed without entering UPDATE, so nothing changes. Idle
for ``idle_timeout`` (RFC 1939 section 3: at least 10 minutes) it is closed the same way, as
is a client that stops reading what it asked for.

Credentials are exactly the submission port's: hisp.smtp.credentials.check (the webmail
password, or an app password for users with a second factor; the same guessing limits,
counted together with the submission port's). A bad password, an unknown user and a user with
no grant on the address all get the same ``-ERR [AUTH]`` (RFC 3206), so nobody learns which
accounts or mailboxes exist; credentials that could not be checked, and a throttled login, get
``-ERR [SYS/TEMP]`` (try again later), as SMTP AUTH answers them ``454``.

Which maildrop: the login names the user and, with USER/PASS, the address too (a user's name
is their address). A delegate names the mailbox as the SASL authorization identity of AUTH
PLAIN (RFC 4616 section 2: the identity to act as), and gets it if they hold a grant on it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser

from hisp.pop3 import maildrop
from hisp.pop3.maildrop import Gone, Item, Maildrop
from hisp.smtp.threads import in_thread

log = logging.getLogger(__name__)

MAX_COMMAND_LINE = 255  # RFC 2449 section 4, CRLF included
# RFC 5034 section 4: a SASL response line may exceed the command limit; PLAIN needs little.
MAX_SASL_LINE = 2048
LOGIN_ATTEMPTS = 3  # per session; the guessing limits that span sessions are credentials'
READ_CHUNK = 4096
WRITE_CHUNK = 64 * 1024

AUTH_FAILED = "-ERR [AUTH] Authentication failed"
AUTH_TEMPORARY = "-ERR [SYS/TEMP] Authentication could not be checked; try again later"
AUTH_THROTTLED = "-ERR [SYS/TEMP] Too many failed logins; try again later"
TEMPORARY = "-ERR [SYS/TEMP] Temporary failure; try again later"
WRONG_STATE = "-ERR Command not valid in this state"
UNKNOWN = "-ERR Unknown command"
NO_MESSAGE = "-ERR No such message"
CAPABILITIES = (
    "TOP",
    "UIDL",
    "USER",
    "SASL PLAIN",
    "RESP-CODES",
    "AUTH-RESP-CODE",
    "PIPELINING",
)
# One decimal message number: RFC 1939 section 3 (no sign, no spaces; we cap the digits).
_NUMBER = re.compile(r"[0-9]{1,9}")


class _Closed(Exception):  # noqa: N818 - control flow: the session ends without UPDATE
    pass


class _TooLong(Exception):  # noqa: N818
    pass


@dataclass
class Limits:
    idle_timeout: float
    command_limit: int
    # The idle timeout while nobody has logged in (shorter on a nearly full listener).
    unauthenticated_timeout: Callable[[float], float] = lambda normal: normal


@dataclass
class Session:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    client: str
    limits: Limits
    # Retrievals the listener's sessions may render at once: each holds a message in memory.
    retrievals: asyncio.Semaphore
    hostname: str = "localhost"
    user_name: str | None = None  # from USER, until PASS
    user: AbstractBaseUser | None = None
    drop: Maildrop | None = None
    deleted: set[int] = field(default_factory=set)  # message numbers marked by DELE
    commands: int = 0
    logins: int = 0
    _buffer: bytearray = field(default_factory=bytearray)

    # --- reading and writing -------------------------------------------------------------
    def _timeout(self) -> float:
        if self.drop is None:
            return self.limits.unauthenticated_timeout(self.limits.idle_timeout)
        return self.limits.idle_timeout

    async def _line(self, limit: int) -> str:
        """The next line without its line end; :class:`_TooLong` for a line over ``limit``
        octets (it is read to its end and dropped, so its tail is never a command)."""
        too_long = False
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                if too_long or len(line) > limit:
                    raise _TooLong
                return line.rstrip(b"\r\n").decode("utf-8", "replace")
            if len(self._buffer) > limit:
                too_long = True
                self._buffer.clear()
            try:
                chunk = await asyncio.wait_for(self.reader.read(READ_CHUNK), self._timeout())
            except TimeoutError:
                await self._send("-ERR [SYS/TEMP] Idle timeout; closing")
                raise _Closed from None
            if not chunk:
                raise _Closed
            self._buffer.extend(chunk)

    async def _write(self, data: bytes) -> None:
        self.writer.write(data)
        try:
            # A client that stops reading would hold the session (and a rendered message)
            # for ever: it gets as long to take the bytes as it may stay idle.
            await asyncio.wait_for(self.writer.drain(), self.limits.idle_timeout)
        except (TimeoutError, ConnectionError):
            raise _Closed from None

    async def _send(self, line: str) -> None:
        await self._write(line.encode("utf-8", "replace") + b"\r\n")

    async def _send_multiline(self, status: str, data: bytes) -> None:
        """``status``, then ``data`` (CRLF lines) byte-stuffed, then the terminating dot
        (RFC 1939 section 3)."""
        await self._write(status.encode("ascii") + b"\r\n")
        stuffed = re.sub(rb"(?m)^\.", b"..", data) if data else b""
        for start in range(0, len(stuffed), WRITE_CHUNK):
            await self._write(stuffed[start : start + WRITE_CHUNK])
        await self._write(b".\r\n")

    # --- the session ---------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self._send(f"+OK {self.hostname} POP3 server ready")
            while True:
                try:
                    line = await self._line(MAX_COMMAND_LINE)
                except _TooLong:
                    line = None
                self.commands += 1
                if self.commands > self.limits.command_limit:
                    await self._send("-ERR [SYS/PERM] Too many commands; closing")
                    return
                if line is None:
                    await self._send("-ERR Line too long")
                    continue
                if await self._dispatch(line):
                    return
        except _Closed:
            return

    async def _dispatch(self, line: str) -> bool:
        """Answer one command line; True when the session is over."""
        name, _, argument = line.partition(" ")
        name = name.upper()
        if self.drop is None:
            handlers: dict[str, Callable[[str], Awaitable[bool | None]]] = {
                "CAPA": self._capa,
                "USER": self._user,
                "PASS": self._pass,
                "AUTH": self._auth,
                "QUIT": self._quit_unauthenticated,
            }
        else:
            handlers = {
                "CAPA": self._capa,
                "STAT": self._stat,
                "LIST": self._list,
                "UIDL": self._uidl,
                "RETR": self._retr,
                "TOP": self._top,
                "DELE": self._dele,
                "RSET": self._rset,
                "NOOP": self._noop,
                "QUIT": self._quit,
            }
        handler = handlers.get(name)
        if handler is None:
            known = {
                "CAPA",
                "USER",
                "PASS",
                "AUTH",
                "QUIT",
                "STAT",
                "LIST",
                "UIDL",
                "RETR",
                "TOP",
                "DELE",
                "RSET",
                "NOOP",
            }
            await self._send(WRONG_STATE if name in known else UNKNOWN)
            return False
        return bool(await handler(argument))

    async def _capa(self, argument: str) -> None:
        await self._send_multiline(
            "+OK Capability list follows", "".join(f"{c}\r\n" for c in CAPABILITIES).encode()
        )

    async def _quit_unauthenticated(self, argument: str) -> bool:
        await self._send(f"+OK {self.hostname} POP3 server signing off")
        return True

    # --- AUTHORIZATION -------------------------------------------------------------------
    async def _user(self, argument: str) -> None:
        if not argument.strip():
            await self._send("-ERR USER needs a name")
            return
        # Always +OK: whether the name exists is told by nothing before the password.
        self.user_name = argument
        await self._send("+OK Send PASS")

    async def _pass(self, argument: str) -> bool:
        if self.user_name is None:
            await self._send("-ERR USER first")
            return False
        login, self.user_name = self.user_name, None
        # RFC 1939 section 7: the whole rest of the line is the password (it may hold spaces).
        return await self._login(login, argument, mailbox=login)

    async def _auth(self, argument: str) -> bool:
        mechanism, _, initial = argument.strip().partition(" ")
        if mechanism.upper() != "PLAIN":
            await self._send("-ERR [AUTH] Unsupported mechanism; PLAIN is offered")
            return False
        if initial:
            response = initial.strip()
        else:
            await self._send("+ ")
            try:
                response = (await self._line(MAX_SASL_LINE)).strip()
            except _TooLong:
                await self._send("-ERR [AUTH] Response too long")
                return False
        if response == "*":  # RFC 5034 section 4: the client cancels
            await self._send("-ERR [AUTH] Authentication cancelled")
            return False
        try:
            decoded = base64.b64decode(response.encode("ascii"), validate=True)
            authzid, login, password = (part.decode("utf-8") for part in decoded.split(b"\x00"))
        except (binascii.Error, UnicodeError, ValueError):
            await self._send("-ERR [AUTH] Malformed PLAIN response (RFC 4616)")
            return False
        return await self._login(login, password, mailbox=authzid or login)

    async def _login(self, login: str, password: str, *, mailbox: str) -> bool:
        from hisp.smtp import credentials

        self.logins += 1
        try:
            outcome = await in_thread(credentials.check, login, password, client=self.client)
            drop = None
            if outcome.user is not None:
                drop = await in_thread(maildrop.open_maildrop, outcome.user, mailbox)
        except Exception:
            # Our failure (the database or the cache away): the client is told to retry
            # rather than that its password is wrong. Neither the trace nor the query holds
            # a credential.
            log.exception("POP3 login from %s could not be checked", self.client)
            await self._send(AUTH_TEMPORARY)
            return await self._after_failed_login()
        if outcome.throttled:
            log.warning("POP3 login throttled for %s", self.client)
            await self._send(AUTH_THROTTLED)
            return await self._after_failed_login()
        if outcome.user is None or drop is None:
            # A wrong password and a mailbox the user may not open read the same: which
            # accounts and mailboxes exist is nobody's business before they are in.
            log.info("POP3 login failed from %s", self.client)
            await self._send(AUTH_FAILED)
            return await self._after_failed_login()
        self.user, self.drop = outcome.user, drop
        log.info(
            "POP3 login for user %s to mailbox %s from %s (%d messages)",
            outcome.user.pk,
            drop.address_id,
            self.client,
            len(drop.items),
        )
        await self._send(f"+OK Maildrop has {len(drop.items)} messages")
        return False

    async def _after_failed_login(self) -> bool:
        if self.logins >= LOGIN_ATTEMPTS:
            await self._send("-ERR [AUTH] Too many failed logins; closing")
            return True
        return False

    # --- TRANSACTION ---------------------------------------------------------------------
    def _item(self, argument: str) -> tuple[int, Item] | None:
        assert self.drop is not None
        text = argument.strip()
        if not _NUMBER.fullmatch(text):
            return None
        number = int(text)
        if not 1 <= number <= len(self.drop.items) or number in self.deleted:
            return None
        return number, self.drop.items[number - 1]

    def _live(self) -> list[tuple[int, Item]]:
        assert self.drop is not None
        return [
            (number, item)
            for number, item in enumerate(self.drop.items, start=1)
            if number not in self.deleted
        ]

    async def _stat(self, argument: str) -> None:
        live = self._live()
        await self._send(f"+OK {len(live)} {sum(item.size for _, item in live)}")

    async def _list(self, argument: str) -> None:
        if argument.strip():
            found = self._item(argument)
            if found is None:
                await self._send(NO_MESSAGE)
                return
            await self._send(f"+OK {found[0]} {found[1].size}")
            return
        live = self._live()
        listing = "".join(f"{number} {item.size}\r\n" for number, item in live)
        await self._send_multiline(f"+OK {len(live)} messages", listing.encode())

    async def _uidl(self, argument: str) -> None:
        if argument.strip():
            found = self._item(argument)
            if found is None:
                await self._send(NO_MESSAGE)
                return
            await self._send(f"+OK {found[0]} {found[1].entry}")
            return
        listing = "".join(f"{number} {item.entry}\r\n" for number, item in self._live())
        await self._send_multiline("+OK Unique-id listing follows", listing.encode())

    async def _fetch(self, item: Item, command: str) -> bytes | None:
        assert self.drop is not None and self.user is not None
        try:
            return await in_thread(
                maildrop.retrieve,
                self.drop,
                item,
                user=self.user,
                client=self.client,
                command=command,
            )
        except Gone:
            await self._send("-ERR Message no longer available")
        except Exception:
            log.exception("POP3 %s of entry %s failed", command, item.entry)
            await self._send(TEMPORARY)
        return None

    async def _retr(self, argument: str) -> None:
        found = self._item(argument)
        if found is None:
            await self._send(NO_MESSAGE)
            return
        async with self.retrievals:
            data = await self._fetch(found[1], "RETR")
            if data is not None:
                await self._send_multiline(f"+OK {len(data)} octets", data)

    async def _top(self, argument: str) -> None:
        number, _, lines = argument.strip().partition(" ")
        found = self._item(number)
        if found is None:
            await self._send(NO_MESSAGE)
            return
        if not _NUMBER.fullmatch(lines.strip()):
            await self._send("-ERR TOP needs a message number and a number of lines")
            return
        from hisp.pop3.render import top

        async with self.retrievals:
            data = await self._fetch(found[1], "TOP")
            if data is not None:
                await self._send_multiline(
                    "+OK Top of message follows", top(data, int(lines.strip()))
                )

    async def _dele(self, argument: str) -> None:
        assert self.drop is not None
        found = self._item(argument)
        if found is None:
            await self._send(NO_MESSAGE)
            return
        if not self.drop.may_change:
            # As the webmail refuses a read-only delegate's delete.
            await self._send("-ERR Read-only access to this mailbox")
            return
        self.deleted.add(found[0])
        await self._send(f"+OK Message {found[0]} deleted")

    async def _rset(self, argument: str) -> None:
        self.deleted.clear()
        await self._stat(argument)

    async def _noop(self, argument: str) -> None:
        await self._send("+OK")

    async def _quit(self, argument: str) -> bool:
        """The UPDATE state (RFC 1939 section 6): only now do deletions take effect."""
        assert self.drop is not None and self.user is not None
        marked = [self.drop.items[number - 1] for number in sorted(self.deleted)]
        try:
            left = await in_thread(
                maildrop.trash, self.drop, marked, user=self.user, client=self.client
            )
        except Exception:
            log.exception("POP3 QUIT could not apply the deletions for %s", self.client)
            await self._send("-ERR [SYS/TEMP] Deleted messages not removed; try again later")
            return True
        if left:
            await self._send(f"-ERR {left} deleted messages not removed")
        else:
            await self._send(f"+OK {self.hostname} POP3 server signing off")
        return True
