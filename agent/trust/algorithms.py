"""Algorithm policy for certificates and one signature check for every signed X.509 object.

We verify certificate, CRL and OCSP signatures ourselves instead of with
``Certificate.verify_directly_issued_by``: cryptography refuses SHA-1 there outright, and the
legacy policy (``allow_sha1_certificates``, needed for the reference-implementation vectors) must
still be able to verify a SHA-1 path. Whether SHA-1 is acceptable is decided here, by policy,
before any signature is trusted.
"""

from __future__ import annotations

import functools

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa

from agent.errors import AgentError, Code
from agent.types import AlgorithmPolicy

# Curves below 256 bits give less than the 112-bit security RSA-2048 gives (NIST SP 800-57).
_MIN_EC_BITS = 256
# What cryptography raises on malformed certificate parts, which it parses lazily.
PARSE_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    x509.InvalidVersion,
)
# Reading an optional extension: absent, or present but unreadable, both mean "not usable".
MISSING_OR_MALFORMED: tuple[type[Exception], ...] = (x509.ExtensionNotFound, *PARSE_ERRORS)
_EDDSA = frozenset({x509.SignatureAlgorithmOID.ED25519, x509.SignatureAlgorithmOID.ED448})


def parseable(certificate: x509.Certificate) -> bool:
    """Whether every part we read parses (cryptography parses names, times, extensions and the
    key lazily); checked once per certificate so later reads cannot raise."""
    try:
        certificate.issuer  # noqa: B018 (parsing is the point)
        certificate.subject  # noqa: B018
        certificate.not_valid_before_utc  # noqa: B018
        certificate.not_valid_after_utc  # noqa: B018
        certificate.extensions  # noqa: B018
        certificate.public_key()
    except PARSE_ERRORS:
        return False
    return True


def signature_problem(
    certificate: x509.Certificate | x509.CertificateRevocationList, policy: AlgorithmPolicy
) -> str | None:
    """Why the signature algorithm on ``certificate`` is unacceptable, or None.

    MD5 is rejected always (RFC 6151); SHA-1 only when the policy does not allow it
    (RFC 8551 2.1 and NIST SP 800-131A forbid it for new signatures).
    """
    try:
        digest = certificate.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return (
            f"unsupported signature algorithm {certificate.signature_algorithm_oid.dotted_string}"
        )
    if isinstance(digest, hashes.MD5):
        return "MD5 signature"
    if isinstance(digest, hashes.SHA1) and not policy.allow_sha1_certificates:
        return "SHA-1 signature (the policy does not accept SHA-1-signed certificates)"
    if digest is None and certificate.signature_algorithm_oid not in _EDDSA:
        # Ed25519/Ed448 carry no separate hash; anything else without one we cannot judge.
        return (
            f"unsupported signature algorithm {certificate.signature_algorithm_oid.dotted_string}"
        )
    return None


def key_problem(certificate: x509.Certificate, policy: AlgorithmPolicy) -> str | None:
    """Why the subject public key is too weak, or None (RFC 8551 2.1: RSA below 2048 rejected)."""
    try:
        key = certificate.public_key()
    except (UnsupportedAlgorithm, ValueError):
        return "unsupported or malformed public key"
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < policy.min_rsa_bits:
            return f"RSA key of {key.key_size} bits (minimum {policy.min_rsa_bits})"
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.key_size < _MIN_EC_BITS:
            return f"EC key on a {key.curve.key_size}-bit curve"
        return None
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return None
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA key (not accepted for S/MIME, RFC 8551 2.2)"
    return "unsupported public key type"


def require_acceptable(
    certificate: x509.Certificate, policy: AlgorithmPolicy, *, what: str
) -> None:
    """Raise weak-algorithm / weak-key for ``certificate`` under ``policy``."""
    problem = signature_problem(certificate, policy)
    if problem is not None:
        raise AgentError(Code.WEAK_ALGORITHM, f"{what}: {problem}")
    problem = key_problem(certificate, policy)
    if problem is not None:
        raise AgentError(Code.WEAK_KEY, f"{what}: {problem}")


def verify_signature(
    key: object,
    *,
    signature: bytes,
    data: bytes,
    digest: hashes.HashAlgorithm | None,
    parameters: object = None,
) -> bool:
    """True when ``signature`` over ``data`` verifies with public ``key``.

    ``parameters`` is ``signature_algorithm_parameters`` where the object has it (PSS or PKCS#1
    v1.5 for RSA); absent, RSA means PKCS#1 v1.5. Never raises for a bad signature or key type.
    """
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if digest is None:
                return False
            pad = parameters if isinstance(parameters, padding.PSS) else padding.PKCS1v15()
            key.verify(signature, data, pad, digest)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if digest is None:
                return False
            key.verify(signature, data, ec.ECDSA(digest))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


@functools.lru_cache(maxsize=4096)
def issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """RFC 5280 6.1.3(a)(1) and (a)(4): names chain and the signature verifies with the issuer key.

    Memoised: the answer for a pair of certificates (compared by their DER) never changes, and a
    busy sender's path is checked on every message. Whether the algorithm is acceptable is not
    cached here; callers apply the policy each time.
    """
    if certificate.issuer != issuer.subject:
        return False
    try:
        digest = certificate.signature_hash_algorithm
        key = issuer.public_key()
    except (UnsupportedAlgorithm, ValueError):
        return False
    return verify_signature(
        key,
        signature=certificate.signature,
        data=certificate.tbs_certificate_bytes,
        digest=digest,
        parameters=certificate.signature_algorithm_parameters,
    )
