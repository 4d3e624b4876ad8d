"""Hosted identities, a partner PKI published in a real BIND, and a DNS server that never
answers (to show a lookup did not go to DNS at all)."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from hisp.models import Address, Domain
from hisp.services import identity
from tests.agent.trust.pki import Authority, authority, issue
from tests.support.bind import BindServer, cert_record
from tests.support.bind import named as named  # noqa: F401 - session fixture

DOMAIN = "hospital.example.org"


@pytest.fixture(autouse=True)
def _discovery_settings(settings: pytest.FixtureRequest) -> None:
    settings.HISP_CA_KEY_BITS = 2048  # type: ignore[attr-defined]  # fast CA keys
    settings.HISP_DISCOVERY_TIMEOUT = timedelta(seconds=3)  # type: ignore[attr-defined]
    settings.REDIS_URL = ""  # type: ignore[attr-defined]  # Django's cache unless a test says


@pytest.fixture
def provider(db: None) -> Domain:
    return identity.add_domain(DOMAIN)


@pytest.fixture
def alice(provider: Domain) -> Address:
    return identity.add_address(f"alice@{DOMAIN}", name="Alice Adams", address_cert=True)


@pytest.fixture
def silent_dns() -> Iterator[str]:
    """``host:port`` of a UDP socket nobody reads: any query to it waits for the full time-out."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@dataclass(frozen=True)
class Partner:
    """Another HISP's domain, served by the test BIND: address-bound and domain-bound CERTs."""

    domain: str
    address: str
    address_cert: x509.Certificate
    domain_cert: x509.Certificate
    root: Authority

    def der(self, certificate: x509.Certificate) -> bytes:
        return certificate.public_bytes(Encoding.DER)


@pytest.fixture(scope="session")
def partner_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def partner(named: BindServer, partner_key: rsa.RSAPrivateKey) -> Partner:  # noqa: F811
    # A fresh domain per test: the discovery cache outlives a test, names must not collide.
    domain = f"p{secrets.token_hex(4)}.partner.test"
    root = authority(f"{domain} CA", key=partner_key)
    address = f"bob@{domain}"
    address_cert = issue(address, key=partner_key, issuer=root, emails=[address])
    domain_cert = issue(domain, key=partner_key, issuer=root, dns=[domain])
    named.serve_zone(
        domain,
        [
            cert_record("bob", address_cert.public_bytes(Encoding.DER)),
            cert_record("@", domain_cert.public_bytes(Encoding.DER)),
        ],
    )
    return Partner(domain, address, address_cert, domain_cert, root)
