"""A hosted domain with certificates, and our DNS responder running on a free loopback port."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import pytest

from hisp.dns.server import DnsServer, ZoneSource
from hisp.models import Address, Domain
from hisp.services import identity

DOMAIN = "hospital.example.org"
HOST = f"hisp.{DOMAIN}"


@pytest.fixture(autouse=True)
def _publication_settings(settings: pytest.FixtureRequest) -> None:
    settings.HISP_CA_KEY_BITS = 2048  # type: ignore[attr-defined]  # fast CA keys
    settings.HISP_HOSTNAME = HOST  # type: ignore[attr-defined]
    settings.HISP_PUBLIC_IPV4 = "127.0.0.1"  # type: ignore[attr-defined]
    settings.HISP_PUBLIC_IPV6 = "::1"  # type: ignore[attr-defined]
    settings.HISP_LDAP_SERVER = ""  # type: ignore[attr-defined]


@pytest.fixture
def provider(db: None) -> Domain:
    return identity.add_domain(DOMAIN)


@pytest.fixture
def alice(provider: Domain) -> Address:
    return identity.add_address(f"alice@{DOMAIN}", name="Alice Adams", address_cert=True)


@pytest.fixture
def john(provider: Domain) -> Address:
    """A local part with a dot: published at john.smith.<domain>, so smith.<domain> is an
    empty non-terminal."""
    return identity.add_address(f"john.smith@{DOMAIN}", name="John Smith", address_cert=True)


class Responder:
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.host = server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def query(
        self,
        name: str,
        rdtype: str,
        *,
        tcp: bool = False,
        edns: int = -1,
        payload: int = 1232,
        rdclass: str = "IN",
    ) -> dns.message.Message:
        message = dns.message.make_query(
            name, dns.rdatatype.from_text(rdtype), rdclass=rdclass, use_edns=edns, payload=payload
        )
        message.flags &= ~dns.flags.RD
        send = dns.query.tcp if tcp else dns.query.udp
        return send(message, self.host, timeout=3, port=self.port)


@contextmanager
def running_responder(
    *, recheck_after: float = 0.2, host: str = "127.0.0.1", port: int = 0
) -> Iterator[Responder]:
    """The real asyncio server in a thread of its own (as rundns runs it, minus signals)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-dns", daemon=True)
    thread.start()
    server = DnsServer(host=host, port=port, source=ZoneSource(recheck_after=recheck_after))
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(15)
        yield Responder(server)
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def responder(transactional_db: None) -> Iterator[Responder]:
    with running_responder() as running:
        yield running
