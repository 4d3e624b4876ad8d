"""Handing a protected message to the destination's SMTP server.

Destination: the ``Route`` table first, else MX records (RFC 5321 section 5.1) looked up through
``HISP_DNS_SERVERS``, falling back to the domain's own address when it has no MX. A partner's
DNS never aims egress at an internal address (``_internal``): only a Route can. STARTTLS is
used whenever offered (RFC 3207) and required when the route says so; opportunistic TLS that
fails goes on in the clear, required TLS never does. The certificate is not verified: Direct's
confidentiality and authenticity come from S/MIME, and many HISPs present self-signed transport
certificates. docs/mail-flow.md has the table of what each partner behaviour leads to.

Connections are reused (see ``REUSE``): a session that ended cleanly waits, idle, in a
per-process cache for the next delivery to the same hop, and an RSET proves it still works
before it carries anything, so a server that has hung up meanwhile costs a reconnect, never a
duplicate. After a forked child starts (Celery prefork), it never touches the parent's sessions.

One attempt (the lookup, every hop, every transaction) ends by a deadline well inside the claim
lease (``attempt_deadline``): once the lease runs out the sweeper re-queues the delivery and
another worker sends it, so an attempt still talking to the remote then would deliver the
message twice. Past the deadline no hop is started, and every socket operation (connect, each
command, each write of DATA, each read of a reply) waits at most the time left; an attempt cut
short ends as a temporary failure, for the usual retry. Name lookups too: every host name (an
exchanger's, a route's) becomes addresses before any connection, through HISP_DNS_SERVERS with
the time left, else through the system resolver on a thread waited for only until the deadline;
smtplib is handed addresses alone, so it never starts a lookup nobody can bound.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import enum
import functools
import io
import ipaddress
import logging
import math
import os
import random
import re
import smtplib
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import dns.exception
import dns.resolver
from django.conf import settings

from agent.http import is_public
from hisp.mailtext import printable
from hisp.services import routes

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

log = logging.getLogger(__name__)

# RFC 5321 section 4.5.3.1.8: a server must accept at least 100 recipients per transaction.
MAX_RECIPIENTS = 100
TIMEOUT = 60.0  # seconds per SMTP command; RFC 5321 4.5.3.2 allows longer, workers should not wait
_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\b")
# The share of HISP_CLAIM_LEASE one attempt may take: the rest is margin for recording the
# outcome (and a QUIT) before the sweeper may hand the delivery to another worker.
ATTEMPT_SHARE = 0.5
CHUNK = 64 * 1024  # DATA is written in pieces of this size, each bounded by the time left
# RFC 5321 section 4.5.3.2.6: the reply to the final dot is waited for 10 minutes, not a command's
# TIMEOUT: the server may be checking the message, and a timeout after it took the message
# means a second copy at the next attempt. Still never past the attempt's deadline.
END_OF_DATA_TIMEOUT = 600.0
MAX_REPLY = 64 * 1024  # bytes of one reply, all its lines: an EHLO reply takes well under 1 KB
LATE = "attempt exceeded its time limit"
# Starts the detail of an outcome this HISP decided on its own (a server's reply starts with
# its code): the sender's DSN says so instead of "the destination refused it".
NOT_SENT = "not sent: "


class Result(enum.Enum):
    SENT = "sent"
    TEMPORARY = "temporary"  # 4xx, connection problems: retry later
    PERMANENT = "permanent"  # 5xx: fail now


@dataclass(frozen=True)
class Outcome:
    result: Result
    detail: str  # the server's reply or what went wrong
    status: str  # RFC 3463 status for a DSN
    # The mail exchanger whose reply this is (RFC 3464 Remote-MTA); "" when none answered.
    remote: str = ""

    def __post_init__(self) -> None:
        # A remote's words end up in the delivery history, logs, DSNs and the console: a NUL
        # there (refused by PostgreSQL) would make recording the outcome fail after the message
        # had left, and the delivery would be sent again. Every outcome, whatever built it:
        # exception texts can carry the remote's words too.
        object.__setattr__(self, "detail", printable(self.detail))

    @classmethod
    def from_reply(cls, code: int, text: bytes | str) -> Outcome:
        message = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        message = " ".join(message.split())[:400]
        match = _ENHANCED.match(message)
        if 200 <= code < 300:
            return cls(Result.SENT, f"{code} {message}", "2.0.0")
        if 500 <= code < 600:
            return cls(Result.PERMANENT, f"{code} {message}", match.group(1) if match else "5.0.0")
        # 4xx, and codes no SMTP server may send (-1: unreadable): not a verdict on the mail.
        status = match.group(1) if match and code // 100 == 4 else "4.0.0"
        return cls(Result.TEMPORARY, f"{code} {message}", status)

    @classmethod
    def from_refusal(cls, code: int, text: bytes | str) -> Outcome:
        """The reply to a command that was not answered as it succeeds (MAIL not 250, RCPT
        not 250/251, DATA not 354): a 2xx there (a 252, say) is out of protocol and must not
        count as sent, since the message never went out. Such a reply is temporary."""
        outcome = cls.from_reply(code, text)
        if outcome.result is Result.SENT:
            return cls(Result.TEMPORARY, outcome.detail, "4.5.0")
        return outcome


@dataclass(frozen=True)
class Hop:
    host: str  # what to connect to: a route's host, or an address of a mail exchanger
    port: int
    require_tls: bool = False
    name: str = ""  # the mail exchanger's name, when ``host`` is one of its addresses

# RFC 5321 section 5.1: every address of every MX host in turn, up to a bound (a domain with
# many MX hosts must not hold a delivery for a long time; later attempts try again).
MAX_HOPS = 10


class NoSuchDomain(Exception):
    pass


class NullMX(NoSuchDomain):
    """RFC 7505: the domain publishes a null MX ("0 ."), so it accepts no mail at all."""


class OnlyInternal(Exception):
    """Every exchanger the partner's DNS names has only internal addresses (see ``_internal``)."""


class NoAddress(dns.exception.DNSException):
    """A destination host name that neither our DNS servers nor the system resolver know:
    temporary, like any lookup failure (a DNS change may be on its way)."""


class TimeLimitExceeded(TimeoutError):
    """The attempt's deadline passed before a socket operation could start."""


def attempt_deadline() -> float:
    """When an attempt starting now must be over, on the ``time.monotonic()`` clock."""
    lease: float = settings.HISP_CLAIM_LEASE.total_seconds()
    return time.monotonic() + lease * ATTEMPT_SHARE


def _late(detail: str) -> Outcome:
    # RFC 3463 X.4.2: the connection could not complete the transaction (time-out).
    return Outcome(Result.TEMPORARY, detail[:400], "4.4.2")


def _unresolved(domain: str, exc: dns.exception.DNSException, deadline: float) -> Outcome:
    # RFC 3463 X.4.3: a directory (DNS) failure leaves no route for now; retried as any 4xx.
    why = LATE if time.monotonic() >= deadline else str(exc)
    detail = f"lookup of {domain}'s mail servers failed: {why}"
    return Outcome(Result.TEMPORARY, detail[:400], "4.4.3")


def _resolver() -> dns.resolver.Resolver:
    servers: Sequence[str] = settings.HISP_DNS_SERVERS
    if not servers:
        return dns.resolver.Resolver()
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = []
    for entry in servers:
        host, port = entry, 53
        if entry.count(":") == 1 or entry.startswith("["):
            host, _, port_text = entry.rpartition(":")
            host, port = host.strip("[]"), int(port_text)
        resolver.nameservers.append(host)
        resolver.nameserver_ports[host] = port
    resolver.lifetime = 10.0
    return resolver


def hops(domain: str, *, deadline: float = math.inf) -> list[Hop]:
    """Where to deliver mail for ``domain``, most preferred first. Every hop's ``host`` is an
    address, never a name: a name looked up later, at connect time, would wait on the system
    resolver with no time limit. A lookup that would start after ``deadline`` raises
    ``dns.exception.Timeout``; each ends by it. A destination with no address anywhere raises
    ``NoAddress``."""
    domain = domain.lower().rstrip(".")
    route = routes.lookup(domain)  # remembered per process, see hisp.agent_env.cached_rows
    if route is not None and route.host:
        return _route_hops(route.host, route.port, route.require_tls, deadline)
    found = _mx_hops(domain, deadline)
    if route is not None and route.require_tls:  # an MX route's policy binds every exchanger
        found = [dataclasses.replace(hop, require_tls=True) for hop in found]
    return found


def _route_hops(host: str, port: int, require_tls: bool, deadline: float) -> list[Hop]:
    if _is_address(host):
        return [Hop(host, port, require_tls)]
    found = [
        Hop(address, port, require_tls, name=host)
        for address in _addresses(_resolver(), host, deadline)
    ]
    if not found:
        raise NoAddress(f"no address for {host}")
    return found[:MAX_HOPS]


def _mx_hops(domain: str, deadline: float) -> list[Hop]:
    resolver = _resolver()
    try:
        answer = resolver.resolve(domain, "MX", lifetime=_lifetime(resolver, deadline))
    except dns.resolver.NXDOMAIN:
        raise NoSuchDomain(domain) from None
    except dns.resolver.NoAnswer:
        names = [domain]  # RFC 5321 5.1: the implicit MX
    else:
        # RFC 5321 section 5.1: exchangers of equal preference in random order, so a partner
        # spreading its load over several of them gets it spread (the sort is stable).
        records = random.sample(list(answer), len(answer))
        records.sort(key=lambda r: r.preference)
        # RFC 7505 null MX: the root as exchanger. Alone, the domain accepts no mail; next to
        # real exchangers (a misconfiguration the RFC forbids) it names no host to try.
        names = [n for r in records if (n := str(r.exchange).rstrip("."))]
        if not names:
            raise NullMX(domain)
    found: list[Hop] = []
    internal: list[str] = []
    unresolved = False
    for index, name in enumerate(names):
        if len(found) + len(internal) >= MAX_HOPS:
            break  # later names' addresses would be cut off anyway: do not wait for them
        try:
            addresses = _addresses(resolver, name, _share(deadline, len(names) - index))
        except dns.exception.Timeout:
            if time.monotonic() >= deadline:
                raise
            # This exchanger's name hung (a system-resolver lookup cannot be cut short): the
            # next ones, in preference order, may still be reachable in the time left.
            log.info("no address for %s in its share of the attempt; trying the next", name)
            unresolved = True
            continue
        internal += [a for a in addresses if _internal(a)]
        found += [Hop(a, 25, name=name) for a in addresses if not _internal(a)]
    if not found and internal and not unresolved:
        # Only when every exchanger was looked up: one that timed out may have a public
        # address, and failing the message for good on a guess would lose it.
        raise OnlyInternal(
            f"{domain}'s mail servers have only internal addresses, which this HISP does not "
            "connect to for a partner without a route"
        )
    if not found:
        raise NoAddress(f"no address for {', '.join(names)}")
    return found[:MAX_HOPS]


def _internal(address: str) -> bool:
    """An address a partner's DNS must not aim our egress at: loopback (our own listener: a
    mail loop), private, link-local (cloud metadata services), unspecified, multicast or
    reserved. Exim's default router ignores such MX targets (ignore_target_hosts); a partner
    really on an internal network gets a Route with its host, which is the operator's word.
    HISP_EGRESS_INTERNAL_MX allows them all (a closed test network)."""
    return not settings.HISP_EGRESS_INTERNAL_MX and not is_public(address)


# The longest one exchanger's address lookup may take while others wait behind it: what a
# system resolver takes before it gives up on a server (resolv.conf's timeout x attempts).
EXCHANGER_LOOKUP_LIMIT = 30.0


def _share(deadline: float, names_left: int) -> float:
    """When the lookup of the next of ``names_left`` exchanger names must end: a fair share
    of the time left (the last name gets all of it), so that one hung name does not use up
    the attempt its successors could have served."""
    if names_left <= 1 or deadline == math.inf:
        return deadline
    now = time.monotonic()
    return min(deadline, now + min(EXCHANGER_LOOKUP_LIMIT, (deadline - now) / names_left))


def _lifetime(resolver: dns.resolver.Resolver, deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise dns.exception.Timeout
    return min(resolver.lifetime, left)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _addresses(resolver: dns.resolver.Resolver, name: str, deadline: float) -> list[str]:
    """The addresses of ``name``, IPv4 first: from the same DNS servers as the MX records
    (HISP_DNS_SERVERS), else from the system resolver (names only /etc/hosts knows)."""
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        lifetime = _lifetime(resolver, deadline)  # outside the try: past the deadline, stop
        try:
            answer = resolver.resolve(name, rdtype, lifetime=lifetime)
            found += [r.address for r in answer]
        except dns.exception.DNSException:
            continue
    return found or _system_addresses(name, deadline)


# The system resolver (getaddrinfo: /etc/hosts, nsswitch, /etc/resolv.conf) takes no time
# limit, and a thread blocked in it cannot be stopped. So it runs on a thread of its own that
# the attempt waits for only until its deadline; a hung lookup then costs a thread until the
# C library gives up, and this bounds how many such threads can pile up (past it, lookups wait
# for a slot, again only until the deadline).
MAX_SYSTEM_LOOKUPS = 8
_system_lookups = threading.BoundedSemaphore(MAX_SYSTEM_LOOKUPS)


def _fresh_lookup_slots() -> None:
    """In a forked child: the parent's lookup threads are not here to give their slots back."""
    global _system_lookups
    _system_lookups = threading.BoundedSemaphore(MAX_SYSTEM_LOOKUPS)


os.register_at_fork(after_in_child=_fresh_lookup_slots)


def _wait(deadline: float) -> float | None:
    """What to pass as a thread wait's ``timeout`` to end by ``deadline`` (None: no limit)."""
    if deadline == math.inf:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise dns.exception.Timeout
    return left


def _system_addresses(name: str, deadline: float) -> list[str]:
    """``name``'s addresses from the system resolver, IPv4 first; none when it knows none.
    Raises ``dns.exception.Timeout`` when the answer is not there by ``deadline``."""
    if not _system_lookups.acquire(timeout=_wait(deadline)):
        raise dns.exception.Timeout(f"no system resolver slot free for {name} in time")
    answer: Future[list[str]] = Future()
    thread = threading.Thread(
        target=_lookup_on_system, args=(name, answer), name="egress-getaddrinfo", daemon=True
    )
    try:
        thread.start()
    except BaseException:
        _system_lookups.release()
        raise
    try:
        return answer.result(timeout=_wait(deadline))
    except TimeoutError:
        log.info("the system resolver gave no answer for %s in time", name)
        raise dns.exception.Timeout(
            f"the system resolver did not answer for {name} in time"
        ) from None


def _lookup_on_system(name: str, answer: Future[list[str]]) -> None:
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        found = [str(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]
        ipv4 = [a for a in found if ":" not in a]
        answer.set_result(list(dict.fromkeys(ipv4 + [a for a in found if ":" in a])))
    except OSError:  # gaierror: no such name, or the resolver failed: no address from here
        answer.set_result([])
    except BaseException as exc:
        answer.set_exception(exc)
    finally:
        _system_lookups.release()


def send(*, wire: bytes, mail_from: str, recipient: str, timeout: float = TIMEOUT) -> Outcome:
    """Deliver ``wire`` to one recipient (see :func:`send_batch`)."""
    return send_batch(wire=wire, mail_from=mail_from, recipients=[recipient], timeout=timeout)[
        recipient
    ]


def send_batch(
    *,
    wire: bytes,
    mail_from: str,
    recipients: Sequence[str],
    timeout: float = TIMEOUT,
    deadline: float | None = None,
) -> dict[str, Outcome]:
    """Deliver ``wire`` to several recipients; one outcome per recipient.

    Recipients whose domains resolve to the same destination share one SMTP transaction (one
    MAIL, a RCPT each, one DATA; RFC 5321 section 3.3). Each RCPT reply counts for its own
    recipient only: a 550 fails that one, a 4xx defers that one, and the others still get the
    message. ``recipients`` must all be able to receive the same bytes (one protection).
    The whole call is one attempt, over by ``deadline`` (``time.monotonic()``; the caller's
    claim decides it), by default ``attempt_deadline()`` as it stands at the start.
    """
    if deadline is None:
        deadline = attempt_deadline()
    unique = list(dict.fromkeys(recipients))
    outcomes: dict[str, Outcome] = {}
    routes: dict[tuple[Hop, ...], list[str]] = {}
    by_domain: dict[str, list[str]] = {}
    for recipient in unique:
        by_domain.setdefault(recipient.rpartition("@")[2].lower().rstrip("."), []).append(recipient)
    for domain, group in by_domain.items():
        try:
            destinations = hops(domain, deadline=deadline)
        except NullMX:
            # RFC 7505 sections 3 and 4.3: a permanent failure at once, never retried.
            failed = Outcome(Result.PERMANENT, f"{domain} accepts no mail (null MX)", "5.1.10")
            outcomes.update(dict.fromkeys(group, failed))
            continue
        except NoSuchDomain:
            failed = Outcome(Result.PERMANENT, f"no mail servers for {domain}", "5.1.2")
            outcomes.update(dict.fromkeys(group, failed))
            continue
        except OnlyInternal as exc:
            # RFC 3463 X.4.4, unable to route: as Exim bounces MX records it must ignore.
            refused = Outcome(Result.PERMANENT, NOT_SENT + str(exc), "5.4.4")
            outcomes.update(dict.fromkeys(group, refused))
            continue
        except dns.exception.DNSException as exc:
            outcomes.update(dict.fromkeys(group, _unresolved(domain, exc, deadline)))
            continue
        routes.setdefault(tuple(destinations), []).extend(group)
    for route, group in routes.items():
        outcomes.update(
            send_via(
                route,
                wire=wire,
                mail_from=mail_from,
                recipients=group,
                timeout=timeout,
                deadline=deadline,
            )
        )
    return {recipient: outcomes[recipient] for recipient in unique}


def send_via(
    destinations: Sequence[Hop],
    *,
    wire: bytes,
    mail_from: str,
    recipients: Sequence[str],
    timeout: float = TIMEOUT,
    deadline: float | None = None,
) -> dict[str, Outcome]:
    """Try each hop in order for the recipients that are still failing temporarily there; a
    5xx from any hop is final for its recipient (RFC 5321 section 5.1). Hops carry addresses
    (see :func:`hops`): a name there is refused, never looked up. No hop is started
    after ``deadline`` (default: ``attempt_deadline()`` from now); the recipients still
    pending then fail temporarily."""
    if deadline is None:
        deadline = attempt_deadline()
    outcomes = {r: Outcome(Result.TEMPORARY, "no destination", "4.4.1") for r in recipients}
    pending = list(recipients)
    for tried, hop in enumerate(destinations):
        if time.monotonic() >= deadline:
            untried = len(destinations) - tried
            log.info("delivery attempt out of time with %d hosts not tried", untried)
            for recipient in pending:
                last = outcomes[recipient].detail
                outcomes[recipient] = _late(f"{LATE}; hosts not tried: {untried} (last: {last})")
            break
        outcomes.update(
            _attempt(
                hop,
                wire=wire,
                mail_from=mail_from,
                recipients=pending,
                timeout=timeout,
                deadline=deadline,
            )
        )
        pending = [r for r in pending if outcomes[r].result is Result.TEMPORARY]
        if not pending:
            break
    return outcomes


@functools.cache
def _client_context() -> ssl.SSLContext:
    """One per process (an SSLContext is thread-safe). Not ``create_default_context()``: that
    loads the system CA store (some 45 ms of CPU each time) for certificates never verified."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # opportunistic TLS (see the module docstring)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class _Client(smtplib.SMTP):
    """An SMTP client whose every socket operation, the connect included, waits at most
    ``limit`` seconds and never past ``deadline`` (``time.monotonic()``). smtplib sets one
    timeout per socket, so without this a reply trickled a byte at a time, or one ``sendall``
    of a 25 MB DATA (its timeout bounds the whole call), could hold the attempt well past the
    claim lease."""

    def __init__(self, hop: Hop, *, limit: float, deadline: float) -> None:
        self.limit, self.deadline = limit, deadline
        self.message_sent = False  # within data(): the message is out, its reply is awaited
        self.reply_left = MAX_REPLY  # bytes the reply being read may still take
        super().__init__(
            hop.host, hop.port, local_hostname=settings.HISP_HOSTNAME, timeout=self.left()
        )
        # STARTTLS names the exchanger (SNI), not the address it was reached at: a server
        # with a certificate per name picks the right one.
        self._host = hop.name or hop.host

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        # ``host`` is an address (see hops()); AI_NUMERICHOST makes sure of it, so no name is
        # ever looked up here, where the deadline could not bound the lookup.
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return sock

    def left(self) -> float:
        """The timeout for the next socket operation."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeLimitExceeded(LATE)
        limit = max(self.limit, END_OF_DATA_TIMEOUT) if self.message_sent else self.limit
        return min(limit, left)

    def _arm(self) -> None:
        timeout = self.left()
        if self.sock is not None:
            self.sock.settimeout(timeout)

    def send(self, s: ReadableBuffer | str) -> None:
        data = s.encode(self.command_encoding) if isinstance(s, str) else memoryview(s)
        for start in range(0, max(len(data), 1), CHUNK):
            self._arm()
            super().send(data[start : start + CHUNK])
        # smtplib writes commands as str and only the message itself (in data()) as bytes.
        self.message_sent = not isinstance(s, str)

    def data(self, msg: ReadableBuffer | str) -> tuple[int, bytes]:
        try:
            return super().data(msg)
        finally:
            self.message_sent = False

    def getreply(self) -> tuple[int, bytes]:
        if self.file is None and self.sock is not None:
            # A new reader after connect and after STARTTLS (smtplib resets ``file`` then).
            self.file = io.BufferedReader(_Reader(self))
        # smtplib keeps every line of a reply until its last: a server that sends continuation
        # lines without end would fill this worker's memory until the deadline.
        self.reply_left = MAX_REPLY
        try:
            return super().getreply()
        except smtplib.SMTPResponseException as exc:
            # smtplib's own "500 Line too long." (a reply line over 8 KB; it has closed the
            # connection): the server said nothing of the sort, so not a permanent refusal but
            # a broken session, like any other protocol failure.
            raise smtplib.SMTPServerDisconnected(f"unreadable reply: {exc.smtp_error!r}") from exc


class _Reader(io.RawIOBase):
    """The client's replies, read with a timeout set afresh before every ``recv``."""

    def __init__(self, client: _Client) -> None:
        super().__init__()
        self.client = client

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        self.client._arm()
        sock = self.client.sock
        if sock is None:
            raise smtplib.SMTPServerDisconnected("not connected")
        if self.client.reply_left <= 0:
            raise smtplib.SMTPServerDisconnected(f"a reply longer than {MAX_REPLY} bytes")
        read = sock.recv_into(buffer)
        self.client.reply_left -= read
        return read


# Connection reuse, as Postfix's connection cache does: most mail (processed MDNs above all) goes
# to a few partner hosts, and every new connection costs a TCP handshake, banner, EHLO and often
# a TLS handshake on both sides. Per process; a session is used by one thread at a time.
REUSE = True  # False: one connection per delivery attempt, as before (tests compare the two)
IDLE_SECONDS = 30.0  # an idle session is closed after this (servers drop idle clients anyway)
MAX_TRANSACTIONS = 100  # then a fresh connection: bounds any per-session state on either side
PROBE_TIMEOUT = 10.0  # the RSET that checks an idle session: a live server answers at once
QUIT_TIMEOUT = 10.0  # closing politely must not hold a worker for a full command timeout

_Key = tuple[str, int, bool]  # host, port, TLS required: such routes only ever get TLS sessions


@dataclass(eq=False)
class _Session:
    client: _Client
    tls: bool
    pid: int = field(default_factory=os.getpid)
    transactions: int = 0
    idle_since: float = 0.0
    reusable: bool = True  # cleared by anything that leaves the session's state in doubt
    broken: bool = False  # a network or TLS error: close without even a QUIT
    downgraded: bool = False  # in the clear after this server's TLS handshake failed


class _Cache:
    """Idle sessions by destination. Checked out exclusively (popped under the lock), checked
    back in only when clean; a daemon thread closes the ones idle too long and exits when
    none are left."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: dict[_Key, list[_Session]] = {}
        self.reaper: threading.Thread | None = None
        self.wake = threading.Event()  # the reaper sleeps on this until ``due``
        self.due = 0.0
        self.live: weakref.WeakSet[_Session] = weakref.WeakSet()  # every open one, for fork

    def take(self, key: _Key, deadline: float) -> _Session | None:
        """The most recently used live session for ``key``, closing expired ones on the way
        (by ``deadline``: the attempt that takes one is waiting)."""
        expired: list[_Session] = []
        found = None
        with self.lock:
            sessions = self.idle.get(key, [])
            while sessions and found is None:
                session = sessions.pop()
                if _expired(session, time.monotonic()):
                    expired.append(session)
                else:
                    found = session
        for session in expired:
            session.client.deadline = deadline
            _quit(session)
        return found

    def put(self, key: _Key, session: _Session) -> None:
        session.idle_since = time.monotonic()
        with self.lock:
            self.idle.setdefault(key, []).append(session)
            if self.reaper is None:
                self.reaper = threading.Thread(target=self._reap, name="egress-reaper", daemon=True)
                self.reaper.start()
            elif session.idle_since + IDLE_SECONDS < self.due:
                self.wake.set()  # only when IDLE_SECONDS was lowered (tests)

    def take_expired(self, now: float) -> tuple[list[_Session], float | None]:
        """Removes and returns the expired sessions, and when the next one expires."""
        expired: list[_Session] = []
        due: float | None = None
        with self.lock:
            for key, sessions in list(self.idle.items()):
                keep = [s for s in sessions if not _expired(s, now)]
                expired.extend(s for s in sessions if _expired(s, now))
                if keep:
                    self.idle[key] = keep
                    first = min(s.idle_since for s in keep) + IDLE_SECONDS
                    due = first if due is None else min(due, first)
                else:
                    del self.idle[key]
            if due is None:
                self.reaper = None  # under the lock: put() starts a new one if needed
            else:
                self.due = due
            self.wake.clear()
        return expired, due

    def _reap(self) -> None:
        while True:
            expired, due = self.take_expired(time.monotonic())
            for session in expired:
                _quit(session)
            if due is None:
                return
            self.wake.wait(max(0.05, due - time.monotonic()))

    def take_all(self) -> list[_Session]:
        with self.lock:
            sessions = [s for group in self.idle.values() for s in group]
            self.idle.clear()
        return sessions


_cache = _Cache()


def _expired(session: _Session, now: float) -> bool:
    return now - session.idle_since > IDLE_SECONDS


def close_connections() -> None:
    """Close (QUIT) every idle cached session of this process."""
    for session in _cache.take_all():
        _quit(session)


def idle_connections() -> int:
    """How many sessions this process keeps open for reuse."""
    with _cache.lock:
        return sum(len(group) for group in _cache.idle.values())


def _forget_inherited() -> None:
    """In a forked child: the parent's sessions are the parent's. Closing our copies of their
    descriptors sends nothing (no QUIT, no TLS close_notify, no shutdown()), so the parent's
    connections carry on undisturbed; the child starts with an empty cache and a fresh lock."""
    global _cache
    inherited = list(_cache.live)
    _cache = _Cache()
    for session in inherited:
        with contextlib.suppress(OSError):
            session.client.close()


os.register_at_fork(after_in_child=_forget_inherited)
atexit.register(close_connections)


def _checkout(hop: Hop, timeout: float, deadline: float) -> _Session | Outcome:
    """A cached session that answers RSET, else a new one; or the reply that refused one.

    Nothing of this delivery has been sent when the probe fails, so opening a new connection
    then can never duplicate a message."""
    key = (hop.host, hop.port, hop.require_tls)
    while REUSE and (session := _cache.take(key, deadline)) is not None:
        session.client.limit, session.client.deadline = timeout, deadline
        try:
            if session.pid == os.getpid() and (session.tls or not hop.require_tls):
                if _alive(session, timeout):
                    return session
        except BaseException:
            _drop(session)
            raise
        _drop(session)
    return _connect(hop, timeout, deadline)


def _alive(session: _Session, timeout: float) -> bool:
    client = session.client
    if client.sock is None:
        return False
    try:
        client.limit = min(timeout, PROBE_TIMEOUT)
        code, _ = client.rset()
        client.limit = timeout
    except (OSError, smtplib.SMTPException) as exc:
        log.debug("cached session failed its probe: %s", type(exc).__name__)
        return False
    return code == 250


def _connect(
    hop: Hop, timeout: float, deadline: float, *, starttls: bool = True
) -> _Session | Outcome:
    """A new session, over TLS whenever the server offers STARTTLS (unless ``starttls`` is
    False: a retry in the clear after a failed handshake); or the reply that refused one."""
    where = f"{hop.name or hop.host}:{hop.port}"
    try:
        client = _Client(hop, limit=timeout, deadline=deadline)
    except smtplib.SMTPConnectError as exc:
        # A greeting other than 220 (a 554 "no service here") is this host's, not the
        # recipients': the next exchanger is tried, as Postfix does (smtp_skip_5xx_greeting).
        log.info("%s greeted with %s", where, exc.smtp_code)
        refused = Outcome.from_reply(exc.smtp_code, exc.smtp_error)
        return Outcome(Result.TEMPORARY, refused.detail, "4.4.1")
    session = _Session(client, tls=False)
    _cache.live.add(session)
    try:
        refused_hello = _hello(client)
        if refused_hello is not None:
            # Neither greeting taken: this host's trouble, not the recipients' (MAIL would get a
            # permanent 503): the next exchanger is tried, and this one again later.
            _quit(session)
            code, text = refused_hello
            return Outcome(Result.TEMPORARY,
                           f"{where} refused EHLO and HELO: "
                           f"{Outcome.from_reply(code, text).detail}", "4.4.1")
        if client.has_extn("starttls") and (starttls or hop.require_tls):
            return _starttls(hop, session, timeout, deadline)
        if hop.require_tls:
            _quit(session)
            return Outcome(
                Result.TEMPORARY, f"{where} does not offer STARTTLS (required)", "4.7.10"
            )
    except BaseException:
        _drop(session)
        raise
    return session


def _hello(client: _Client) -> tuple[int, bytes] | None:
    """EHLO, and HELO if the server does not know EHLO (RFC 5321 section 3.2); the last reply
    when neither was accepted (MAIL would then be refused as out of sequence)."""
    code, text = client.ehlo()
    if 200 <= code < 300:
        return None
    code, text = client.helo()
    return None if 200 <= code < 300 else (code, text)


def _starttls(hop: Hop, session: _Session, timeout: float, deadline: float) -> _Session | Outcome:
    """STARTTLS on a session whose server offers it. Opportunistic (the route does not require
    TLS; the message is S/MIME protected anyway): a refusal continues in the clear on the same
    session (RFC 3207 section 4) and a failed handshake on a new connection without STARTTLS,
    so a partner with a broken TLS setup still gets its mail. Required: never in the clear."""
    client = session.client
    where = f"{hop.name or hop.host}:{hop.port}"
    try:
        client.starttls(context=_client_context())
    except smtplib.SMTPResponseException as exc:
        refused = Outcome.from_reply(exc.smtp_code, exc.smtp_error).detail
        if hop.require_tls:
            _quit(session)
            return Outcome(Result.TEMPORARY, f"{where} refused STARTTLS (required): {refused}",
                           "4.7.10")
        log.info("%s refused STARTTLS (%s); going on in the clear", where, exc.smtp_code)
        return session
    except (ssl.SSLError, ConnectionError) as exc:
        if hop.require_tls:
            raise
        log.info("TLS handshake with %s failed (%s); trying again in the clear", where,
                 type(exc).__name__)
        _drop(session)
        clear = _connect(hop, timeout, deadline, starttls=False)
        if isinstance(clear, _Session):
            clear.downgraded = True
        return clear
    session.tls = True
    _hello(client)
    return session


def _reset(session: _Session) -> None:
    """RSET after a refused transaction; anything but 250 leaves the session in doubt."""
    if session.client.rset()[0] != 250:
        session.reusable = False


def _spoil(session: _Session | None, *, broken: bool) -> None:
    if session is not None:
        session.reusable = False
        session.broken = broken


def _checkin(hop: Hop, session: _Session, outcomes: Iterable[Outcome]) -> None:
    """Back to the cache after a clean attempt: every reply 2xx or 5xx. A 4xx (421 above all:
    the server is closing) or a network error means the session may be unusable or out of
    step, so it is closed instead."""
    clean = session.reusable and all(o.result is not Result.TEMPORARY for o in outcomes)
    if REUSE and clean and session.transactions < MAX_TRANSACTIONS:
        session.client.deadline = math.inf  # idle, it belongs to no attempt (QUIT by the reaper)
        _cache.put((hop.host, hop.port, hop.require_tls), session)
    elif session.broken:
        _drop(session)
    else:
        _quit(session)


def _quit(session: _Session) -> None:
    """Close politely: QUIT, then close, whatever the server says. Within an attempt, the
    QUIT too ends by its deadline (past it, the connection is just closed)."""
    client = session.client
    client.limit = QUIT_TIMEOUT
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        client.close()


def _drop(session: _Session) -> None:
    """Close without a word: the session is broken or out of step."""
    session.client.close()


def _attempt(
    hop: Hop,
    *,
    wire: bytes,
    mail_from: str,
    recipients: Sequence[str],
    timeout: float,
    deadline: float,
) -> dict[str, Outcome]:
    where = f"{hop.host}:{hop.port}" if not hop.name else f"{hop.name} ({hop.host}):{hop.port}"
    outcomes: dict[str, Outcome] = {}
    lost: Outcome | None = None  # the connection's own failure: no server answered it
    session: _Session | None = None
    try:
        opened = _checkout(hop, timeout, deadline)
        if isinstance(opened, Outcome):
            return dict.fromkeys(recipients, opened)
        session = opened
        pending = list(recipients)
        while pending:
            batch, rest = pending[:MAX_RECIPIENTS], pending[MAX_RECIPIENTS:]
            session.transactions += 1
            carried = _transaction(
                session, wire=wire, mail_from=mail_from, recipients=batch, outcomes=outcomes
            )
            pending = carried + rest
    except smtplib.SMTPResponseException as exc:
        _spoil(session, broken=False)
        failed = Outcome.from_refusal(exc.smtp_code, exc.smtp_error)
        outcomes.update({r: failed for r in recipients if r not in outcomes})
    except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
        _spoil(session, broken=True)
        log.info("delivery attempt to %s failed: %s", where, type(exc).__name__)
        lost = Outcome(Result.TEMPORARY, f"{where}: {type(exc).__name__}: {exc}"[:400], "4.4.1")
        if time.monotonic() >= deadline:  # the last wait was cut to the time left
            lost = _late(f"{where}: {LATE}")
        outcomes.update({r: lost for r in recipients if r not in outcomes})
    except BaseException:  # a task time limit, an interrupt: where the session stands is unknown
        _spoil(session, broken=True)
        raise
    finally:
        if session is not None:
            _checkin(hop, session, outcomes.values())
    # Every other outcome is a reply of this mail exchanger: a DSN names it (Remote-MTA).
    return {r: o if o is lost else dataclasses.replace(o, remote=hop.name or hop.host)
            for r, o in outcomes.items()}


def _transaction(
    session: _Session,
    *,
    wire: bytes,
    mail_from: str,
    recipients: Sequence[str],
    outcomes: dict[str, Outcome],
) -> list[str]:
    """One MAIL / RCPT... / DATA transaction. Records an outcome for every recipient it settles
    and returns those to carry into a new transaction: refused with ``452`` (too many
    recipients, RFC 5321 section 4.5.3.1.10) after others were accepted."""
    client = session.client
    refused = _too_big(client, len(wire))
    if refused is not None:
        outcomes.update(dict.fromkeys(recipients, refused))
        return []
    code, reply = client.mail(mail_from, _mail_options(client, len(wire)))
    if code != 250:
        refused = Outcome.from_refusal(code, reply)
        if session.downgraded and refused.result is Result.PERMANENT:
            # A server that insists on TLS ("530 5.7.0 Must issue a STARTTLS command first")
            # after a handshake that may have failed by chance: the next attempt tries TLS.
            refused = Outcome(Result.TEMPORARY, refused.detail, "4.7.10")
        outcomes.update(dict.fromkeys(recipients, refused))
        _reset(session)
        return []
    accepted: list[str] = []
    carried: list[str] = []
    for recipient in recipients:
        code, reply = client.rcpt(recipient)
        if code in (250, 251):
            accepted.append(recipient)
        elif code == 452 and accepted:
            carried.append(recipient)
        else:
            outcomes[recipient] = Outcome.from_refusal(code, reply)
    if not accepted:
        _reset(session)  # RFC 5321 section 3.3: no valid recipient, no DATA
        return []
    try:
        code, reply = client.data(wire)
    except smtplib.SMTPDataError as exc:  # DATA itself refused (not 354)
        refused = Outcome.from_refusal(exc.smtp_code, exc.smtp_error)
        outcomes.update(dict.fromkeys(accepted, refused))
        _reset(session)
        return carried
    outcomes.update(dict.fromkeys(accepted, Outcome.from_reply(code, reply)))
    return carried


def _too_big(client: _Client, size: int) -> Outcome | None:
    """RFC 1870 section 6.2: a message larger than the server's declared SIZE is not sent (it
    would be refused after the whole upload); a permanent failure, as Postfix reports it."""
    limit = _declared_size(client)
    if limit is None or size <= limit:
        return None
    return Outcome(
        Result.PERMANENT,
        f"message of {size} bytes exceeds {client._host}'s limit of {limit} bytes (SIZE)",
        "5.3.4",
    )


def _declared_size(client: _Client) -> int | None:
    """The SIZE limit the server declared after EHLO; None for none or 0 (no fixed limit)."""
    value = client.esmtp_features.get("size", "").strip()
    if not value.isdigit() or not value.isascii():
        return None
    return int(value) or None


def _mail_options(client: _Client, size: int) -> list[str]:
    # RFC 1870 section 6.1: the size lets the server refuse before the upload, not after it.
    return [f"SIZE={size}"] if client.has_extn("size") else []
