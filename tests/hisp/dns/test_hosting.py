"""DCDT hosting cases H1-H4: what ``manage.py dnszone`` and ``manage.py ldif`` print, loaded into a
real BIND and a real OpenLDAP, lets another HISP (``agent.discovery``) find our address-bound and
domain-bound certificates.

H1 address-bound in DNS, H2 domain-bound in DNS, H3 address-bound in LDAP (found through the
SRV record we publish), H4 domain-bound in LDAP.
"""

from __future__ import annotations

import random
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from django.core.management import call_command

from agent.discovery import DiscoveryResolver
from agent.types import Binding, Candidates
from hisp.models import Address, Certificate, Domain
from tests.hisp.dns.conftest import DOMAIN, HOST
from tests.support.bind import BindServer, Record, named  # noqa: F401 - session fixture
from tests.support.services import require_binary
from tests.support.slapd import ROOT_PASSWORD, SlapdServer, slapd_server

pytestmark = pytest.mark.services
BASE_DN = "dc=hospital,dc=example,dc=org"


def zone_records(fragment: str) -> list[Record]:
    """The fragment's lines as BIND test records (absolute owner names, as printed)."""
    records = []
    for line in fragment.splitlines():
        if not line.strip() or line.startswith(";"):
            continue
        owner, ttl, klass, rdtype, data = line.split(None, 4)
        assert klass == "IN"
        records.append(Record(owner, rdtype, data, int(ttl)))
    return records


def ldapadd(server: SlapdServer, ldif: str) -> None:
    """Load with OpenLDAP's own client, as an operator would."""
    tool = require_binary("ldapadd")
    with tempfile.NamedTemporaryFile("w", suffix=".ldif") as handle:
        handle.write(ldif)
        handle.flush()
        result = subprocess.run(
            [tool, "-x", "-H", server.url, "-D", server.root_dn(BASE_DN), "-w", ROOT_PASSWORD,
             "-f", handle.name],
            capture_output=True, text=True, timeout=30,
        )
    assert result.returncode == 0, result.stderr


@dataclass
class Hosting:
    alice: Address
    levels: dict[tuple[str, Binding], Candidates]

    def ders(self, source: str, binding: Binding) -> set[bytes]:
        level = self.levels[(source, binding)]
        assert level.error is None, level.error
        return {c.public_bytes(Encoding.DER) for c in level.certificates}


def ours(name: str, binding: str) -> set[bytes]:
    return {bytes(r.der) for r in Certificate.objects.filter(bound_name=name, binding=binding)}


@pytest.fixture
def slapd() -> Iterator[SlapdServer]:
    with slapd_server((BASE_DN,)) as server:
        yield server


@pytest.fixture
def hosting(
    named: BindServer,  # noqa: F811
    slapd: SlapdServer,
    alice: Address,
    settings: pytest.FixtureRequest,
) -> Hosting:
    # The directory is announced by SRV at our own host name, whose A record we publish too.
    settings.HISP_LDAP_SERVER = f"{HOST}:{slapd.port}"  # type: ignore[attr-defined]
    Address.objects.create(address=f"bob@{DOMAIN}", domain=Domain.objects.get(name=DOMAIN))
    zone, ldif = StringIO(), StringIO()
    call_command("dnszone", DOMAIN, stdout=zone)
    call_command("ldif", DOMAIN, stdout=ldif)
    named.serve_zone(DOMAIN, zone_records(zone.getvalue()))
    ldapadd(slapd, ldif.getvalue())
    resolver = DiscoveryResolver.build(
        nameservers=[named.address],
        timeout=5,
        connect_timeout=1,
        rng=random.Random(0),
        ldap_allow_private_networks=True,  # slapd is on loopback
    )
    levels = {(c.source, c.binding): c for c in resolver.candidates(alice.address)}
    return Hosting(alice=alice, levels=levels)


def test_h1_address_bound_certificate_found_in_dns(hosting: Hosting) -> None:
    found = hosting.ders("dns", Binding.ADDRESS)
    assert found == ours(hosting.alice.address, "address")
    assert len(found) == 1


def test_h2_domain_bound_certificate_found_in_dns(hosting: Hosting) -> None:
    found = hosting.ders("dns", Binding.DOMAIN)
    assert found == ours(DOMAIN, "domain")
    assert len(found) == 1


def test_h3_address_bound_certificate_found_in_ldap_via_srv(hosting: Hosting) -> None:
    found = hosting.ders("ldap", Binding.ADDRESS)
    assert found == ours(hosting.alice.address, "address")
    assert len(found) == 1


def test_h4_domain_bound_certificate_found_in_ldap_via_srv(hosting: Hosting) -> None:
    found = hosting.ders("ldap", Binding.DOMAIN)
    assert found == ours(DOMAIN, "domain")
    assert len(found) == 1


def test_address_without_certificate_falls_back_to_domain_level(
    hosting: Hosting, named: BindServer  # noqa: F811
) -> None:
    resolver = DiscoveryResolver.build(
        nameservers=[named.address], timeout=5, connect_timeout=1, ldap_allow_private_networks=True
    )  # slapd is on loopback
    levels = {(c.source, c.binding): c for c in resolver.candidates(f"bob@{DOMAIN}")}
    assert not levels[("dns", Binding.ADDRESS)].certificates
    assert not levels[("ldap", Binding.ADDRESS)].certificates
    domain_certs = {
        c.public_bytes(Encoding.DER) for c in levels[("dns", Binding.DOMAIN)].certificates
    }
    assert domain_certs == ours(DOMAIN, "domain")
