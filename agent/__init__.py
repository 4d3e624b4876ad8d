"""The Direct security and trust agent: a pure library on bytes (no Django, no Celery)."""

from __future__ import annotations

from agent.errors import AgentError, Code
from agent.protect import protect, protect_copies
from agent.types import (
    DEFAULT_POLICY,
    DEFAULT_PROTECT_OPTIONS,
    AlgorithmPolicy,
    Binding,
    Candidates,
    CertificateResolver,
    ContentCipher,
    Digest,
    Direction,
    Environment,
    Identity,
    IssuerFetcher,
    KeyTransport,
    PrivateKeyStore,
    Protected,
    ProtectOptions,
    RevocationChecker,
    RevocationStatus,
    TrustStore,
    Unprotected,
)
from agent.unprotect import unprotect

__all__ = [
    "DEFAULT_POLICY",
    "DEFAULT_PROTECT_OPTIONS",
    "AgentError",
    "AlgorithmPolicy",
    "Binding",
    "Candidates",
    "CertificateResolver",
    "Code",
    "ContentCipher",
    "Digest",
    "Direction",
    "Environment",
    "Identity",
    "IssuerFetcher",
    "KeyTransport",
    "PrivateKeyStore",
    "ProtectOptions",
    "Protected",
    "RevocationChecker",
    "RevocationStatus",
    "TrustStore",
    "Unprotected",
    "protect",
    "protect_copies",
    "unprotect",
]
