"""Forms for certificates: filters, issuing, importing, revoking and PKCS#12 export."""

from __future__ import annotations

from typing import Any

from django import forms

from adminconsole.forms.confirm import reason_field
from adminconsole.forms.fields import (
    MAX_ANCHOR_BYTES,
    PlainTextField,
    read_upload,
)
from hisp.models import Address, Certificate, Domain

# --- Certificates ----------------------------------------------------------------------------


class CertificateFilterForm(forms.Form):
    binding = forms.ChoiceField(
        choices=[("", "Any binding"), *Certificate.Binding.choices], required=False
    )
    source = forms.ChoiceField(choices=[("", "Any source"), *Certificate.Source.choices], required=False)
    expiring = forms.BooleanField(label="In use and expiring within 30 days", required=False)
    revoked = forms.ChoiceField(
        choices=[("", "Revoked or not"), ("yes", "Revoked"), ("no", "Not revoked")], required=False
    )
    domain = forms.ModelChoiceField(
        queryset=Domain.objects.all(), required=False, empty_label="Any domain"
    )
    q = PlainTextField(label="Bound to", max_length=320, required=False)


class IssueCertificateForm(forms.Form):
    binding = forms.ChoiceField(
        choices=[
            (Certificate.Binding.ADDRESS, Certificate.Binding.ADDRESS.label),
            (Certificate.Binding.DOMAIN, Certificate.Binding.DOMAIN.label),
        ]
    )
    subject = forms.CharField(label="Address or domain", max_length=320)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        binding, subject = cleaned.get("binding"), (cleaned.get("subject") or "").strip()
        if not binding or not subject:
            return cleaned
        if binding == Certificate.Binding.ADDRESS:
            local, _, domain = subject.rpartition("@")
            found = Address.objects.filter(address=f"{local}@{domain.lower()}").first()
            if found is None:
                self.add_error("subject", "No hosted address with this name.")
            cleaned["target"] = found
        else:
            found_domain = Domain.objects.filter(name=subject.lower().rstrip(".")).first()
            if found_domain is None:
                self.add_error("subject", "No hosted domain with this name.")
            cleaned["target"] = found_domain
        return cleaned


class CertificateImportForm(forms.Form):
    """A partner's certificate exchanged out of band, or a hosted address's own certificate with
    its key (an organisation that brings its own)."""

    certificate = forms.FileField(label="Certificate (PEM, DER) or PKCS#12 file")
    key = forms.FileField(label="Private key file, if separate (PEM or DER)", required=False)
    password = forms.CharField(
        label="Password of the PKCS#12 file or key", required=False, max_length=200, strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
    )

    def clean_certificate(self) -> bytes:
        return read_upload(self.cleaned_data["certificate"], limit=MAX_ANCHOR_BYTES, what="file")

    def clean_key(self) -> bytes | None:
        upload = self.cleaned_data.get("key")
        if not upload:
            return None
        return read_upload(upload, limit=MAX_ANCHOR_BYTES, what="key file")


class RevokeForm(forms.Form):
    # The code a CRL publishes says little (most are "unspecified"): as for every other
    # destructive action, staff say in their own words why, for the audit log.
    reason = forms.ChoiceField(label="Reason code (published in the CRL)",
                               choices=Certificate.RevocationReason.choices)
    note = reason_field()
    note.label = "Why (kept in the audit log)"
    confirm = forms.BooleanField(
        label="I understand that relying parties will reject this certificate from now on."
    )


class Pkcs12ExportForm(forms.Form):
    passphrase = forms.CharField(
        min_length=12, max_length=200, strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="At least 12 characters; give it to the recipient through another channel.",
    )
    passphrase_again = forms.CharField(
        max_length=200, strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"})
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("passphrase") and cleaned.get("passphrase") != cleaned.get("passphrase_again"):
            self.add_error("passphrase_again", "The two passphrases differ.")
        return cleaned
