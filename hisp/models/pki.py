"""Certificates, wrapped private keys, CRLs and the key-encryption-key verifier."""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Upper


class PrivateKey(models.Model):
    """A private key, only ever stored wrapped (envelope encryption).

    The PKCS#8 DER is encrypted under a per-key data key with AES-256-GCM; the data key is
    wrapped by the key-encryption key (KEK) from settings. Nothing here is ever rendered.
    """

    algorithm = models.CharField(max_length=32, default="rsa")
    key_bits = models.PositiveIntegerField(default=2048)
    wrapped_data_key = models.BinaryField()
    ciphertext = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __repr__(self) -> str:  # never show key bytes, even in a debugger or traceback
        return f"<PrivateKey {self.pk} {self.algorithm}-{self.key_bits} (wrapped)>"

    __str__ = __repr__


class Certificate(models.Model):
    class Binding(models.TextChoices):
        ADDRESS = "address", "Address-bound"
        DOMAIN = "domain", "Domain-bound"
        CA = "ca", "Certificate authority"

    class Source(models.TextChoices):
        HOSTED = "hosted", "Hosted (issued here)"
        DISCOVERED = "discovered", "Discovered"
        IMPORTED = "imported", "Imported"
        ANCHOR = "anchor", "Trust anchor"

    class Usage(models.TextChoices):
        DUAL = "dual", "Signing and encryption"
        SIGNING = "signing", "Signing only"
        ENCRYPTION = "encryption", "Encryption only"

    class RevocationReason(models.TextChoices):
        UNSPECIFIED = "unspecified", "Unspecified"
        KEY_COMPROMISE = "key_compromise", "Key compromise"
        CA_COMPROMISE = "ca_compromise", "CA compromise"
        AFFILIATION_CHANGED = "affiliation_changed", "Affiliation changed"
        SUPERSEDED = "superseded", "Superseded"
        CESSATION_OF_OPERATION = "cessation_of_operation", "Cessation of operation"
        CERTIFICATE_HOLD = "certificate_hold", "Certificate hold"

    der = models.BinaryField()
    subject = models.CharField(max_length=1024)
    issuer = models.CharField(max_length=1024)
    serial = models.CharField(max_length=64)  # hex
    not_before = models.DateTimeField()
    not_after = models.DateTimeField()
    fingerprint_sha256 = models.CharField(max_length=64, unique=True)
    binding = models.CharField(max_length=16, choices=Binding.choices)
    bound_name = models.CharField(max_length=320, db_index=True)  # address or domain it binds
    source = models.CharField(max_length=16, choices=Source.choices)
    usage = models.CharField(max_length=16, choices=Usage.choices, default=Usage.DUAL)
    address = models.ForeignKey(
        "hisp.Address", null=True, blank=True, on_delete=models.CASCADE,
        related_name="certificates",
    )
    domain = models.ForeignKey(
        "hisp.Domain", null=True, blank=True, on_delete=models.CASCADE,
        related_name="certificates",
    )
    issued_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="issued"
    )
    private_key = models.OneToOneField(
        PrivateKey, null=True, blank=True, on_delete=models.PROTECT, related_name="certificate"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    revocation_reason = models.CharField(
        max_length=32, choices=RevocationReason.choices, blank=True
    )
    # Set on the predecessor when a renewal publishes a new certificate; its key still decrypts
    # mail in flight.
    superseded_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["bound_name", "-not_after"]
        indexes = [
            models.Index(fields=["issued_by", "serial"]),
            # Recipients' certificates are looked up by address ignoring case (agent_env).
            models.Index(Upper("bound_name"), name="hisp_cert_bound_name_upper"),
        ]

    def __str__(self) -> str:
        return f"{self.get_binding_display()} {self.bound_name} #{self.serial}"


class CertificateRevocationList(models.Model):
    issuer = models.ForeignKey(Certificate, on_delete=models.CASCADE, related_name="crls")
    number = models.PositiveBigIntegerField()
    der = models.BinaryField()
    this_update = models.DateTimeField()
    next_update = models.DateTimeField()

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["issuer", "number"], name="crl_number_per_issuer")
        ]


class KekVerifier(models.Model):
    """One row: a known value sealed with the KEK, so a wrong KEK fails at start-up."""

    sealed = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)
    rotated_at = models.DateTimeField(null=True, blank=True)
