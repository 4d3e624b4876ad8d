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
