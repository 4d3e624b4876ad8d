"""The authoritative DNS server: asyncio UDP and TCP on one port, answers from a zone snapshot
that follows the database (issue, renewal, revocation) without a restart.

The event loop never touches the database: ``ZoneSource`` runs its queries in one worker
thread. At most every ``recheck_after`` seconds it asks for the cheap version fingerprint and
rebuilds the zones only when that changed (or when a published certificate expired).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import cast

from django.conf import settings
from django.db import close_old_connections, connections
from django.utils import timezone

from hisp.dns import records
from hisp.dns.ratelimit import ResponseRateLimiter, Verdict
from hisp.dns.records import Snapshot
from hisp.dns.responder import MAX_TCP_MESSAGE, respond, truncated_reply

logger = logging.getLogger(__name__)

TCP_IDLE_TIMEOUT = 10.0  # RFC 7766 6.2.3: servers may close idle connections after seconds
MAX_TCP_CONNECTIONS = 256
# RFC 7766 6.2.2: one client must not take every slot (it only needs to send a query every few
# seconds on each connection to keep them), or partners' resolvers cannot fetch the answers too
# large for UDP (certificates in rollover) over TCP.
MAX_TCP_PER_CLIENT = 32
MAX_UDP_IN_FLIGHT = 1024  # beyond this, datagrams are dropped (clients retry)
MAX_SNAPSHOT_AGE = 60.0  # rebuild at least this often, whatever the version says


def configured_rate_limiter() -> ResponseRateLimiter:
    """The UDP response-rate limiter the HISP_DNS_RATE_... settings describe (checked when the
    settings are read, so a bad value stops the start naming its variable)."""
    return ResponseRateLimiter(
        rate=settings.HISP_DNS_RATE_LIMIT,
        burst=settings.HISP_DNS_RATE_BURST,
        slip=settings.HISP_DNS_RATE_SLIP,
        max_networks=settings.HISP_DNS_RATE_NETWORKS,
    )


class ZoneSource:
    """The current ``Snapshot``; database work happens in a dedicated thread."""

    def __init__(self, *, recheck_after: float = 1.0) -> None:
        self.recheck_after = recheck_after
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hisp-dns-db")
        self._snapshot: Snapshot | None = None
        self._checked = float("-inf")
        self._built = float("-inf")
        self._serial = 0
        self._lock = asyncio.Lock()
        self.last_error: str | None = None  # why the last load failed, for the operator

    async def get(self) -> Snapshot | None:
        """The zones, at most ``recheck_after`` seconds stale; None when never loaded."""
        if time.monotonic() - self._checked < self.recheck_after:
            return self._snapshot
        async with self._lock:
            if time.monotonic() - self._checked >= self.recheck_after:
                loop = asyncio.get_running_loop()
                self._snapshot = await loop.run_in_executor(self._executor, self._refresh)
                self._checked = time.monotonic()
        return self._snapshot

    def close(self) -> None:
        # The worker thread's database connection is closed by that thread.
        self._executor.submit(connections.close_all)
        self._executor.shutdown(wait=True)

    def _refresh(self) -> Snapshot | None:
        """In the worker thread: the snapshot to use now (the old one if nothing changed)."""
        current = self._snapshot
        close_old_connections()  # honour CONN_MAX_AGE and drop connections that went away
        try:
            stamp = records.version()
            now = timezone.now()
            if (
                current is not None
                and current.version == stamp
                and (current.expires is None or now < current.expires)
                and time.monotonic() - self._built < MAX_SNAPSHOT_AGE
            ):
                return current
            # RFC 1982 serial: seconds since the epoch, and always forward.
            self._serial = max(self._serial + 1, int(time.time()))
            snapshot = records.build_snapshot(at=now, serial=self._serial)
        except Exception as exc:
            # Keep answering from what we had: stale records for a few seconds beat SERVFAIL.
            # The trace once per outage, not once a second while the database is away.
            if self.last_error is None:
                logger.exception("DNS zones could not be loaded from the database")
            self.last_error = f"{type(exc).__name__}: {exc}"
            return current
        self.last_error = None
        self._built = time.monotonic()
        if current is None or current.version != snapshot.version:
            logger.info(
                "DNS zones loaded: %d zone(s), serial %d", len(snapshot.zones), self._serial
            )
        return snapshot


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, source: ZoneSource, limiter: ResponseRateLimiter) -> None:
        self.source = source
        self.limiter = limiter
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(self.tasks) >= MAX_UDP_IN_FLIGHT:
            return
        # Decided before any work on the query, so a flood costs us as little as it gets.
        verdict = self.limiter.check(addr[0])
        if verdict is Verdict.DROP:
            return
        if verdict is Verdict.TRUNCATE:
            reply = truncated_reply(data)
            if reply is not None and self.transport is not None:
                self.transport.sendto(reply, addr)
            return
        task = asyncio.get_running_loop().create_task(self._answer(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = await _reply(self.source, data, tcp=False)
        if reply is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable for an earlier reply and the like: nothing to do.
        logger.debug("DNS UDP error: %s", exc)


async def _reply(source: ZoneSource, data: bytes, *, tcp: bool) -> bytes | None:
    try:
        snapshot = await source.get()
        return respond(data, snapshot, tcp=tcp)
    except Exception:
        # Never let one query take the server down; the client times out and retries.
        logger.exception("DNS query could not be answered")
        return None


class DnsServer:
    """UDP and TCP listeners on ``host:port`` (port 0: one free port for both)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        source: ZoneSource | None = None,
        rate_limiter: ResponseRateLimiter | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.source = source or ZoneSource()
        # UDP answers only: TCP needs a handshake, so it cannot be aimed at someone else.
        self.rate_limiter = rate_limiter or configured_rate_limiter()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections = 0
        self._per_client: dict[str, int] = {}
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(20):  # with port 0, a port free for TCP may be taken for UDP
            self._tcp = await asyncio.start_server(
                self._handle_tcp, self.host, self.port, reuse_address=True
            )
            port = self._tcp.sockets[0].getsockname()[1]
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Udp(self.source, self.rate_limiter),
                    local_addr=(self.host, port),
                    family=socket.AF_INET6 if ":" in self.host else socket.AF_INET,
                )
            except OSError:
                self._tcp.close()
                await self._tcp.wait_closed()
                if self.port:
                    raise
                continue
            self._udp = transport
            self.port = port
            return
        raise OSError(f"no port free for both UDP and TCP on {self.host}")

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._writers):
                writer.close()
            await self._tcp.wait_closed()
        await asyncio.get_running_loop().run_in_executor(None, self.source.close)

    async def _handle_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if peer else ""
        held = self._per_client.get(client, 0)
        if self._connections >= MAX_TCP_CONNECTIONS or held >= MAX_TCP_PER_CLIENT:
            writer.close()
            return
        self._connections += 1
        self._per_client[client] = held + 1
        self._writers.add(writer)
        try:
            # RFC 7766 6.2.1: several queries may follow each other on one connection.
            while True:
                try:
                    prefix = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                    size = int.from_bytes(prefix, "big")
                    data = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE_TIMEOUT)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                reply = await _reply(self.source, data, tcp=True)
                if reply is None:
                    return  # nothing sensible to say: close rather than leave the client waiting
                assert len(reply) <= MAX_TCP_MESSAGE
                writer.write(len(reply).to_bytes(2, "big") + reply)
                try:
                    # A client that sends queries but never reads the answers would otherwise
                    # hold this slot for ever (RFC 7766 6.2.3 lets us close it); abort, since a
                    # plain close waits to flush what it will never read.
                    await asyncio.wait_for(writer.drain(), TCP_IDLE_TIMEOUT)
                except TimeoutError:
                    writer.transport.abort()
                    return
        except ConnectionError:
            return
        finally:
            self._connections -= 1
            left = self._per_client[client] - 1
            if left:
                self._per_client[client] = left
            else:
                del self._per_client[client]
            self._writers.discard(writer)
            writer.close()
