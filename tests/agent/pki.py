"""A small test PKI and in-memory collaborators for the S/MIME tests (plain classes that
implement the agent's Protocols; the crypto is all real)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.types import (
    AlgorithmPolicy,
    Binding,
    Candidates,
    Direction,
    Environment,
    Identity,
    RevocationStatus,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class KeyPool:
    """Keys are the slow part: each (bits, slot) is generated once per session."""

    def __init__(self) -> None:
        self._keys: dict[tuple[int, int], rsa.RSAPrivateKey] = {}

    def get(self, bits: int = 2048, slot: int = 0) -> rsa.RSAPrivateKey:
        if (bits, slot) not in self._keys:
            self._keys[(bits, slot)] = rsa.generate_private_key(
                public_exponent=65537, key_size=bits
            )
        return self._keys[(bits, slot)]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class CA:
    certificate: x509.Certificate
    key: rsa.RSAPrivateKey


def make_ca(cn: str, key: rsa.RSAPrivateKey, issuer: CA | None = None) -> CA:
    signer = issuer.key if issuer else key
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.certificate.subject if issuer else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=30))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(signer, hashes.SHA256())
    )
    return CA(cert, key)


def make_leaf(
    issuer: CA,
    key: rsa.RSAPrivateKey,
    *,
    email: str | None = None,
    dns: str | None = None,
    usage: str = "both",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    names: list[x509.GeneralName] = []
    if email:
        names.append(x509.RFC822Name(email))
    if dns:
        names.append(x509.DNSName(dns))
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(email or dns or "leaf"))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before or NOW - timedelta(days=10))
        .not_valid_after(not_after or NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=usage in ("both", "sign"),
                content_commitment=False,
                key_encipherment=usage in ("both", "encrypt"),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer.key, hashes.SHA256())


def identity(
    certificate: x509.Certificate,
    key: rsa.RSAPrivateKey,
    chain: Sequence[x509.Certificate] = (),
    binding: Binding = Binding.ADDRESS,
) -> Identity:
    return Identity(certificate, lambda: key, tuple(chain), binding)


@dataclass
class MemoryKeys:
    """PrivateKeyStore: identities per address and per domain."""

    signing: dict[str, list[Identity]] = field(default_factory=dict)
    decrypting: dict[str, list[Identity]] = field(default_factory=dict)

    def add(self, owner: str, ident: Identity, *, sign: bool = True, decrypt: bool = True) -> None:
        if sign:
            self.signing.setdefault(owner.lower(), []).append(ident)
        if decrypt:
            self.decrypting.setdefault(owner.lower(), []).append(ident)

    def signing_identities(self, address: str) -> Sequence[Identity]:
        domain = address.rpartition("@")[2].lower()
        return [*self.signing.get(address.lower(), []), *self.signing.get(domain, [])]

    def decryption_identities(self, addresses: Sequence[str]) -> Sequence[Identity]:
        out: list[Identity] = []
        for address in addresses:
            domain = address.rpartition("@")[2].lower()
            for ident in [
                *self.decrypting.get(address.lower(), []),
                *self.decrypting.get(domain, []),
            ]:
                if ident not in out:
                    out.append(ident)
        return out


@dataclass
class MemoryResolver:
    """CertificateResolver: address-bound level first, then the domain-bound level."""

    by_address: dict[str, list[x509.Certificate]] = field(default_factory=dict)
    by_domain: dict[str, list[x509.Certificate]] = field(default_factory=dict)

    def candidates(self, address: str) -> Iterator[Candidates]:
        domain = address.rpartition("@")[2].lower()
        yield Candidates("memory", Binding.ADDRESS, tuple(self.by_address.get(address.lower(), [])))
        yield Candidates("memory", Binding.DOMAIN, tuple(self.by_domain.get(domain, [])))


@dataclass
class MemoryAnchors:
    incoming: dict[str, list[x509.Certificate]] = field(default_factory=dict)
    outgoing: dict[str, list[x509.Certificate]] = field(default_factory=dict)

    def anchors(self, domain: str, direction: Direction) -> Sequence[x509.Certificate]:
        table = self.incoming if direction == Direction.INCOMING else self.outgoing
        return table.get(domain.lower(), [])


@dataclass
class MemoryRevocation:
    """Answers from memory, as a warm cache would: revoked serials, else good."""

    revoked: set[int] = field(default_factory=set)
    unavailable: bool = False

    def status(
        self, certificate: x509.Certificate, issuer: x509.Certificate, at: datetime
    ) -> RevocationStatus:
        if self.unavailable:
            return RevocationStatus.UNAVAILABLE
        if certificate.serial_number in self.revoked:
            return RevocationStatus.REVOKED
        return RevocationStatus.GOOD


@dataclass
class MemoryIssuers:
    """IssuerFetcher: what an AIA caIssuers URL would serve, from a list of known CAs."""

    known: list[x509.Certificate] = field(default_factory=list)

    def issuers(self, certificate: x509.Certificate) -> Sequence[x509.Certificate]:
        return [c for c in self.known if c.subject == certificate.issuer]


def environment(
    keys: MemoryKeys,
    resolver: MemoryResolver,
    anchors: MemoryAnchors,
    *,
    revocation: MemoryRevocation | None = None,
    policy: AlgorithmPolicy | None = None,
    issuers: MemoryIssuers | None = None,
) -> Environment:
    return Environment(
        keys=keys,
        certificates=resolver,
        anchors=anchors,
        revocation=revocation or MemoryRevocation(),
        issuers=issuers or MemoryIssuers(),
        policy=policy or AlgorithmPolicy(),
    )


def write_pem(path: Path, *certs: x509.Certificate) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return path


def write_key(path: Path, key: rsa.RSAPrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path
