"""The agent's narrow API: collaborator Protocols and the frozen results it returns.

The Django side (``hisp``) supplies adapters for every Protocol here; tests may supply plain
in-memory ones. Nothing here knows about a database, a broker or a web framework.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from agent.errors import AgentError

if TYPE_CHECKING:  # agent.trust imports this module; the field below is only annotated with it
    from agent.trust.validation_cache import ValidationCache


class Direction(StrEnum):
    INCOMING = "incoming"
    OUTGOING = "outgoing"


class Binding(StrEnum):
    """What a certificate is bound to (Direct Applicability Statement 4.0)."""

    ADDRESS = "address"  # SAN rfc822Name equal to the Direct address
    DOMAIN = "domain"  # SAN dNSName equal to the address's domain


class Digest(StrEnum):
    SHA256 = "sha256"
    SHA384 = "sha384"
    SHA512 = "sha512"


class ContentCipher(StrEnum):
    AES128_CBC = "aes128-cbc"
    AES256_CBC = "aes256-cbc"
    AES128_GCM = "aes128-gcm"  # AuthEnvelopedData (RFC 5083/5084)
    AES256_GCM = "aes256-gcm"


class KeyTransport(StrEnum):
    RSA_PKCS1V15 = "rsa-pkcs1v15"
    RSA_OAEP_SHA256 = "rsa-oaep-sha256"


class RevocationStatus(StrEnum):
    GOOD = "good"
    REVOKED = "revoked"
    UNAVAILABLE = "unavailable"  # a CRL/OCSP source is named but could not be read
    NOT_CHECKED = "not-checked"  # the certificate names no revocation source


@dataclass(frozen=True)
class Identity:
    """A hosted certificate with access to its private key.

    The key is reached through a callable so that an adapter unwraps it only when the agent
    actually signs or decrypts, and can drop it straight after.
    """

    certificate: x509.Certificate
    private_key: Callable[[], RSAPrivateKey]
    chain: tuple[x509.Certificate, ...] = ()  # intermediates to embed, leaf's issuer first
    binding: Binding = Binding.ADDRESS


@dataclass(frozen=True)
class Candidates:
    """One level of certificate discovery for a recipient, in the order levels are tried.

    ``source`` names where they came from (``hosted``, ``dns``, ``ldap``, ``imported``...);
    ``error`` is set when the lookup itself failed (time-out, malformed answer) and says why;
    ``notes`` say what was skipped on the way (a record that does not parse, an unreachable
    server that was failed over) so a "no usable certificate" reason can be explained.
    """

    source: str
    binding: Binding
    certificates: tuple[x509.Certificate, ...] = ()
    error: str | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AlgorithmPolicy:
    """Conservative defaults; each relaxation is explicit (legacy partners, old test vectors).

    Despite its name this is the agent's whole trust policy (algorithms, key sizes, revocation,
    legacy binding): the name is kept because callers across the project use it.
    """

    allow_sha1_digest: bool = False  # message digest in SignerInfo
    allow_sha1_certificates: bool = False  # SHA-1-signed certificates in the path
    min_rsa_bits: int = 2048
    # Content encryption below AES (DES, 3DES, RC2) is never accepted.
    revocation_required_when_named: bool = True  # reject if a named CRL/OCSP is unreachable
    # Legacy (pre-Applicability-Statement) signers carry their binding in the subject DN
    # emailAddress attribute instead of a subjectAltName, as the .NET reference implementation
    # issued them. When on, a signer with no rfc822Name/dNSName SAN at all may be bound through
    # that attribute (the exact address, or the bare domain for a domain-bound certificate).
    # RFC 5280 4.1.2.6 deprecates the attribute, so this stays off unless a partner needs it.
    allow_subject_email_binding: bool = False


DEFAULT_POLICY = AlgorithmPolicy()


@dataclass(frozen=True)
class ProtectOptions:
    digest: Digest = Digest.SHA256
    cipher: ContentCipher = ContentCipher.AES256_CBC
    key_transport: KeyTransport = KeyTransport.RSA_PKCS1V15
    neutral_subject: str | None = None  # when set, replaces the outer Subject (it travels in clear)


DEFAULT_PROTECT_OPTIONS = ProtectOptions()


class PrivateKeyStore(Protocol):
    def signing_identities(self, address: str) -> Sequence[Identity]:
        """Usable signing identities for a hosted address: address-bound first, then domain."""
        ...

    def decryption_identities(self, addresses: Sequence[str]) -> Sequence[Identity]:
        """Every key that may decrypt mail to these hosted addresses, previous ones included."""
        ...


class CertificateResolver(Protocol):
    def candidates(self, address: str) -> Iterator[Candidates]:
        """Discovery levels for a recipient, most preferred first. Lazy: the agent stops at the
        first level that yields a usable certificate, so later lookups never happen."""
        ...


class TrustStore(Protocol):
    def anchors(self, domain: str, direction: Direction) -> Sequence[x509.Certificate]: ...


class RevocationChecker(Protocol):
    def status(
        self, certificate: x509.Certificate, issuer: x509.Certificate, at: datetime
    ) -> RevocationStatus: ...


class IssuerFetcher(Protocol):
    def issuers(self, certificate: x509.Certificate) -> Sequence[x509.Certificate]:
        """Certificates from the AIA caIssuers URL(s) of ``certificate`` (may be empty)."""
        ...


@dataclass(frozen=True)
class Environment:
    """Everything the agent needs from outside, passed in one value."""

    keys: PrivateKeyStore
    certificates: CertificateResolver
    anchors: TrustStore
    revocation: RevocationChecker
    issuers: IssuerFetcher
    policy: AlgorithmPolicy = DEFAULT_POLICY
    # Remembered path validations (agent.trust.validation_cache); None decides afresh each time.
    validation_cache: ValidationCache | None = None


@dataclass(frozen=True)
class Protected:
    """The result of protecting one outgoing message.

    ``message`` is the signed-and-encrypted MIME for the recipients in ``encrypted_to`` (None if
    no recipient had a usable certificate); ``rejected`` maps each other recipient to the reason.
    """

    message: bytes | None
    encrypted_to: tuple[str, ...]
    rejected: Mapping[str, AgentError]
    recipient_certificates: Mapping[str, tuple[x509.Certificate, ...]] = field(default_factory=dict)
    recipient_anchors: Mapping[str, x509.Certificate] = field(default_factory=dict)
    signer: x509.Certificate | None = None


@dataclass(frozen=True)
class Unprotected:
    """The result of unprotecting one incoming message.

    Whole-message failures (malformed, undecryptable, bad signature) raise ``AgentError``; trust is
    per recipient because each recipient's domain trusts its own anchors.
    """

    message: bytes  # the inner RFC 5322 message (unwrapped when it was wrapped)
    sender: str
    signer: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    digest: str
    delivered: Mapping[str, x509.Certificate]  # recipient -> anchor that made the signer trusted
    rejected: Mapping[str, AgentError]
    wrapped: bool = False
