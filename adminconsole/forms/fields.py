"""Fields, validators and upload limits shared by the console forms."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from hisp.services import identity

MAX_ANCHOR_BYTES = 64 * 1024  # one CA certificate; anything larger is not what we asked for
MAX_BUNDLE_BYTES = 5 * 1024 * 1024
# Markup, C0 controls and DEL; the bidirectional embeddings, overrides and isolates that make
# text display in another order than it reads (CVE-2021-42574, "Trojan Source"); and Unicode's
# line and paragraph separators.
_FORBIDDEN_TEXT = re.compile(
    r"[<>\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069\u2028\u2029]"
)


def plain_text(value: str) -> None:
    """Free text typed by staff: no markup, no control characters and nothing that reorders
    what a reader sees (it ends up in audit details, pages and mail headers; escaping protects
    the page, refusing keeps the record what it appears to be)."""
    if _FORBIDDEN_TEXT.search(value):
        raise ValidationError("Use plain text: no angle brackets, control characters or "
                              "invisible direction marks.")


def domain_name(value: str) -> str:
    """``value`` as identity stores a domain (``bücher.example`` as ``xn--bcher-kva.example``),
    refused in identity's words: a pattern of the console's own let through names the service
    then refused (``xn--zz.example``) and refused names it takes (internationalised ones)."""
    try:
        return identity.normalise_domain(value)
    except identity.IdentityError as exc:
        raise ValidationError(str(exc)) from None  # as the service words it, views included


def direct_address(value: str) -> str:
    """``value`` as identity stores a Direct address, refused in identity's words."""
    try:
        return identity.normalise_address(value)
    except identity.IdentityError as exc:
        raise ValidationError(str(exc)) from None


class DomainField(forms.CharField):
    # No max_length of its own: a name typed in Unicode is measured by identity in its ASCII
    # form, which is what DNS and the Domain column hold.

    def clean(self, value: Any) -> str:
        cleaned = super().clean(value)
        return domain_name(cleaned) if cleaned else cleaned


class PlainTextField(forms.CharField):
    default_validators = [plain_text]


def read_upload(upload: Any, *, limit: int, what: str) -> bytes:
    if upload.size > limit:
        raise ValidationError(f"The {what} is larger than {limit // 1024} KiB.")
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise ValidationError(f"The {what} is larger than {limit // 1024} KiB.")
    return bytes(data)
