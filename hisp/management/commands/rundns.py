"""``manage.py rundns [--bind HOST] [--port PORT]``: the authoritative DNS responder for every
hosted domain (UDP and TCP), publishing our certificates as CERT records."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from hisp.management.cli import one_line
from hisp.management.commands import _arguments


class Command(BaseCommand):
    help = "Run the authoritative DNS responder (CERT, SOA, NS, MX, A/AAAA, SRV) on UDP and TCP."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bind", default=None, help="address to listen on (HISP_DNS_BIND)")
        parser.add_argument("--port", type=int, default=None, help="port (HISP_DNS_PORT)")

    def handle(self, *args: Any, **opts: Any) -> None:
        bind = _arguments.text(opts["bind"] or settings.HISP_DNS_BIND, name="--bind")
        port = settings.HISP_DNS_PORT if opts["port"] is None else opts["port"]
        if not 0 < port <= 65535:
            raise CommandError("--port must be between 1 and 65535")
        asyncio.run(self._serve(bind, port))

    async def _serve(self, bind: str, port: int) -> None:
        from hisp.dns.server import DnsServer

        server = DnsServer(host=bind, port=port)
        # Load the zones before listening: a database that cannot be read is a start-up error,
        # not a server that answers SERVFAIL.
        snapshot = await server.source.get()
        if snapshot is None:
            await server.close()
            raise CommandError(one_line(f"cannot load the DNS zones: {server.source.last_error}"))
        try:
            await server.start()
        except OSError as exc:
            await server.close()
            raise CommandError(one_line(f"cannot listen on {bind}:{port}: {exc}")) from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        zones = ", ".join(sorted(z.to_text(omit_final_dot=True) for z in snapshot.zones))
        self.stdout.write(
            f"DNS responder listening on {bind}:{server.port} (UDP and TCP) for "
            f"{len(snapshot.zones)} zone(s){': ' + zones if zones else ''}"
        )
        self.stdout.flush()
        try:
            await stop.wait()
        finally:
            await server.close()
