"""Forms validate and convert; services persist."""

from __future__ import annotations

import json
import re
from email.utils import getaddresses
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.validators import validate_email
from django.urls import reverse

from hisp.models import Address, AddressGrant, Folder
from webmail.phi import phi_reasons

# C0 controls (CR and LF among them) and DEL: never part of a one-line header value.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def parse_recipients(text: str) -> list[str]:
    """``a@x.org, "Dr B" <b@y.org>; c@z.org`` -> bare, domain-lower-cased addresses, once each."""
    found: list[str] = []
    for _name, address in getaddresses([text.replace(";", ",")]):
        address = address.strip()
        if not address:
            continue
        validate_email(address)
        local, _, domain = address.rpartition("@")
        normalised = f"{local}@{domain.lower()}"
        if normalised not in found:
            found.append(normalised)
    return found


class RecipientsField(forms.CharField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.TextInput(attrs={"autocomplete": "off"}))
        super().__init__(**kwargs)

    def clean(self, value: Any) -> list[str]:  # type: ignore[override]
        text = super().clean(value) or ""
        try:
            return parse_recipients(text)
        except forms.ValidationError:
            raise forms.ValidationError("Enter Direct addresses separated by commas.") from None


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[Any]:  # type: ignore[override]
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(item, initial) for item in data if item]
        return [single(data, initial)] if data else []


class ComposeForm(forms.Form):
    sender = forms.ModelChoiceField(queryset=Address.objects.none(), label="From", empty_label=None)
    to = RecipientsField(label="To")
    cc = RecipientsField(label="Cc")
    subject = forms.CharField(max_length=200, required=False)
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 14}), required=False)
    attachments = MultipleFileField(label="Attachments")
    delivery_notification = forms.BooleanField(
        required=False, initial=True, label="Request delivery confirmation",
        help_text="Ask the recipient's system to confirm delivery (timely and reliable).",
    )
    phi_confirmed = forms.BooleanField(
        required=False, label="The subject contains no patient information, send anyway",
    )
    draft = forms.IntegerField(required=False, widget=forms.HiddenInput)
    forward_of = forms.IntegerField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["sender"].queryset = Address.objects.filter(
            grants__user=user,
            grants__role__in=[AddressGrant.Role.OWNER, AddressGrant.Role.READ_SEND],
            status=Address.Status.ACTIVE,
        ).order_by("address")
        # htmx wiring of the compose page (attributes only; no inline script).
        for name in ("to", "cc"):
            self.fields[name].widget.attrs.update({
                "list": f"suggest-{name}",
                "hx-get": reverse("webmail:recipient-suggestions"),
                "hx-trigger": "input changed delay:300ms",
                "hx-target": f"#suggest-{name}",
                "hx-swap": "innerHTML",
                "hx-vals": json.dumps({"field": name}),
                "hx-sync": "this:replace",
            })
        self.fields["subject"].widget.attrs.update({
            "hx-post": reverse("webmail:subject-check"),
            "hx-trigger": "input changed delay:400ms, change",
            "hx-target": "#phi-warning",
            "hx-swap": "innerHTML",
        })

    def clean_subject(self) -> str:
        subject: str = self.cleaned_data["subject"]
        # A header field is one line (RFC 5322 section 2.2): a line break would end it and
        # start another header, so it is refused here rather than failing in the MIME builder.
        if _CONTROL.search(subject):
            raise forms.ValidationError("The subject must be a single line of text.")
        return subject

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not cleaned.get("to") and not cleaned.get("cc") and "to" not in self.errors:
            self.add_error("to", "Add at least one recipient.")
        files = cleaned.get("attachments") or []
        # Attachments travel base64-encoded (4/3, plus CRLF every 76 characters), and the whole
        # message must fit HISP_MAX_MESSAGE_BYTES on the wire.
        encoded = sum(-(-f.size // 3) * 4 * 78 // 76 for f in files)
        total = encoded + len((cleaned.get("body") or "").encode())
        if total > settings.HISP_MAX_MESSAGE_BYTES:
            limit_mb = settings.HISP_MAX_MESSAGE_BYTES / 1024 / 1024
            self.add_error(
                "attachments",
                f"The attachments are too large: once encoded the message would exceed the "
                f"{limit_mb:.0f} MB limit.",
            )
        reasons = phi_reasons(cleaned.get("subject") or "")
        if reasons and not cleaned.get("phi_confirmed"):
            self.add_error(
                "subject",
                "The subject may contain patient information ("
                + ", ".join(reasons)
                + "). Subjects are not encrypted on the wire: remove it, or confirm below.",
            )
        return cleaned


class DraftForm(forms.Form):
    """The autosave subset of the compose form: lenient, nothing is validated as addresses."""

    sender = forms.IntegerField()
    to = forms.CharField(required=False)
    cc = forms.CharField(required=False)
    subject = forms.CharField(max_length=998, required=False)
    body = forms.CharField(required=False)
    delivery_notification = forms.BooleanField(required=False)
    draft = forms.IntegerField(required=False)
    forward_of = forms.IntegerField(required=False)


class MoveForm(forms.Form):
    """Target is ``inbox``/``archive``/... or ``folder:<id>``."""

    target = forms.CharField()

    def __init__(self, *args: Any, address: Address, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.address = address

    def clean_target(self) -> tuple[str, Folder | None]:
        value = self.cleaned_data["target"]
        if value.startswith("folder:"):
            try:
                folder = Folder.objects.get(pk=int(value[7:]), address=self.address)
            except (ValueError, Folder.DoesNotExist):
                raise forms.ValidationError("No such folder.") from None
            return "user", folder
        if value in ("inbox", "archive", "trash", "sent"):
            return value, None
        raise forms.ValidationError("No such folder.")


class FolderForm(forms.Form):
    name = forms.CharField(max_length=100)

    def __init__(self, *args: Any, address: Address, folder: Folder | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.address, self.folder = address, folder

    def clean_name(self) -> str:
        name = " ".join(self.cleaned_data["name"].split())
        taken = Folder.objects.filter(address=self.address, name__iexact=name)
        if self.folder is not None:
            taken = taken.exclude(pk=self.folder.pk)
        if taken.exists():
            raise forms.ValidationError("A folder with this name exists.")
        if name.lower() in ("inbox", "sent", "drafts", "archive", "trash"):
            raise forms.ValidationError("That name is used by a standard folder.")
        return name


class ContactForm(forms.Form):
    name = forms.CharField(max_length=200, required=False)
    address = forms.EmailField(max_length=320, label="Direct address")


class AppPasswordForm(forms.Form):
    name = forms.CharField(max_length=100, label="Device or program name",
                           help_text="For example: Thunderbird on the front-desk PC.")


class TokenForm(forms.Form):
    token = forms.CharField(
        max_length=8, label="6-digit code",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric",
                                      "pattern": "[0-9]*", "autofocus": True}),
    )

    def clean_token(self) -> str:
        token = self.cleaned_data["token"].replace(" ", "")
        if not token.isdigit():
            raise forms.ValidationError("The code is 6 digits.")
        return token


# A registration answer with a long attestation chain stays well under this; it bounds the work
# done on a hostile post before the parser sees it.
_CREDENTIAL_MAX = 64 * 1024


class SecurityKeyForm(forms.Form):
    """Naming a new key; ``credential`` is what webauthn.js put there after the key was touched."""

    name = forms.CharField(max_length=64, label="Name of the key",
                           help_text="For example: blue YubiKey, or laptop fingerprint reader.")
    credential = forms.CharField(max_length=_CREDENTIAL_MAX, widget=forms.HiddenInput,
                                 error_messages={"required": "Touch your security key first."})


class SecurityKeyAssertionForm(forms.Form):
    credential = forms.CharField(max_length=_CREDENTIAL_MAX, widget=forms.HiddenInput)


class PasswordConfirmForm(forms.Form):
    """Removing a second factor asks for the password again: an unattended signed-in screen
    must not be enough to weaken the account."""

    password = forms.CharField(label="Your password", strip=False,
                               widget=forms.PasswordInput(attrs={"autocomplete": "current-password",
                                                                 "autofocus": True}))

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        if not self.user.check_password(password):
            raise forms.ValidationError("That is not your password.")
        return str(password)


class DelegateForm(forms.Form):
    username = forms.CharField(max_length=150, label="User name")
    role = forms.ChoiceField(choices=[
        (AddressGrant.Role.READ, "Read only"),
        (AddressGrant.Role.READ_SEND, "Read and send"),
    ])

    def clean_username(self) -> Any:
        try:
            return get_user_model().objects.get(username=self.cleaned_data["username"], is_active=True)
        except get_user_model().DoesNotExist:
            raise forms.ValidationError("No active user with that name.") from None


class NotificationForm(forms.Form):
    enabled = forms.BooleanField(required=False, label="E-mail me when a message is waiting")

