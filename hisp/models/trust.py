"""Trust anchors per hosted domain, trust bundles and static routes."""

from __future__ import annotations

from django.db import models


class TrustBundle(models.Model):
    class Result(models.TextChoices):
        NEVER = "never", "Not fetched yet"
        OK = "ok", "OK"
        UNCHANGED = "unchanged", "Unchanged"
        FETCH_ERROR = "fetch_error", "Fetch failed"
        FORMAT_ERROR = "format_error", "Not a valid bundle"
        SIGNATURE_ERROR = "signature_error", "Bad bundle signature"

    name = models.CharField(max_length=200)
    url = models.URLField(max_length=1000, blank=True)
    uploaded = models.BinaryField(null=True, blank=True)  # when added from a file
    domain = models.ForeignKey("hisp.Domain", on_delete=models.CASCADE, related_name="bundles")
    incoming = models.BooleanField(default=True)
    outgoing = models.BooleanField(default=True)
    signer_pin = models.BinaryField(null=True, blank=True)  # DER of the pinned signer cert
    refresh_interval = models.DurationField(null=True, blank=True)  # None: settings default
    last_digest = models.CharField(max_length=64, blank=True)  # SHA-256 hex of the last body
    last_fetched_at = models.DateTimeField(null=True, blank=True)
    last_result = models.CharField(max_length=20, choices=Result.choices, default=Result.NEVER)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class TrustBundleEvent(models.Model):
    """History of a bundle: each refresh, with anchors added and removed (fingerprints)."""

    bundle = models.ForeignKey(TrustBundle, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(auto_now_add=True)
    result = models.CharField(max_length=20, choices=TrustBundle.Result.choices)
    digest = models.CharField(max_length=64, blank=True)
    added = models.JSONField(default=list)
    removed = models.JSONField(default=list)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-at"]


class TrustAnchor(models.Model):
    """A CA certificate that one hosted domain trusts, for incoming and/or outgoing mail."""

    certificate = models.ForeignKey(
        "hisp.Certificate", on_delete=models.PROTECT, related_name="anchorings"
    )
    domain = models.ForeignKey("hisp.Domain", on_delete=models.CASCADE, related_name="anchors")
    incoming = models.BooleanField(default=True)
    outgoing = models.BooleanField(default=True)
    bundle = models.ForeignKey(
        TrustBundle, null=True, blank=True, on_delete=models.CASCADE, related_name="anchors"
    )
    # The SHA-256 fingerprint as shown to the operator and confirmed out of band on import.
    confirmed_fingerprint = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["domain", "incoming"]), models.Index(fields=["domain", "outgoing"])]


class Route(models.Model):
    """How mail for one destination domain leaves: to a fixed host:port instead of its MX
    records, or (``host`` empty) through its MX records with this route's policies."""

    domain = models.CharField(max_length=253, unique=True)
    host = models.CharField(max_length=253, blank=True)  # empty: the domain's MX records
    port = models.PositiveIntegerField(default=25)
    require_tls = models.BooleanField(default=False)
    # Hold deliveries without a usable certificate as pending-certificate instead of failing.
    hold_pending_certificate = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["domain"]

    def __str__(self) -> str:
        return f"{self.domain} -> {self.target}"

    @property
    def target(self) -> str:
        """``host:port``, or ``MX`` for a route that keeps the domain's MX records."""
        return f"{self.host}:{self.port}" if self.host else "MX"
