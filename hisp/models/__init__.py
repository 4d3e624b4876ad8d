"""Core models, split by aggregate. Writes go through ``hisp.services``, never ``save()`` logic."""

from hisp.models.audit import AuditEvent
from hisp.models.identity import Address, AddressGrant, AppPassword, Domain, Invitation
from hisp.models.mail import (
    Delivery,
    DeliveryEvent,
    Folder,
    MailboxEntry,
    Message,
)
from hisp.models.pki import (
    Certificate,
    CertificateRevocationList,
    KekVerifier,
    PrivateKey,
)
from hisp.models.trust import Route, TrustAnchor, TrustBundle, TrustBundleEvent

__all__ = [
    "Address",
    "AddressGrant",
    "AppPassword",
    "AuditEvent",
    "Certificate",
    "CertificateRevocationList",
    "Delivery",
    "DeliveryEvent",
    "Domain",
    "Folder",
    "Invitation",
    "KekVerifier",
    "MailboxEntry",
    "Message",
    "PrivateKey",
    "Route",
    "TrustAnchor",
    "TrustBundle",
    "TrustBundleEvent",
]
