"""Trust for the agent: signer binding and path validation (incoming), recipient certificate
selection (outgoing), and default collaborators that read revocation data and issuer
certificates over HTTP. Pure library: no Django, no Celery.

Choices worth knowing (each is explained where it is made):

* Path validation is our own small builder (``path``) over cryptography primitives, not
  ``cryptography.x509.verification`` or pyhanko-certvalidator: it must verify SHA-1 paths under
  the legacy policy and name each failure with a stable code. ``python -m agent.trust.bench``
  compares the three engines on one path.
* Address binding compares the whole address case-insensitively (``binding``).
* ``select_recipient_certificates`` raises ``revocation-unavailable`` (transient) rather than
  ``no-recipient-certificate`` when the only obstacle was an unreadable revocation source, so
  the caller retries instead of failing the recipient for good.
* An ``Environment`` may carry a ``ValidationCache``: successful path validations are remembered
  (keyed by the certificates, sender, domain, anchors and policy; bounded by the path's validity
  and a short TTL) and only revocation is asked again per message (``validation_cache``).
"""

from __future__ import annotations

from agent.trust.cache import ByteCache, MemoryCache
from agent.trust.issuers import HttpIssuerFetcher
from agent.trust.revocation import HttpRevocationChecker, RevocationReport
from agent.trust.store import StaticTrustStore
from agent.trust.validate import select_recipient_certificates, validate_signer
from agent.trust.validation_cache import ValidationCache

__all__ = [
    "ByteCache",
    "HttpIssuerFetcher",
    "HttpRevocationChecker",
    "MemoryCache",
    "RevocationReport",
    "StaticTrustStore",
    "ValidationCache",
    "select_recipient_certificates",
    "validate_signer",
]
