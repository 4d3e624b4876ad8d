"""Identity-proofing records kept by staff before an address is activated."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ProofingRecord(models.Model):
    """How and by whom the person or organisation behind an address was identity-proofed.

    DirectTrust accreditation asks a HISP to proof identity before issuing credentials (NIST
    SP 800-63 IAL2 for providers); this row is the evidence trail the audit event points at.
    """

    class Method(models.TextChoices):
        IN_PERSON_GOVERNMENT_ID = "in_person_id", "In person with government photo ID"
        REMOTE_SUPERVISED = "remote_supervised", "Remote supervised with government photo ID"
        NOTARISED_FORM = "notarised_form", "Notarised application form"
        ORGANISATION_ATTESTATION = "org_attestation", "Attestation by a proofed organisation"
        LICENCE_REGISTRY = "licence_registry", "Checked against a professional licence registry"

    address = models.ForeignKey(
        "hisp.Address", on_delete=models.CASCADE, related_name="proofing_records"
    )
    proofed_by = models.CharField(max_length=200)  # the person who checked the evidence
    method = models.CharField(max_length=32, choices=Method.choices)
    evidence_reference = models.CharField(max_length=200)  # e.g. a case or document number
    proofed_on = models.DateField()
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-proofed_on", "-id"]

    def __str__(self) -> str:
        return f"{self.get_method_display()} on {self.proofed_on}"
