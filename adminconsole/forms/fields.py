"""Fields, validators and upload limits shared by the console forms."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

MAX_ANCHOR_BYTES = 64 * 1024  # one CA certificate; anything larger is not what we asked for
MAX_BUNDLE_BYTES = 5 * 1024 * 1024
# RFC 1035 2.3.1 labels (letters, digits, hyphen; not at the ends), at least two labels.
_DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$"
)
_FORBIDDEN_TEXT = re.compile(r"[<>\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def plain_text(value: str) -> None:
    """Free text typed by staff: no markup and no control characters (it ends up in audit
    details and pages; escaping protects the page, refusing keeps the record clean)."""
    if _FORBIDDEN_TEXT.search(value):
        raise ValidationError("Use plain text: no angle brackets or control characters.")


def domain_name(value: str) -> str:
    name = value.strip().rstrip(".").lower()
    if not _DOMAIN_RE.match(name):
        raise ValidationError("Enter a domain name such as direct.example.org.")
    return name


class DomainField(forms.CharField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=253, **kwargs)

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
