"""Incoming: decrypt, verify, bind and trust one message (Direct Applicability Statement 1.3,
RFC 8551). Whole-message failures raise :class:`AgentError`; trust is decided per recipient
domain, since each domain trusts its own anchors."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from agent import cms
from agent.errors import AgentError, Code
from agent.mime import (
    CRLF,
    Entity,
    addresses,
    domain_of,
    normalise_address,
    parse_entity,
    parse_message,
    split_multipart,
    to_crlf,
)
from agent.trust import validate_signer
from agent.types import Environment, Unprotected

# RFC 8551 section 3.2.1 and the pre-standard x-pkcs7-* names (RFC 2311) still in the wild.
_PKCS7_MIME = frozenset({"application/pkcs7-mime", "application/x-pkcs7-mime"})
_PKCS7_SIGNATURE = frozenset({"application/pkcs7-signature", "application/x-pkcs7-signature"})
_CONTENT_HEADERS = ("content-", "mime-version")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class _Signed:
    verified: cms.VerifiedSignature
    source: bytes  # holds the signed MIME entity (CRLF-canonical) at [start:end]
    start: int
    end: int


def unprotect(
    raw: bytes, *, recipients: Sequence[str], env: Environment, at: datetime
) -> Unprotected:
    """Open one incoming Direct message addressed to the hosted ``recipients``.

    A large message passes through several forms (the received base64, the envelope, the
    plaintext, the inner message), each about its size: each is let go of as soon as the next
    exists, so a caller that hands over its only reference to ``raw`` frees the received bytes
    before decryption begins.
    """
    outer = parse_message(raw)
    del raw
    sender = _sender(outer)
    envelope = _envelope(outer)
    # Only the outer header fields are read from here on.
    outer = Entity(outer.headers, b"", 0, 0)
    decrypted = _decrypt(envelope, recipients=recipients, env=env)
    del envelope
    signed = _verify(decrypted, env=env)
    del decrypted
    entity = parse_entity(signed.source, signed.start, signed.end)
    wrapped = entity.content_type.type == "message/rfc822"
    if wrapped:
        # A slice of the canonical plaintext is canonical already; a decoded body may not be.
        body = entity.decoded_body()
        message = to_crlf(bytes(body)) if isinstance(body, bytes) else bytes(body)
        _check_wrapped_headers(outer, parse_entity(message))
    else:
        message = _unwrapped_message(outer, entity)
    del entity

    verified = signed.verified
    delivered: dict[str, x509.Certificate] = {}
    rejected: dict[str, AgentError] = {}
    by_domain: dict[str, x509.Certificate | AgentError] = {}
    # The validated intermediates once a domain trusts the signer; until then, what came along.
    chain: tuple[x509.Certificate, ...] | None = None
    for recipient in dict.fromkeys(recipients):
        domain = domain_of(recipient)
        if domain not in by_domain:
            try:
                anchor, path = validate_signer(
                    verified.signer,
                    verified.certificates,
                    sender=sender,
                    recipient_domain=domain,
                    env=env,
                    at=at,
                )
                by_domain[domain] = anchor
                if chain is None:
                    chain = path[1:]
            except AgentError as exc:
                by_domain[domain] = exc
            except (ValueError, UnsupportedAlgorithm) as exc:
                # A certificate from the message that parses but cannot be used (RFC 5280
                # structure broken inside an extension or key): untrusted, never a crash.
                by_domain[domain] = AgentError(Code.MALFORMED, f"unusable certificate ({exc})")
        outcome = by_domain[domain]
        if isinstance(outcome, AgentError):
            rejected[recipient] = outcome
        else:
            delivered[recipient] = outcome
    return Unprotected(
        message=message,
        sender=sender,
        signer=verified.signer,
        chain=verified.certificates if chain is None else chain,
        digest=verified.digest,
        delivered=delivered,
        rejected=rejected,
        wrapped=wrapped,
    )


def _sender(outer: Entity) -> str:
    found = addresses(outer.get_all("from"))
    if len(found) != 1:
        raise AgentError(Code.MALFORMED, "the message must have exactly one From address")
    if _CONTROL.search(found[0]):
        # RFC 5322 3.4.1 and RFC 5321 4.1.2: no address holds one. A domain-bound signer binds
        # any local part, so nothing else would stop it, and the caller would write it where
        # its reports go (a NUL is refused by PostgreSQL; a line end would forge a field).
        raise AgentError(Code.MALFORMED, "the From address holds a control character")
    return found[0]


def _envelope(outer: Entity) -> bytes:
    """The outer body's CMS (Auth)EnvelopedData, DER (RFC 8551 section 3.3)."""
    media = outer.content_type
    if media.type not in _PKCS7_MIME:
        raise AgentError(Code.NOT_ENCRYPTED, f"outer content is {media.type}")
    body = outer.decoded_body()
    if not len(body):
        raise AgentError(Code.MALFORMED, "empty application/pkcs7-mime body")
    # A body sent without transfer encoding is a view into the received bytes: copied once
    # here (the CMS parser would copy it anyway), so that the received bytes can go.
    envelope = body if isinstance(body, bytes) else bytes(body)
    kind = cms.content_type(envelope)
    if kind == cms.SIGNED:
        raise AgentError(Code.NOT_ENCRYPTED, "signed-data without encryption")
    if kind not in (cms.ENVELOPED, cms.AUTH_ENVELOPED):
        raise AgentError(Code.MALFORMED, f"unexpected CMS content type {kind}")
    return envelope


def _decrypt(envelope: bytes, *, recipients: Sequence[str], env: Environment) -> bytes:
    identities = env.keys.decryption_identities(recipients)
    if not identities:
        raise AgentError(Code.NO_DECRYPTION_KEY, "no hosted key for these recipients")
    return cms.decrypt(envelope, identities=identities)


def _verify(decrypted: bytes, *, env: Environment) -> _Signed:
    # Only the header block is read as text here: an opaque signed-data body may be binary
    # (RFC 8551 section 3.1.2: binary MIME objects must be handled), and making its line ends
    # canonical would corrupt the DER. The detached form signs text, canonical (section 3.1.1).
    head = parse_message(decrypted)
    media = head.content_type
    if media.type == "multipart/signed":
        plaintext = to_crlf(decrypted)
        # Already canonical (what a conforming sender signs): to_crlf returned the same bytes,
        # and parse_message read them exactly as parse_entity would (the same header fields and
        # body span), so the header block is not parsed a second time. Bare line ends move
        # every offset: only then is the canonical copy parsed afresh.
        entity = head if plaintext is decrypted else parse_entity(plaintext)
        return _verify_detached(entity, env=env)
    if media.type in _PKCS7_MIME:
        return _verify_opaque(head, env=env)
    raise AgentError(Code.NOT_SIGNED, f"decrypted content is {media.type}")


def _verify_detached(entity: Entity, *, env: Environment) -> _Signed:
    """``entity``: the multipart/signed, parsed from its CRLF-canonical bytes."""
    plaintext = entity.source
    boundary = entity.content_type.param("boundary")
    if boundary is None:
        raise AgentError(Code.MALFORMED, "multipart/signed without boundary")
    parts = split_multipart(plaintext, boundary, entity.body_start, entity.body_end)
    # RFC 1847 section 2.1: exactly two parts, the content and its signature.
    if len(parts) != 2:
        raise AgentError(Code.MALFORMED, "multipart/signed must have exactly two parts")
    signature_part = parse_entity(plaintext, *parts[1])
    if signature_part.content_type.type not in _PKCS7_SIGNATURE:
        raise AgentError(Code.NOT_SIGNED, "second part is not a pkcs7-signature")
    signature = signature_part.decoded_body()
    # The digest covers the exact received bytes of part 1 (RFC 1847 section 5.1).
    start, end = parts[0]
    content = memoryview(plaintext)[start:end]
    verified = cms.verify(signature, detached=content, policy=env.policy)
    return _Signed(verified, plaintext, start, end)


def _verify_opaque(entity: Entity, *, env: Environment) -> _Signed:
    body = entity.decoded_body()
    if not len(body):
        raise AgentError(Code.MALFORMED, "empty application/pkcs7-mime body")
    if cms.content_type(body) != cms.SIGNED:
        raise AgentError(Code.NOT_SIGNED, "inner CMS content is not signed-data")
    verified = cms.verify(body, detached=None, policy=env.policy)
    opaque = to_crlf(bytes(verified.content))
    return _Signed(verified, opaque, 0, len(opaque))


def _address_set(entity: Entity, name: str) -> set[str]:
    return {normalise_address(a) for a in addresses(entity.get_all(name))}


def _check_wrapped_headers(outer: Entity, inner: Entity) -> None:
    """The clear outer From/To must be the signed inner ones (RFC 8551 section 3.1): otherwise an
    attacker could re-address a signed message without breaking its signature."""
    for name in ("from", "to"):
        if _address_set(outer, name) != _address_set(inner, name):
            raise AgentError(Code.HEADER_TAMPER, f"outer {name} differs from the signed message")


def _unwrapped_message(outer: Entity, signed: Entity) -> bytes:
    """Outer RFC 5322 fields, then the signed entity's own MIME fields and body."""
    kept = b"".join(h.raw for h in outer.headers if not h.key.startswith(_CONTENT_HEADERS))
    own = b"".join(h.raw for h in signed.headers)
    return b"".join((kept, b"MIME-Version: 1.0\r\n", own, CRLF, signed.body))
