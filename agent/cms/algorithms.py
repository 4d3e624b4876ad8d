"""Algorithm identifiers the agent speaks, and the ones it refuses (RFC 5751/8551 section 2)."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes

from agent.errors import AgentError, Code
from agent.types import AlgorithmPolicy, ContentCipher, Digest

# asn1crypto's names for digest algorithms -> cryptography hash classes.
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

# A SignerInfo's signatureAlgorithm may name the digest too (sha256_rsa etc., RFC 4055 section 5).
SIGNATURE_DIGEST = {
    "sha1_rsa": "sha1",
    "sha224_rsa": "sha224",
    "sha256_rsa": "sha256",
    "sha384_rsa": "sha384",
    "sha512_rsa": "sha512",
    "md5_rsa": "md5",
    "md2_rsa": "md2",
}

# RFC 8551 section 3.5.3.1 micalg names.
MICALG = {Digest.SHA256: "sha-256", Digest.SHA384: "sha-384", Digest.SHA512: "sha-512"}

# Content ciphers we write: asn1crypto name, key length in bytes.
CIPHERS: dict[ContentCipher, tuple[str, int]] = {
    ContentCipher.AES128_CBC: ("aes128_cbc", 16),
    ContentCipher.AES256_CBC: ("aes256_cbc", 32),
    ContentCipher.AES128_GCM: ("aes128_gcm", 16),
    ContentCipher.AES256_GCM: ("aes256_gcm", 32),
}

# Content ciphers we read, by asn1crypto name: key length in bytes.
CBC_READ = {"aes128_cbc": 16, "aes192_cbc": 24, "aes256_cbc": 32}
GCM_READ = {"aes128_gcm": 16, "aes192_gcm": 24, "aes256_gcm": 32}
# Refused outright (Applicability Statement 1.3 / RFC 8551 section 2.7): name the reason.
WEAK_CIPHERS = frozenset(
    {"des", "tripledes_3key", "rc2", "rc4", "rc5", "1.2.840.113549.3.7", "1.3.14.3.2.7"}
)


def hash_for(name: str, policy: AlgorithmPolicy) -> hashes.HashAlgorithm:
    """The hash for a SignerInfo digest algorithm, or a typed refusal."""
    if name in ("md5", "md2", "md4"):
        raise AgentError(Code.WEAK_ALGORITHM, f"{name} message digest is not accepted")
    if name == "sha1" and not policy.allow_sha1_digest:
        raise AgentError(Code.WEAK_ALGORITHM, "sha1 message digest is not accepted")
    cls = _HASHES.get(name)
    if cls is None:
        raise AgentError(Code.MALFORMED, f"unsupported digest algorithm {name}")
    return cls()


def digest_hash(digest: Digest) -> hashes.HashAlgorithm:
    return _HASHES[digest.value]()
