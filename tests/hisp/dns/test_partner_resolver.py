"""Our responder as a partner HISP's resolver sees it: a real BIND, recursive, that knows our
zone only through a static-stub pointing at our server, so it talks to us as to the
authoritative server it would find by delegation (it follows TC to TCP, keeps our negative
answers by our SOA, and asks strictly QNAME-minimised questions), and the discovery another
HISP would run (``agent.discovery``) going through it.

BIND sends its queries to the port it listens on (``port``): the responder listens on that
port at 127.0.0.2 and BIND on 127.0.0.1. A private root zone keeps BIND from ever asking the
real root servers anything.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from agent.discovery import DiscoveryResolver, DnsClient, parse_nameservers
from agent.discovery.dnsclient import Status
from agent.types import Binding
from hisp.models import Address, Certificate, Domain
from hisp.services import pki
from tests.hisp.dns.conftest import DOMAIN, Responder, running_responder
from tests.support.bind import NAMED, BindServer, free_udp_tcp_port
from tests.support.process import running
from tests.support.services import require_binary

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]

RESPONDER_HOST = "127.0.0.2"


class PartnerResolver(BindServer):
    """A recursive named: a private root zone, and our zone as a static-stub."""

    def _write_config(self) -> None:
        d = self.directory
        (d / "root.zone").write_text(
            ". 300 IN SOA a.root. hostmaster.root. 1 3600 600 86400 60\n"
            ". 300 IN NS a.root.\n"
            "a.root. 300 IN A 127.0.0.1\n"
        )
        # The global port is also the one named asks other servers on: our responder's.
        self._write_named_conf(
            options=(
                f"  port {self.port};\n"
                "  recursion yes;\n"
                "  allow-recursion { 127.0.0.1; };\n"
                # Strict, as resolvers that trust NXDOMAIN below a name (RFC 8020) behave: an
                # NXDOMAIN for an empty non-terminal on the way down ends the resolution.
                "  qname-minimization strict;"
            ),
            zones=(
                f'zone "." {{ type primary; file "{d / "root.zone"}"; }};\n'
                f'zone "{DOMAIN}" {{ type static-stub; server-addresses {{ {RESPONDER_HOST}; }}; }};'
            ),
        )

    def query(
        self, name: str, rdtype: str, *, tcp: bool = False, timeout: float = 3.0
    ) -> dns.message.Message:
        # Without EDNS, as the oldest resolvers ask: a large answer must come truncated.
        message = dns.message.make_query(name, dns.rdatatype.from_text(rdtype), use_edns=0)
        send = dns.query.tcp if tcp else dns.query.udp
        return send(message, self.host, timeout=timeout, port=self.port)


@dataclass
class Setup:
    responder: Responder
    resolver: PartnerResolver


@pytest.fixture
def setup(transactional_db: None) -> Iterator[Setup]:
    require_binary("named", NAMED)
    with tempfile.TemporaryDirectory(prefix="hisp-partner-named-") as tmp:

        def make(attempt: int) -> PartnerResolver:
            directory = Path(tmp) / str(attempt)
            directory.mkdir()
            return PartnerResolver(directory, free_udp_tcp_port())

        with running("named", make) as resolver:
            with running_responder(host=RESPONDER_HOST, port=resolver.port) as responder:
                yield Setup(responder, resolver)


def cert_ders(response: dns.message.Message) -> set[bytes]:
    return {
        rdata.certificate
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.CERT
        for rdata in rrset
    }


def ours(name: str, binding: str = "address") -> set[bytes]:
    rows = Certificate.objects.filter(bound_name=name, binding=binding, revoked_at__isnull=True)
    return {bytes(row.der) for row in rows}


def test_a_partners_resolver_gets_our_address_and_domain_certificates(
    setup: Setup, alice: Address
) -> None:
    resolver = DiscoveryResolver.build(nameservers=[setup.resolver.address], timeout=5, ldap=False)
    levels = list(resolver.candidates(alice.address))
    assert [(level.source, level.binding, level.error) for level in levels] == [
        ("dns", Binding.ADDRESS, None),
        ("dns", Binding.DOMAIN, None),
    ]
    assert {c.public_bytes(Encoding.DER) for c in levels[0].certificates} == ours(alice.address)
    assert {c.public_bytes(Encoding.DER) for c in levels[1].certificates} == ours(DOMAIN, "domain")
    assert "lame" not in setup.resolver.log.lower(), setup.resolver.log[-2000:]


def test_a_dotted_local_part_resolves_through_qname_minimisation(
    setup: Setup, john: Address
) -> None:
    # A minimising resolver first asks about smith.<domain> (an empty non-terminal): NXDOMAIN
    # there would make it stop (RFC 8020), so this also proves we answer NODATA for it.
    response = setup.resolver.query(f"john.smith.{DOMAIN}", "CERT", tcp=True)
    assert response.rcode() == dns.rcode.NOERROR
    assert cert_ders(response) == ours(john.address)


def test_a_missing_address_is_nxdomain_with_our_soa(setup: Setup, alice: Address) -> None:
    response = setup.resolver.query(f"nobody.{DOMAIN}", "CERT")
    assert response.rcode() == dns.rcode.NXDOMAIN
    [soa] = response.authority
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa.name == dns.name.from_text(DOMAIN)
    # And the agent's own client reads it as "no such name", kept for our negative TTL.
    client = DnsClient(servers=parse_nameservers(setup.resolver.address), timeout=5)
    answer = client.query(dns.name.from_text(f"nobody.{DOMAIN}"), dns.rdatatype.CERT)
    assert answer.status is Status.NXDOMAIN
    assert 0 < answer.ttl <= 300


def test_a_large_certificate_reaches_the_partner_over_tcp(setup: Setup, provider: Domain) -> None:
    address = Address.objects.create(address=f"big@{DOMAIN}", domain=provider)
    [row] = pki.issue_for(address.address, key_bits=4096)
    # BIND gets our truncated UDP answer, asks us again over TCP, and hands the whole RRset on
    # (itself over TCP: it does not fit the 1232 bytes the agent offers).
    client = DnsClient(servers=parse_nameservers(setup.resolver.address), timeout=5)
    answer = client.query(dns.name.from_text(f"big.{DOMAIN}"), dns.rdatatype.CERT)
    assert answer.status is Status.ANSWER
    assert answer.used_tcp
    assert {rdata.certificate for rdata in answer.records} == {bytes(row.der)}


def test_a_revoked_certificate_is_gone_once_the_partners_cache_expires(
    setup: Setup, provider: Domain
) -> None:
    bob = Address.objects.create(address=f"bob@{DOMAIN}", domain=provider)
    [row] = pki.issue_for(bob.address)
    time.sleep(0.3)  # past the responder's recheck interval
    name = f"bob.{DOMAIN}"
    assert cert_ders(setup.resolver.query(name, "CERT", tcp=True)) == {bytes(row.der)}
    pki.revoke(row)
    time.sleep(0.3)
    # Straight from us: gone at once. The partner's resolver may keep it for our record TTL.
    assert setup.responder.query(name, "CERT").rcode() == dns.rcode.NXDOMAIN
    cached = setup.resolver.query(name, "CERT", tcp=True)
    assert 0 < cached.answer[0].ttl <= 300  # records.RECORD_TTL: minutes, never hours
