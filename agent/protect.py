"""Outgoing: sign, wrap and encrypt one message (Direct Applicability Statement 1.3, RFC 8551)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.header import Header as EmailHeader

from cryptography import x509

from agent import cms
from agent.cms.algorithms import MICALG
from agent.errors import AgentError, Code
from agent.mime import (
    CRLF,
    Header,
    addresses,
    base64_blocks,
    base64_lines,
    domain_of,
    header_lines,
    new_boundary,
    normalise_address,
    parse_entity,
    to_crlf,
)
from agent.trust import select_recipient_certificates
from agent.types import (
    DEFAULT_PROTECT_OPTIONS,
    ContentCipher,
    Environment,
    Identity,
    Protected,
    ProtectOptions,
)

# Headers that stay on the envelope in clear, since transport needs them (RFC 8551 section 3.1
# on wrapping; MDN requests per RFC 8098). The Subject follows ProtectOptions.neutral_subject;
# everything else travels only inside, signed.
_OUTER_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "date",
        "message-id",
        "disposition-notification-to",
        "disposition-notification-options",
    }
)

_MESSAGE_RFC822 = b"Content-Type: message/rfc822\r\n"


def protect(
    message: bytes,
    *,
    sender: str,
    recipients: Sequence[str],
    env: Environment,
    at: datetime,
    options: ProtectOptions = DEFAULT_PROTECT_OPTIONS,
) -> Protected:
    """Sign ``message`` as ``sender``, wrapped as message/rfc822, and encrypt it to every usable
    certificate of every recipient. Recipients without one are reported in ``rejected`` and are
    never sent plaintext."""
    draft = _Draft.prepare(message, sender=sender, env=env, at=at, options=options)
    return draft.copy_for(recipients, env=env)


def protect_copies(
    message: bytes,
    *,
    sender: str,
    copies: Sequence[Sequence[str]],
    env: Environment,
    at: datetime,
    options: ProtectOptions = DEFAULT_PROTECT_OPTIONS,
) -> Iterator[Protected]:
    """``protect`` for each recipient list in ``copies``, signing once: the From check and the
    signed entity are shared, each copy is encrypted on its own. One ``Protected`` per copy, in
    order, each made only when asked for, so a caller that stores and lets go of each copy holds
    one at a time.

    Whole-message errors (malformed, From not the sender, no sender key) raise ``AgentError``
    here, before any copy. Recipients a copy cannot be encrypted to are in its ``rejected`` as
    ``protect`` reports them; an error that stops a copy as a whole (its encryption, the
    signature) rejects every recipient of that copy and leaves the next copies to go on, as
    separate ``protect`` calls would.
    """
    for copy in copies:
        if isinstance(copy, str | bytes):
            raise TypeError("each copy is a sequence of recipient addresses, not one address")
    draft = _Draft.prepare(message, sender=sender, env=env, at=at, options=options)
    return _each_copy(draft, copies, env=env)


def _each_copy(
    draft: _Draft, copies: Sequence[Sequence[str]], *, env: Environment
) -> Iterator[Protected]:
    for recipients in copies:
        try:
            yield draft.copy_for(recipients, env=env)
        except AgentError as exc:
            yield Protected(
                None, (), dict.fromkeys(recipients, exc), signer=draft.identity.certificate
            )


@dataclass
class _Draft:
    """A message checked for sending and, once a copy needs it, signed: what every copy of it
    shares. The signed entity is kept as pieces over the message (never copied), so keeping it
    for the next copies costs only its headers and signature."""

    message: bytes
    headers: Sequence[Header]
    identity: Identity
    sender_domain: str
    at: datetime
    options: ProtectOptions
    _signed: list[bytes] | None = None

    @classmethod
    def prepare(
        cls,
        message: bytes,
        *,
        sender: str,
        env: Environment,
        at: datetime,
        options: ProtectOptions,
    ) -> _Draft:
        message = to_crlf(message)
        entity = parse_entity(message)
        if not entity.headers:
            raise AgentError(Code.MALFORMED, "the message has no header fields")
        _require_from_is_sender(entity.get_all("from"), sender)
        identities = env.keys.signing_identities(sender)
        if not identities:
            raise AgentError(Code.NO_SENDER_KEY, "no signing key for the sender")
        return cls(message, entity.headers, identities[0], domain_of(sender), at, options)

    def signed(self) -> list[bytes]:
        # Signed on the first copy with a recipient, not before: a message no recipient can
        # receive is never signed (nor its key unwrapped).
        if self._signed is None:
            self._signed = _signed_entity(
                self.message, identity=self.identity, options=self.options, at=self.at
            )
        return self._signed

    def copy_for(self, recipients: Sequence[str], *, env: Environment) -> Protected:
        rejected: dict[str, AgentError] = {}
        chosen: dict[str, tuple[x509.Certificate, ...]] = {}
        anchors: dict[str, x509.Certificate] = {}
        for recipient in dict.fromkeys(recipients):
            try:
                certs, anchor = select_recipient_certificates(
                    recipient, sender_domain=self.sender_domain, env=env, at=self.at
                )
            except AgentError as exc:
                rejected[recipient] = exc
                continue
            chosen[recipient] = certs
            anchors[recipient] = anchor
        signer = self.identity.certificate
        if not chosen:
            return Protected(None, (), rejected, signer=signer)
        # One RecipientInfo per distinct certificate (a domain certificate may serve several).
        unique = dict.fromkeys(cert for certs in chosen.values() for cert in certs)
        envelope = cms.encrypt(
            self.signed(),
            recipients=tuple(unique),
            cipher=self.options.cipher,
            transport=self.options.key_transport,
        )
        blocks = base64_blocks(envelope)
        del envelope
        outer = _outer_headers(self.headers, self.options) + _envelope_headers(self.options.cipher)
        out = b"".join((outer, CRLF, *blocks))
        return Protected(
            out,
            tuple(chosen),
            rejected,
            recipient_certificates=chosen,
            recipient_anchors=anchors,
            signer=signer,
        )


def _require_from_is_sender(values: Sequence[str], sender: str) -> None:
    """The HISP signs only what its sender claims as their own: the From address is what the
    receiver binds our signer certificate to (Applicability Statement 4.0), so signing a From
    that names someone else would vouch for a forged sender. The whole address compares
    case-insensitively, like the binding itself (``agent.trust.binding``)."""
    found = addresses(values)
    if not found:
        raise AgentError(Code.MALFORMED, "the message has no From address")
    if len(found) != 1:
        raise AgentError(Code.SENDER_MISMATCH, "the message names more than one From address")
    if normalise_address(found[0]).lower() != normalise_address(sender).lower():
        raise AgentError(Code.SENDER_MISMATCH, "the From address is not the sender")


def _signed_entity(
    message: bytes, *, identity: Identity, options: ProtectOptions, at: datetime
) -> list[bytes]:
    """The multipart/signed entity as pieces (the message itself is never copied)."""
    # Part 1 is the whole original message as message/rfc822 (RFC 2046 section 5.2.1); its
    # body may carry 8-bit text, which the encrypted layer transports unchanged.
    encoding = b"" if message.isascii() else b"Content-Transfer-Encoding: 8bit\r\n"
    part1 = [_MESSAGE_RFC822 + encoding + CRLF, message]
    signature = cms.sign(
        part1,
        certificate=identity.certificate,
        key=identity.private_key(),
        chain=identity.chain,
        digest=options.digest,
        at=at,
    )
    boundary = new_boundary().encode("ascii")
    # RFC 1847 section 2.1 / RFC 8551 section 3.5.3: exactly two parts, micalg from the digest.
    head = (
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg='
        + MICALG[options.digest].encode("ascii")
        + b'; boundary="'
        + boundary
        + b'"\r\n\r\n'
    )
    delimiter = b"--" + boundary
    signature_part = (
        CRLF + delimiter + CRLF + b"Content-Type: application/pkcs7-signature; name=smime.p7s\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename=smime.p7s\r\n\r\n"
    )
    return [
        head + delimiter + CRLF,
        *part1,
        signature_part + base64_lines(signature) + delimiter + b"--" + CRLF,
    ]


def _outer_headers(fields: Sequence[Header], options: ProtectOptions) -> bytes:
    kept = header_lines(fields, _OUTER_HEADERS)
    if options.neutral_subject is not None:
        subject = b"Subject: " + _header_text(options.neutral_subject) + CRLF
    else:
        subject = header_lines(fields, frozenset({"subject"}))
    return kept + subject + b"MIME-Version: 1.0\r\n"


def _header_text(text: str) -> bytes:
    clean = " ".join(text.split())
    if clean.isascii():
        return clean.encode("ascii")
    return EmailHeader(clean, "utf-8").encode().encode("ascii")


def _envelope_headers(cipher: ContentCipher) -> bytes:
    # RFC 8551 section 3.3 (enveloped-data) and RFC 5083 section 2.3 (authEnveloped-data).
    smime_type = (
        b"authEnveloped-data"
        if cipher in (ContentCipher.AES128_GCM, ContentCipher.AES256_GCM)
        else b"enveloped-data"
    )
    return (
        b"Content-Type: application/pkcs7-mime; smime-type=" + smime_type + b"; name=smime.p7m\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename=smime.p7m\r\n"
    )
