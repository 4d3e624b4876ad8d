"""Forms validate and convert; services persist."""

from __future__ import annotations

import json
import re
from datetime import datetime
from email.utils import getaddresses
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm
from django.core.validators import MaxLengthValidator, validate_email
from django.urls import reverse

from hisp.models import Address, AddressGrant, Folder
from hisp.services import compose
from webmail.phi import phi_reasons

# C0 controls (CR and LF among them) and DEL: never part of a one-line header value.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# What build_message adds around the attachments, as upper bounds: each part's own header
# fields (a long file name is encoded too) and, for the allowance the page shows before anything
# is typed, one recipient, a subject and a short text.
_PART_BYTES = 2 * 1024
_TYPICAL_FIELDS = 1024
_TEXT_ROOM = 16 * 1024


def id_from(value: object) -> int | None:
    """An object id a page sent as text (``?draft=12``, a hidden field), or None. ASCII digits
    only: str.isdigit() also accepts superscripts and other digits that int() refuses."""
    text = str(value or "")
    return int(text) if text.isascii() and text.isdigit() else None


def _base64_size(size: int) -> int:
    # Attachments and a text with long lines travel in base64: 76 characters and a CRLF for
    # every 57 bytes (RFC 2045 section 6.8).
    return -(-size // 57) * 78


def _room_for_attachments(*, certificates: int, headers: int, rest: int) -> int:
    """Bytes of attachments (in total, as files) that fit beside ``rest`` bytes of message
    once it is signed and encrypted: they are encoded in base64 twice, in the message and
    again with the whole encrypted message."""
    plain = compose.largest_plaintext(certificates=certificates, headers=headers)
    return max((plain - rest - _PART_BYTES - 78) // 78 * 57, 0)


def attachment_allowance() -> int:
    """About how many bytes of attachments a message to one recipient with a short text may
    carry and still fit HISP_MAX_MESSAGE_BYTES once signed and encrypted."""
    headers = compose.HEADER_BYTES + _TYPICAL_FIELDS
    return _room_for_attachments(
        certificates=compose.CERTIFICATES_PER_RECIPIENT,
        headers=headers,
        rest=headers + _base64_size(_TEXT_ROOM) + _PART_BYTES,
    )


def _about(size: int) -> str:
    """Rounded down, so that a file of the size named does fit."""
    if size >= compose.MB:
        return f"{int(size * 10 // compose.MB) / 10:g} MB"
    return f"{size // 1024} KB"


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


def draft_version(text: str) -> datetime | None:
    """A draft's ``updated_at`` as a compose page carries it: ISO 8601 to the microsecond
    (Django's own datetime widgets drop those, and the version is compared for equality).
    Anything else is no version: the draft is then saved without the check, as before."""
    try:
        moment = datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    return moment if moment is not None and moment.tzinfo is not None else None


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
    sender = forms.ModelChoiceField(
        queryset=Address.objects.none(), label="From", empty_label=None,
        # The usual cause: sending for a shared mailbox was revoked while the page was open.
        error_messages={"invalid_choice": "You can no longer send from this address (your "
                                          "access to it has changed). Choose another sender; "
                                          "your text is kept below."},
    )
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
    # When the page last saved the draft (its updated_at): a draft changed since in another
    # window is neither overwritten by this page's autosave nor discarded by its send.
    draft_version = forms.CharField(required=False, widget=forms.HiddenInput, max_length=64)
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
        allowance = attachment_allowance()
        attachments = self.fields["attachments"]
        attachments.help_text = (
            f"Attachments up to about {_about(allowance)} in total. Messages are signed and "
            "encrypted, which makes them about a third larger, and must then fit the "
            f"{compose.size_text(settings.HISP_MAX_MESSAGE_BYTES)} limit for secure messages."
            if allowance else
            "The size limit for secure messages leaves no room for attachments."
        )
        self.fields["subject"].widget.attrs.update({
            "hx-post": reverse("webmail:subject-check"),
            "hx-trigger": "input changed delay:400ms, change",
            "hx-target": "#phi-warning",
            "hx-swap": "innerHTML",
        })

    def clean_draft_version(self) -> datetime | None:
        return draft_version(self.cleaned_data["draft_version"])

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
        self._check_size(cleaned)
        reasons = phi_reasons(cleaned.get("subject") or "")
        if reasons and not cleaned.get("phi_confirmed"):
            self.add_error(
                "subject",
                "The subject may contain patient information ("
                + ", ".join(reasons)
                + "). Subjects are not encrypted on the wire: remove it, or confirm below.",
            )
        return cleaned

    def _check_size(self, cleaned: dict[str, Any]) -> None:
        """The message must fit HISP_MAX_MESSAGE_BYTES once signed and encrypted, estimated as
        submit() will (an upper bound on what build_message makes of these fields), so the
        clinician learns it now, not from a failure notice after a partner HISP refused it."""
        files = cleaned.get("attachments") or []
        recipients = [*(cleaned.get("to") or []), *(cleaned.get("cc") or [])]
        body = cleaned.get("body") or ""
        body_bytes = len(body.encode())
        headers = (
            compose.HEADER_BYTES
            + 2 * len(", ".join(recipients))  # To and Cc, folded
            + 3 * len((cleaned.get("subject") or "").encode())  # RFC 2047 base64 words, folded
        )
        # The text as it is (each bare LF gaining a CR) or, with long lines, in base64.
        rest = headers + max(_base64_size(body_bytes), body_bytes + body.count("\n")) + _PART_BYTES
        size = rest + sum(_base64_size(f.size) + _PART_BYTES for f in files)
        limit = int(settings.HISP_MAX_MESSAGE_BYTES)
        certificates = compose.certificates_for(recipients)
        wire = compose.protected_size(size, certificates=certificates, headers=headers)
        if wire <= limit:
            return
        room = _room_for_attachments(certificates=certificates, headers=headers, rest=rest)
        self.add_error(
            "attachments",
            f"The message is too large to send: signed and encrypted it would be about "
            f"{compose.size_text(wire)}, {compose.size_text(wire - limit)} over the "
            f"{compose.size_text(limit)} limit for secure messages. "
            + (
                f"Attachments up to about {_about(room)} in total fit in this message; send "
                "the rest in another one."
                if room else
                "Shorten the text, or send it to fewer recipients at a time."
            ),
        )


class DraftForm(forms.Form):
    """The autosave subset of the compose form: lenient, nothing is validated as addresses."""

    sender = forms.IntegerField()
    to = forms.CharField(required=False)
    cc = forms.CharField(required=False)
    subject = forms.CharField(max_length=998, required=False)
    body = forms.CharField(required=False)
    delivery_notification = forms.BooleanField(required=False)
    draft = forms.IntegerField(required=False)
    draft_version = forms.CharField(required=False, max_length=64)
    forward_of = forms.IntegerField(required=False)

    def clean_draft_version(self) -> datetime | None:
        return draft_version(self.cleaned_data["draft_version"])


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


def move_refused(form: MoveForm) -> str:
    """Why nothing was moved: most often the folder chosen was deleted since the page was shown
    (in another window, or by a colleague sharing the mailbox)."""
    if str(form.data.get("target", "")).startswith("folder:"):
        return ("Nothing was moved: that folder no longer exists (it may have been deleted in "
                "another window). Reload the page and choose another folder.")
    return "Choose a folder to move to."


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


class SignInForm(AuthenticationForm):
    """Django's sign-in form, with its user-name length enforced: AuthenticationForm sets
    ``max_length`` after the field is built, so only the browser held to it, and a longer name
    reached django-axes, whose failure record (255 characters) then failed with a 500."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        username = self.fields["username"]
        username.validators.append(MaxLengthValidator(username.max_length))


class TokenForm(forms.Form):
    token = forms.CharField(
        max_length=8, label="6-digit code",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric",
                                      "pattern": "[0-9]*", "autofocus": True}),
    )

    def clean_token(self) -> str:
        token = self.cleaned_data["token"].replace(" ", "")
        if not (token.isascii() and token.isdigit()):
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
            user = get_user_model().objects.get(username=self.cleaned_data["username"],
                                                is_active=True)
        except get_user_model().DoesNotExist:
            raise forms.ValidationError("No active user with that name.") from None
        if AddressGrant.objects.filter(user=user, address__kind=Address.Kind.PATIENT).exists():
            # A patient's account (its user name is their portal address): a practice's mail
            # about other patients is never opened to it (identity.delegation_refusal). Said as
            # for a name that does not exist: anything else would tell any practice user
            # whether an e-mail address is a patient's here.
            raise forms.ValidationError("No active user with that name.")
        return user


class NotificationForm(forms.Form):
    enabled = forms.BooleanField(required=False, label="E-mail me when a message is waiting")

