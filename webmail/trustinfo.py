"""What the trust banner says about a received message: who signed it, for which organisation,
through which anchor, and whether it was verified."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from hisp.models import Certificate, Message


@dataclass(frozen=True)
class TrustBanner:
    verified: bool
    signer: str
    organisation: str
    anchor: str


def _attribute(certificate: Certificate | None, oid: x509.ObjectIdentifier) -> str:
    if certificate is None:
        return ""
    try:
        subject = x509.load_der_x509_certificate(bytes(certificate.der)).subject
    except ValueError:
        return ""
    values = subject.get_attributes_for_oid(oid)
    return str(values[0].value) if values else ""


def banner(message: Message) -> TrustBanner | None:
    if message.direction != Message.Direction.INBOUND:
        return None
    # A mailbox entry exists only after the agent verified the signature and the trust path;
    # the content field holds that verified inner message.
    verified = bool(message.content) and bool(message.signer)
    anchor = message.anchor
    anchor_name = _attribute(anchor, NameOID.ORGANIZATION_NAME) or _attribute(
        anchor, NameOID.COMMON_NAME
    ) or (anchor.subject if anchor is not None else "")
    return TrustBanner(
        verified=verified,
        signer=message.signer,
        organisation=message.signer_organisation,
        anchor=anchor_name,
    )
