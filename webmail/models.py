"""Webmail-only state: personal contacts, drafts, "a message is waiting" notices and security
keys.

Mailboxes, messages and grants are core models in ``hisp.models``; these belong to one user.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django_otp.models import Device, TimestampMixin


class Contact(models.Model):
    """A personal address-book entry, offered by recipient autocomplete."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mail_contacts"
    )
    address = models.CharField(max_length=320)
    name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "address"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "address"], name="one_contact_per_address")
        ]

    def __str__(self) -> str:
        return f"{self.name} <{self.address}>" if self.name else self.address


class Draft(models.Model):
    """An unsent message, saved as the user types (autosave) and listed in Drafts."""

    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mail_drafts"
    )
    address = models.ForeignKey("hisp.Address", on_delete=models.CASCADE, related_name="drafts")
    to = models.TextField(blank=True)
    cc = models.TextField(blank=True)
    subject = models.CharField(max_length=998, blank=True)
    body = models.TextField(blank=True)
    delivery_notification = models.BooleanField(default=True)
    # The mailbox entry this draft replies to or forwards (its attachments travel on forward).
    forward_of = models.ForeignKey(
        "hisp.MailboxEntry", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["address", "-updated_at"])]


class NotificationPreference(models.Model):
    """Opt-in notice to the user's ordinary e-mail address; it never carries PHI."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mail_notification"
    )
    enabled = models.BooleanField(default=False)
    last_sent_at = models.DateTimeField(null=True, blank=True)


class WebAuthnDevice(TimestampMixin, Device):
    """A security key or passkey registered as a second factor (``webmail.securitykeys``).

    A django-otp device, so ``django_otp.login`` and ``is_verified()`` treat a signed assertion
    exactly as a TOTP code, and ``devices_for_user`` counts it wherever a second factor is asked
    about (app-password-only submission, the staff console). It never verifies a typed token.
    """

    # base64url of the raw id (at most 1,023 bytes, W3C WebAuthn L2 §5.8.3), as browsers write it.
    credential_id = models.CharField(max_length=1400, unique=True)
    public_key = models.BinaryField()  # COSE_Key (RFC 9052 §7), as the authenticator gave it
    sign_count = models.PositiveBigIntegerField(default=0)
    transports = models.JSONField(default=list, blank=True)  # hints for the browser: usb, nfc, ...

    class Meta(Device.Meta):
        verbose_name = "security key"
        ordering = ["created_at", "id"]


class ApiSubmission(models.Model):
    """An ``Idempotency-Key`` a program sent a message with (webmail.api.submissions): the same
    request again is answered as the first was, and the message goes out once.

    The row is inserted in the transaction that submits the message, so a second request with
    the same key waits on the unique index until the first commits (then finds this row) or
    rolls back (then submits itself). ``message`` is empty only inside that transaction."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_submissions"
    )
    key = models.CharField(max_length=200)
    # SHA-256 (hex) of the body's media type and bytes: what "the same request" means.
    digest = models.CharField(max_length=64)
    message = models.ForeignKey(
        "hisp.Message", null=True, on_delete=models.CASCADE, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="one_submission_per_key")
        ]
