"""Partners' certificates imported out of band are found for every spelling of the address:
the domain is case-insensitive (RFC 5321 2.4) and our delivery tracking and compose treat the
local part so too (compose.mailbox_key). Exact matching found no certificate for ``Doc@`` when
staff had imported the one for ``doc@`` (or for a SAN written in capitals), and the delivery
failed or was held as having no certificate."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from django.utils import timezone

from agent.types import Binding
from hisp.agent_env import DatabaseCertificateResolver
from hisp.models import Domain
from hisp.services import pki


def _certificate(name: x509.GeneralName) -> x509.Certificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "partner")])
    now = timezone.now()
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([name]), critical=False)
        .sign(key, hashes.SHA256())
    )


def _imported(cert: x509.Certificate, address: str, binding: Binding) -> tuple:
    levels = [
        level for level in DatabaseCertificateResolver().candidates(address)
        if level.source == "imported" and level.binding == binding
    ]
    return tuple(c for level in levels for c in level.certificates)


@pytest.mark.parametrize("san", ["doc@partner.example.net", "Doc@Partner.Example.NET"])
@pytest.mark.parametrize(
    "recipient", ["doc@partner.example.net", "Doc@partner.example.net", "DOC@PARTNER.EXAMPLE.NET"]
)
def test_an_imported_address_certificate_is_found_for_every_spelling(
    provider: Domain, san: str, recipient: str
) -> None:
    cert = _certificate(x509.RFC822Name(san))
    row = pki.import_certificate(cert.public_bytes(serialization.Encoding.PEM))
    assert row.bound_name.rpartition("@")[2] == "partner.example.net"
    assert _imported(cert, recipient, Binding.ADDRESS) == (cert,)


def test_an_imported_domain_certificate_written_in_capitals_is_found(provider: Domain) -> None:
    cert = _certificate(x509.DNSName("PARTNER.Example.NET"))
    row = pki.import_certificate(cert.public_bytes(serialization.Encoding.PEM))
    assert row.bound_name == "partner.example.net"
    assert _imported(cert, "anyone@partner.example.net", Binding.DOMAIN) == (cert,)


def test_a_hosted_domains_certificate_in_capitals_is_still_refused_without_its_key(
    provider: Domain,
) -> None:
    cert = _certificate(x509.DNSName(provider.name.upper()))
    with pytest.raises(pki.PkiError, match="is hosted here"):
        pki.import_certificate(cert.public_bytes(serialization.Encoding.PEM))
