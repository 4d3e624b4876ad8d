"""The POP3S listener: implicit TLS (RFC 8314 section 3.3), on its own thread and event loop.

TLS comes first, with the certificate of the SMTP listeners' STARTTLS (hisp/tls.py); there is
no plaintext POP3 and no STLS, so no password ever crosses the network in clear (RFC 8314
section 3: implicit TLS is preferred for mail access). A client that does not start TLS gets
nothing and is dropped when the handshake fails or times out.

Sessions are bounded as the SMTP listeners bound theirs, with the same count
(hisp.smtp.protocol ``ClientConnections``): at most ``max_sessions_per_address`` from one
client address (IPv6: its /64) and ``max_sessions`` in all; a connection past either is closed
before its TLS handshake costs anything. A nearly full listener gives a connection that has
not logged in only the SMTP stress timeout; a logged-in session keeps RFC 1939's full idle
timeout.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from typing import Any

from hisp.pop3.session import Limits, Session
from hisp.smtp.protocol import ClientConnections, address_group

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 30.0  # seconds for the TLS handshake of a new connection
# Messages the sessions of one listener hold rendered in memory at once (the SMTP listener's
# DATA budget, HISP_SMTP_DATA_BUDGET_MESSAGES, bounds what it receives the same way).
RETRIEVALS_AT_ONCE = 16
START_TIMEOUT = 10.0


class Pop3Listener:
    """Start with :meth:`start`, stop with :meth:`stop` (from any thread)."""

    def __init__(
        self,
        *,
        bind: str,
        port: int,
        tls_context: ssl.SSLContext,
        idle_timeout: float,
        command_limit: int,
        max_sessions: int,
        max_sessions_per_address: int,
        stress_timeout: float,
        stress_share: float,
        hostname: str = "localhost",
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self.bind = bind
        self.port = port
        self.hostname = hostname
        self.tls_context = tls_context
        self.handshake_timeout = handshake_timeout
        self.connections = ClientConnections(
            max_sessions_per_address, max_sessions, stress_timeout, stress_share
        )
        self.limits = Limits(
            idle_timeout=idle_timeout,
            command_limit=command_limit,
            unauthenticated_timeout=self.connections.idle_timeout,
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._retrievals: asyncio.Semaphore | None = None

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loop.set_exception_handler(_quiet_tls_errors)
            self.loop = loop
            try:
                self._retrievals = asyncio.Semaphore(RETRIEVALS_AT_ONCE)
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._accept, self.bind, self.port)
                )
                # Port 0 (tests): the port the system chose.
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:
                failure.append(exc)
                loop.close()
                started.set()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="pop3-listener", daemon=True)
        self._thread.start()
        if not started.wait(START_TIMEOUT):
            raise RuntimeError("the POP3 listener did not start")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]

    def stop(self) -> None:
        """Close the listener and every session. A session cut off here never reached its
        UPDATE state, so its deletions are not applied (RFC 1939 section 6)."""
        from hisp.smtp import threads

        loop, thread = self.loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=START_TIMEOUT)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=START_TIMEOUT)
        self._thread = None
        threads.shutdown()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=START_TIMEOUT)

    # --- connections ---------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        group = address_group(client)
        try:
            if self.connections.admit(group) is not None:
                # No TLS yet, so no POP3 reply can be sent safely: the connection is closed.
                log.warning("POP3 connection from %s refused: too many sessions", client)
                return
            try:
                await self._serve(reader, writer, client)
            finally:
                self.connections.release(group)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("POP3 session from %s failed", client)
        finally:
            if not writer.is_closing():
                writer.transport.abort()
            self._tasks.discard(task)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: str
    ) -> None:
        try:
            await writer.start_tls(self.tls_context, ssl_handshake_timeout=self.handshake_timeout)
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as exc:
            # A plaintext client, a scanner, or an old TLS version: one line, no traceback.
            log.warning("POP3 TLS handshake with %s failed: %s", client, exc)
            return
        assert self._retrievals is not None
        session = Session(
            reader=reader,
            writer=writer,
            client=client,
            limits=self.limits,
            retrievals=self._retrievals,
            hostname=self.hostname,
        )
        await session.run()
        try:
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 5)
        except (ConnectionError, TimeoutError, ssl.SSLError, OSError):
            pass


def _quiet_tls_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio reports a failed handshake or a client gone mid-TLS with a traceback; those
    are the client's doing and get one warning line. Anything else goes the default way."""
    error = context.get("exception")
    if isinstance(error, ssl.SSLError | ConnectionError):
        log.warning("POP3 TLS connection error: %s", error)
        return
    loop.default_exception_handler(context)


def listener(*, bind: str, port: int, **overrides: Any) -> Pop3Listener:
    """A listener configured from the settings (HISP_POP3_..., checked at start-up)."""
    from django.conf import settings

    from hisp.tls import server_context

    options: dict[str, Any] = {
        "tls_context": server_context(),
        "hostname": settings.HISP_HOSTNAME,
        "idle_timeout": settings.HISP_POP3_IDLE_TIMEOUT.total_seconds(),
        "command_limit": settings.HISP_POP3_SESSION_COMMAND_LIMIT,
        "max_sessions": settings.HISP_POP3_MAX_SESSIONS,
        "max_sessions_per_address": settings.HISP_POP3_MAX_SESSIONS_PER_ADDRESS,
        "stress_timeout": settings.HISP_SMTP_STRESS_TIMEOUT.total_seconds(),
        "stress_share": settings.HISP_SMTP_STRESS_SHARE,
    }
    options.update(overrides)
    return Pop3Listener(bind=bind, port=port, **options)
