"""Forms for trust anchors (two-step import with fingerprint confirmation) and bundles."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from django import forms
from django.core import signing
from django.core.exceptions import ValidationError

from adminconsole import certinfo
from adminconsole.forms.confirm import confirm_field
from adminconsole.forms.fields import (
    MAX_ANCHOR_BYTES,
    MAX_BUNDLE_BYTES,
    PlainTextField,
    read_upload,
)
from hisp.models import Domain
from hisp.services import trust

# --- Trust -----------------------------------------------------------------------------------

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _domain_choice() -> forms.ModelChoiceField:
    return forms.ModelChoiceField(queryset=Domain.objects.all(), empty_label=None)


def anchor_der(data: bytes) -> bytes:
    """The DER of an anchor certificate as uploaded (or carried back by the confirmation page),
    refused when it could never act as one."""
    try:
        certificate = certinfo.load(data)
    except certinfo.NotACertificate as exc:
        raise ValidationError(f"Not a certificate: {exc}.") from None
    why = trust.unusable(certificate)  # the rule bundles and the CLI import apply too
    if why:
        raise ValidationError(f"This certificate cannot be a trust anchor here: {why}; "
                              "nothing could be verified under it.")
    if not certinfo.describe(certificate).is_ca:
        raise ValidationError("A trust anchor must be a CA certificate (basicConstraints CA).")
    return certificate.public_bytes(Encoding.DER)


class AnchorUploadForm(forms.Form):
    domain = _domain_choice()
    certificate = forms.FileField(label="Anchor certificate (PEM or DER)")
    incoming = forms.BooleanField(required=False, initial=True, label="Trust for incoming mail")
    outgoing = forms.BooleanField(required=False, initial=True, label="Trust for outgoing mail")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["domain"] = _domain_choice()

    def clean_certificate(self) -> bytes:
        return anchor_der(
            read_upload(self.cleaned_data["certificate"], limit=MAX_ANCHOR_BYTES, what="file")
        )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not cleaned.get("incoming") and not cleaned.get("outgoing"):
            raise ValidationError("Trust the anchor for incoming mail, outgoing mail, or both.")
        return cleaned


class AnchorConfirmForm(forms.Form):
    """Second step: the operator types the fingerprint the partner read out by phone."""

    domain = _domain_choice()
    certificate_pem = forms.CharField(widget=forms.HiddenInput, max_length=MAX_ANCHOR_BYTES * 2)
    incoming = forms.BooleanField(required=False, widget=forms.HiddenInput)
    outgoing = forms.BooleanField(required=False, widget=forms.HiddenInput)
    fingerprint = forms.CharField(
        label="SHA-256 fingerprint read out by the partner", max_length=200,
        help_text="Type it as you hear it; colons and spaces are ignored.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["domain"] = _domain_choice()
        self.fields["domain"].widget = forms.HiddenInput()

    def clean_certificate_pem(self) -> bytes:
        # Checked as in step one: the hidden field comes back from the browser.
        try:
            return anchor_der(self.cleaned_data["certificate_pem"].encode("ascii"))
        except (ValidationError, UnicodeEncodeError):
            raise ValidationError("The certificate was changed; upload it again.") from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        der = cleaned.get("certificate_pem")
        typed = certinfo.normalise_fingerprint(cleaned.get("fingerprint") or "")
        if der is None or "fingerprint" not in cleaned:
            return cleaned
        if not _HEX64.match(typed):
            self.add_error("fingerprint", "A SHA-256 fingerprint is 64 hexadecimal digits.")
        elif typed != certinfo.describe_der(der).fingerprint_sha256:
            self.add_error(
                "fingerprint",
                "This does not match the certificate's fingerprint. Do not import it; "
                "call the partner back on a known number.",
            )
        if not cleaned.get("incoming") and not cleaned.get("outgoing"):
            raise ValidationError("Trust the anchor for incoming mail, outgoing mail, or both.")
        return cleaned


class BundleAddForm(forms.Form):
    name = PlainTextField(max_length=200)
    domain = _domain_choice()
    url = forms.URLField(label="Bundle URL", max_length=1000, required=False, assume_scheme="https")
    upload = forms.FileField(label="or a bundle file (.p7b / .p7c / .p7m)", required=False)
    signer = forms.FileField(label="Pinned signer certificate (optional)", required=False)
    incoming = forms.BooleanField(required=False, initial=True)
    outgoing = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["domain"] = _domain_choice()

    def clean_upload(self) -> bytes | None:
        upload = self.cleaned_data.get("upload")
        if not upload:
            return None
        return read_upload(upload, limit=MAX_BUNDLE_BYTES, what="bundle")

    def clean_signer(self) -> bytes | None:
        upload = self.cleaned_data.get("signer")
        if not upload:
            return None
        data = read_upload(upload, limit=MAX_ANCHOR_BYTES, what="signer certificate")
        try:
            certificate = certinfo.load(data)
        except certinfo.NotACertificate as exc:
            raise ValidationError(f"Not a certificate: {exc}.")
        return certificate.public_bytes(Encoding.DER)

    def clean_url(self) -> str:
        url: str = self.cleaned_data.get("url") or ""
        if url and not url.lower().startswith(("https://", "http://")):
            raise ValidationError("Bundles are fetched over HTTP or HTTPS.")
        return url

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if bool(cleaned.get("url")) == bool(cleaned.get("upload")) and not self.errors:
            raise ValidationError("Give either a bundle URL or a bundle file.")
        if not cleaned.get("incoming") and not cleaned.get("outgoing"):
            raise ValidationError("Trust the bundle for incoming mail, outgoing mail, or both.")
        return cleaned


@dataclass(frozen=True)
class PendingBundle:
    """A bundle as previewed in the first step of adding it, to be added in the second."""

    name: str
    domain: int  # pk
    url: str  # "" for an uploaded file
    file_name: str  # the uploaded file's name, as shown; "" for a URL
    incoming: bool
    outgoing: bool
    signer: str  # the pinned signer certificate, base64 DER; "" for none
    digest: str  # SHA-256 hex of the bundle's bytes as previewed

    @property
    def signer_der(self) -> bytes | None:
        return base64.b64decode(self.signer) if self.signer else None


# The hidden fields come back from the browser: the preview is signed (with the staff member's
# id, so one member cannot confirm what another was shown) and an upload's bytes must hash to
# the signed digest. What was ticked is then exactly what was shown.
_PENDING_SALT = "adminconsole.bundle-add.preview"
# base64 of the largest bundle file the first step accepts
_MAX_UPLOAD_BASE64 = 4 * ((MAX_BUNDLE_BYTES + 2) // 3)
CHANGED = "The confirmation page was changed or is incomplete: nothing was added. Add the bundle again."
# What staff confirm is what they were shown: an hour later, other staff may have revoked or
# added anchors, and the page's "already trusted" column is stale.
PREVIEW_MAX_AGE = timedelta(hours=1)
STALE = ("This preview is more than an hour old: nothing was added. Add the bundle again to see "
         "what it holds now.")


class BundleConfirmForm(forms.Form):
    """Second step of adding a bundle: the preview (signed) and an upload's bytes (base64),
    carried in hidden fields, and the box ticked for the anchors shown."""

    preview = forms.CharField(
        widget=forms.HiddenInput, max_length=200_000, error_messages={"required": CHANGED,
                                                                       "max_length": CHANGED},
    )
    upload = forms.CharField(
        widget=forms.HiddenInput, required=False, max_length=_MAX_UPLOAD_BASE64, strip=False,
        error_messages={"max_length": "The bundle carried by the page is larger than "
                                      f"{MAX_BUNDLE_BYTES // 1024} KiB: nothing was added. "
                                      "Add the bundle again."},
    )
    confirm = confirm_field()

    def __init__(self, *args: Any, user_id: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user_id = user_id

    @classmethod
    def for_preview(cls, pending: PendingBundle, body: bytes, *, user_id: int) -> BundleConfirmForm:
        token = signing.dumps({"user": user_id, **asdict(pending)}, salt=_PENDING_SALT,
                              compress=True)
        upload = "" if pending.url else base64.b64encode(body).decode("ascii")
        return cls(initial={"preview": token, "upload": upload}, user_id=user_id)

    def clean_preview(self) -> PendingBundle:
        try:
            data = signing.loads(self.cleaned_data["preview"], salt=_PENDING_SALT,
                                 max_age=PREVIEW_MAX_AGE)
            if data.pop("user") != self.user_id:
                raise ValidationError(CHANGED)
            return PendingBundle(**data)
        except signing.SignatureExpired:
            raise ValidationError(STALE) from None
        except (signing.BadSignature, TypeError, KeyError, AttributeError):
            raise ValidationError(CHANGED) from None

    def clean_upload(self) -> bytes | None:
        text = self.cleaned_data.get("upload") or ""
        if not text:
            return None
        try:
            body = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValidationError(CHANGED) from None
        if len(body) > MAX_BUNDLE_BYTES:
            raise ValidationError(CHANGED)
        return body

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        pending: PendingBundle | None = cleaned.get("preview")
        if pending is None or "upload" not in cleaned:
            return cleaned
        body: bytes | None = cleaned["upload"]
        if pending.url:
            if body is not None:
                self.add_error("upload", CHANGED)
        elif body is None or hashlib.sha256(body).hexdigest() != pending.digest:
            self.add_error("upload", CHANGED)
        return cleaned

    def pending(self) -> tuple[PendingBundle, bytes | None] | None:
        """The previewed bundle (and an upload's bytes) when the hidden fields are intact,
        whether or not the box was ticked; None when the page was changed (start again)."""
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        if self.non_field_errors() or "preview" not in data or "upload" not in data:
            return None
        return data["preview"], data["upload"]


# A bundle with many thousand anchors still fits (65 characters a fingerprint).
_MAX_FINGERPRINT_LIST = 65 * 20_000


def _fingerprint_list() -> forms.CharField:
    return forms.CharField(
        widget=forms.HiddenInput, required=False, max_length=_MAX_FINGERPRINT_LIST, strip=True
    )


class BundleRefreshForm(forms.Form):
    """Second step of a refresh: the changes the staff member saw (fingerprints, carried in
    hidden fields), applied only if a fresh fetch still gives exactly these."""

    added = _fingerprint_list()
    removed = _fingerprint_list()
    confirm = confirm_field()

    @staticmethod
    def initial_for(added: list[str], removed: list[str]) -> dict[str, str]:
        return {"added": " ".join(added), "removed": " ".join(removed)}

    def _clean_list(self, name: str) -> list[str]:
        values = self.cleaned_data[name].split()
        if not all(_HEX64.match(value) for value in values):
            raise ValidationError("The preview was changed; look at the refresh again.")
        return sorted(set(values))

    def clean_added(self) -> list[str]:
        return self._clean_list("added")

    def clean_removed(self) -> list[str]:
        return self._clean_list("removed")

    def previewed(self) -> tuple[list[str], list[str]] | None:
        """(added, removed) as shown to the staff member; None when the hidden fields are not
        fingerprints (the form was not ours)."""
        if not self.is_bound or "added" not in self.data or "removed" not in self.data:
            return None
        self.is_valid()  # cleans once; errors on the box alone keep the fingerprints
        data = getattr(self, "cleaned_data", {})
        if "added" not in data or "removed" not in data:
            return None
        return data["added"], data["removed"]
