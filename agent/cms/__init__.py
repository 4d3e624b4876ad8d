"""CMS (RFC 5652) for S/MIME: SignedData, EnvelopedData and AuthEnvelopedData."""

from __future__ import annotations

from agent.cms.enveloped import AUTH_ENVELOPED, ENVELOPED, SIGNED, content_type, decrypt, encrypt
from agent.cms.signed import VerifiedSignature, sign, verify

__all__ = [
    "AUTH_ENVELOPED",
    "ENVELOPED",
    "SIGNED",
    "VerifiedSignature",
    "content_type",
    "decrypt",
    "encrypt",
    "sign",
    "verify",
]
