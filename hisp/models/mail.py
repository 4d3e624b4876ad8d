"""Messages (raw bytes stored once), per-recipient deliveries and mailbox entries."""

from __future__ import annotations

from django.db import models


class Message(models.Model):
    class Direction(models.TextChoices):
        INBOUND = "in", "Inbound"
        OUTBOUND = "out", "Outbound"

    class Kind(models.TextChoices):
        REGULAR = "regular", "Message"
        MDN = "mdn", "Disposition notification"
        DSN = "dsn", "Delivery status notification"
        NOTICE = "notice", "Notice from this HISP"

    class State(models.TextChoices):
        RECEIVED = "received", "Received"  # inbound, stored, waiting for processing
        QUEUED = "queued", "Queued"  # outbound, waiting for protection
        PROCESSING = "processing", "Processing"  # claimed by a worker (a lease)
        DELIVERED = "delivered", "Delivered"  # inbound: in at least one mailbox
        REJECTED = "rejected", "Rejected"  # inbound: failed security or trust for everyone
        SENT = "sent", "Protected and handed to delivery"  # outbound
        FAILED = "failed", "Failed"  # outbound: no recipient could be protected for

    direction = models.CharField(max_length=3, choices=Direction.choices)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.REGULAR)
    state = models.CharField(max_length=12, choices=State.choices)
    reason = models.CharField(max_length=40, blank=True)  # agent code or flow code
    message_id = models.CharField(max_length=998, db_index=True)
    envelope_from = models.CharField(max_length=320, blank=True)
    envelope_to = models.JSONField(default=list)
    header_from = models.CharField(max_length=998, blank=True)
    header_to = models.JSONField(default=list)
    subject = models.CharField(max_length=998, blank=True)
    # The bytes as received on the wire (inbound) or as submitted (outbound), stored once.
    raw = models.BinaryField()
    # The Received field our SMTP listener stamped when it accepted the message (RFC 5321
    # section 4.4; hisp.smtp.trace), CRLF-terminated; empty for mail from webmail, the CLI and
    # ourselves. Kept beside ``raw``, which stays as received: it reads as raw's first field,
    # and outbound it is signed and encrypted with the message.
    # The database's default too: a row inserted without the column (a listener of the release
    # before, still running during an upgrade; raw SQL) gets "" rather than failing.
    trace = models.TextField(blank=True, default="", db_default="")
    # Inbound: the verified inner message; outbound: the protected message sent on the wire.
    content = models.BinaryField(null=True, blank=True)
    signer = models.CharField(max_length=320, blank=True)  # signer's bound address or domain
    # Of the signer's certificate (which stays only inside the received bytes): the organisation
    # the trust banner names, and the fingerprint that finds what a compromised one signed.
    signer_organisation = models.CharField(max_length=256, blank=True)
    signer_fingerprint = models.CharField(max_length=64, blank=True)
    # The anchor the signer chained to, when every hosted recipient's domain trusted it through
    # the same one (each domain chooses its own anchors).
    anchor = models.ForeignKey(
        "hisp.Certificate", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # For MDNs and DSNs we send or receive: the message they report on.
    original = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reports"
    )
    peer = models.CharField(max_length=255, blank=True)  # SMTP client address, or "webmail"
    claimed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Leases that expired with no result (the worker was killed, hung or lost): counted by the
    # sweeper, so a message that kills every worker taking it is given up, not retried for ever.
    abandoned = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Delivery tracking finds our message again by the Message-ID quoted in MDNs and
            # DSNs: two outbound messages may never share one, even when submitted at once.
            models.UniqueConstraint(
                fields=["message_id"],
                condition=models.Q(direction="out") & ~models.Q(message_id=""),
                name="one_outbound_message_per_message_id",
            )
        ]
        indexes = [
            models.Index(fields=["state", "claimed_at"]),
            # A sender's messages of the last hour (compose.recent_recipients): only submitted
            # mail is in it, so received mail, the bulk of the rows, costs it nothing.
            models.Index(
                fields=["envelope_from", "created_at"],
                condition=models.Q(direction="out", kind="regular"),
                name="message_sent_by_recently",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_direction_display()} {self.message_id}"


class Delivery(models.Model):
    """One recipient of one message, in either direction."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        PENDING_CERTIFICATE = "pending-certificate", "Waiting for the recipient's certificate"
        SENT = "sent", "Sent"
        DEFERRED = "deferred", "Deferred, will retry"
        FAILED = "failed", "Failed"
        PROCESSED = "processed", "Processed by the recipient's HISP"
        DISPATCHED = "dispatched", "Delivered to the recipient"
        DELIVERED = "delivered", "In the mailbox"  # inbound
        REJECTED = "rejected", "Rejected"  # inbound

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="deliveries")
    recipient = models.CharField(max_length=320)
    state = models.CharField(max_length=20, choices=State.choices)
    detail = models.CharField(max_length=500, blank=True)  # reason code or SMTP reply
    # Outbound: the wire message for this destination domain (protected once per domain).
    wire = models.BinaryField(null=True, blank=True)
    timely = models.BooleanField(default=False)  # X-DIRECT-FINAL-DESTINATION-DELIVERY asked
    attempts = models.PositiveIntegerField(default=0)
    abandoned = models.PositiveSmallIntegerField(default=0)  # as Message.abandoned, per attempt
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    first_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "recipient"], name="one_delivery_per_rcpt")
        ]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"]),
            # The console's delivery list (newest change first, optionally within a period)
            # and the dashboard's recent failures. Measured on PostgreSQL with 200,000
            # deliveries: the first page 80 ms -> 3 ms, a one-day period 20 ms -> 0.3 ms; an
            # UPDATE that changes no other indexed column ~0.03 ms dearer (it is no longer
            # HOT), one that changes the state no dearer (it never was).
            models.Index(fields=["updated_at", "id"]),
        ]


class DeliveryEvent(models.Model):
    """The per-recipient timeline shown to senders: each state a delivery passed through."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="events")
    state = models.CharField(max_length=20, choices=Delivery.State.choices)
    detail = models.CharField(max_length=500, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at", "id"]


class Folder(models.Model):
    """A user-made folder in a mailbox (the system folders are MailboxEntry.SystemFolder)."""

    address = models.ForeignKey("hisp.Address", on_delete=models.CASCADE, related_name="folders")
    name = models.CharField(max_length=100)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["address", "name"], name="folder_name_per_mailbox")
        ]


class MailboxEntry(models.Model):
    """A message as it sits in one mailbox (a hosted address): folder, read and flags."""

    class SystemFolder(models.TextChoices):
        INBOX = "inbox", "Inbox"
        SENT = "sent", "Sent"
        DRAFTS = "drafts", "Drafts"
        ARCHIVE = "archive", "Archive"
        TRASH = "trash", "Trash"
        USER = "user", "User folder"

    address = models.ForeignKey("hisp.Address", on_delete=models.CASCADE, related_name="entries")
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="entries")
    folder = models.CharField(
        max_length=10, choices=SystemFolder.choices, default=SystemFolder.INBOX
    )
    user_folder = models.ForeignKey(Folder, null=True, blank=True, on_delete=models.SET_NULL)
    read = models.BooleanField(default=False)
    flagged = models.BooleanField(default=False)
    # Denormalised for fast lists over 100,000 entries (no join to the message bytes).
    sender = models.CharField(max_length=998, blank=True)
    recipients = models.JSONField(default=list)
    subject = models.CharField(max_length=998, blank=True)
    snippet = models.CharField(max_length=200, blank=True)
    body_text = models.TextField(blank=True)  # for search
    has_attachments = models.BooleanField(default=False)
    received_at = models.DateTimeField(db_index=True)
    trashed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [
            models.Index(fields=["address", "folder", "-received_at", "-id"]),
            models.Index(fields=["address", "read"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["address", "message", "folder"], name="one_entry_per_mailbox_folder"
            )
        ]
