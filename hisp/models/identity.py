"""Hosted domains, Direct addresses and who may use them."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone


class Domain(models.Model):
    class Kind(models.TextChoices):
        PROVIDER = "provider", "Provider"
        PATIENT_PORTAL = "portal", "Patient portal"

    name = models.CharField(max_length=253, unique=True)  # stored lower-case
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.PROVIDER)
    # The CA certificate (with its key) that issues this domain's certificates. Portal domains
    # get a CA of their own: patients are proofed differently from providers.
    issuing_ca = models.ForeignKey(
        "hisp.Certificate", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Per-destination setting from the sender's side lives on Route; this is our own policy.
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Address(models.Model):
    class Kind(models.TextChoices):
        CLINICIAN = "clinician", "Clinician"
        ORGANISATION = "organisation", "Organisation"
        PATIENT = "patient", "Patient"
        SYSTEM = "system", "System"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending identity proofing"
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        DISABLED = "disabled", "Disabled"

    address = models.CharField(max_length=320, unique=True)  # local@domain, domain lower-cased
    domain = models.ForeignKey(Domain, on_delete=models.PROTECT, related_name="addresses")
    display_name = models.CharField(max_length=200, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CLINICIAN)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    users = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="AddressGrant", related_name="direct_addresses"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["address"]
        verbose_name_plural = "addresses"

    def __str__(self) -> str:
        return self.address

    @property
    def local_part(self) -> str:
        return self.address.rsplit("@", 1)[0]


class AddressGrant(models.Model):
    """A user's right to a mailbox: its owner, or a delegate (read-only or read-and-send)."""

    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        READ = "read", "Delegate: read only"
        READ_SEND = "read_send", "Delegate: read and send"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    address = models.ForeignKey(Address, on_delete=models.CASCADE, related_name="grants")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.OWNER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "address"], name="one_grant_per_user_address")
        ]

    @property
    def may_send(self) -> bool:
        return self.role in (self.Role.OWNER, self.Role.READ_SEND)


class AppPassword(models.Model):
    """Per-device password for desktop mail clients on the submission port (MFA users)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="app_passwords"
    )
    name = models.CharField(max_length=100)
    password_hash = models.CharField(max_length=256)  # Django password hasher output
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)


class Invitation(models.Model):
    """A patient's invitation to set up the account that owns a patient-portal address.

    Only the SHA-256 of the token is stored: the token itself exists in the link staff hand
    over (shown once) or email, so a copy of the database cannot be turned into sign-ups.
    A 256-bit random token needs no slow hash (nothing to guess, unlike a password).
    """

    TOKEN_BYTES = 32  # 256 bits

    address = models.ForeignKey(Address, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(blank=True)  # the patient's ordinary email, when staff sent it
    token_hash = models.CharField(max_length=64, unique=True)  # hex SHA-256 of the token
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # At most one open invitation per address: issuing a new one revokes the old one
            # in the same transaction, and this index refuses a second one issued meanwhile.
            models.UniqueConstraint(
                fields=["address"],
                condition=models.Q(accepted_at__isnull=True, revoked_at__isnull=True),
                name="one_open_invitation_per_address",
            )
        ]

    def __str__(self) -> str:
        return f"invitation {self.pk} for {self.address_id}"

    @staticmethod
    def new_token() -> str:
        return secrets.token_urlsafe(Invitation.TOKEN_BYTES)

    @staticmethod
    def hash_token(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()

    def is_live(self, at: datetime | None = None) -> bool:
        """Open (not accepted, not revoked) and not expired at ``at``."""
        at = at or timezone.now()
        return self.accepted_at is None and self.revoked_at is None and self.expires_at > at
