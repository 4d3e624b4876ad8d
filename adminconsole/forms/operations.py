"""Forms for routes, queues, the audit log and discovery."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

from adminconsole.forms.confirm import confirm_field, reason_field
from adminconsole.forms.fields import (
    DomainField,
    PlainTextField,
    domain_name,
)
from hisp.models import Delivery, Domain, Message
from hisp.services import compose

# --- Routes ----------------------------------------------------------------------------------

# A host name (RFC 1123 2.1 labels) or a dotted IPv4 address.
_HOST = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class RouteForm(forms.Form):
    domain = DomainField(label="Destination domain")
    host = forms.CharField(
        max_length=253, required=False,
        help_text="Leave empty to keep the domain's MX records and apply only the settings below.",
    )
    port = forms.IntegerField(min_value=1, max_value=65535, initial=25)
    require_tls = forms.BooleanField(required=False, label="Require STARTTLS")
    hold_pending_certificate = forms.BooleanField(
        required=False, label="Hold messages until a certificate is found"
    )

    def clean_host(self) -> str:
        host = self.cleaned_data["host"].strip().rstrip(".").lower()
        if host and not _HOST.match(host):
            raise ValidationError("Enter a host name or IPv4 address.")
        return host


class RouteReplaceForm(RouteForm):
    """Second step of setting a route for a domain that has one: the new route (hidden, as
    typed in step one), the route it replaces as the staff member saw it, and a reason."""

    previous = forms.CharField(widget=forms.HiddenInput, max_length=600)
    reason = reason_field()
    confirm = confirm_field()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("domain", "host", "port", "require_tls", "hold_pending_certificate"):
            self.fields[name].widget = forms.HiddenInput()


# --- Queues ----------------------------------------------------------------------------------


# How far back the message and delivery lists look; "24h" is the dashboard's window.
PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7)}
_PERIOD_CHOICES = [("", "Any time"), ("24h", "In the last 24 hours"), ("7d", "In the last 7 days")]


class MessageFilterForm(forms.Form):
    direction = forms.ChoiceField(
        choices=[("", "Both directions"), *Message.Direction.choices], required=False
    )
    state = forms.ChoiceField(choices=[("", "Any state"), *Message.State.choices], required=False)
    period = forms.ChoiceField(label="Received or sent", choices=_PERIOD_CHOICES, required=False)
    q = PlainTextField(label="Message-ID or address", max_length=320, required=False)


class DeliveryFilterForm(forms.Form):
    state = forms.ChoiceField(choices=[("", "Any state"), *Delivery.State.choices], required=False)
    period = forms.ChoiceField(label="Last changed", choices=_PERIOD_CHOICES, required=False)
    q = PlainTextField(label="Recipient", max_length=320, required=False)


class FailDeliveryForm(forms.Form):
    note = PlainTextField(
        label="Reason", max_length=200,
        help_text="Why delivery is stopped (kept in the audit log, not sent).",
    )
    confirm = confirm_field()


# --- Audit -----------------------------------------------------------------------------------


class AuditFilterForm(forms.Form):
    actor = PlainTextField(max_length=200, required=False)
    action = PlainTextField(max_length=64, required=False)
    object_type = PlainTextField(label="Object type", max_length=64, required=False)
    # As long as AuditEvent.object_id: some objects are named by an address or a domain.
    object_id = PlainTextField(label="Object id", max_length=320, required=False)
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since > until:
            raise ValidationError("The start date is after the end date.")
        return cleaned

    def filter(self, events: Any) -> Any:
        data = self.cleaned_data
        if data.get("actor"):
            events = events.filter(actor_label__icontains=data["actor"])
        if data.get("action"):
            events = events.filter(action__startswith=data["action"])
        if data.get("object_type"):
            events = events.filter(object_type=data["object_type"])
        if data.get("object_id"):
            events = events.filter(object_id=data["object_id"])
        zone = timezone.get_current_timezone()
        if data.get("since"):
            events = events.filter(at__gte=datetime.combine(data["since"], time.min, zone))
        if data.get("until"):
            events = events.filter(at__lte=datetime.combine(data["until"], time.max, zone))
        return events

    def used_filters(self) -> dict[str, str]:
        return {key: str(value) for key, value in self.cleaned_data.items() if value}


# --- Discovery -------------------------------------------------------------------------------


class DiscoveryForm(forms.Form):
    address = forms.CharField(label="Recipient's Direct address", max_length=320)
    sender_domain = forms.ModelChoiceField(
        queryset=Domain.objects.all(),
        required=False,
        empty_label="(do not check trust)",
        label="Check as a sender from",
        help_text="Whether mail from this hosted domain could be encrypted to what was found.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["sender_domain"].queryset = Domain.objects.all()

    def clean_address(self) -> str:
        return _partner_address(self.cleaned_data["address"].strip())


class FlushForm(forms.Form):
    entry = forms.CharField(label="Address or domain", max_length=320)

    def clean_entry(self) -> str:
        value = self.cleaned_data["entry"].strip()
        if "@" in value:
            return _partner_address(value)
        return domain_name(value)


def _partner_address(value: str) -> str:
    """Another HISP's address as mail to it is checked (``compose.recipient_refusal``), its
    domain in the ASCII form identity stores and discovery looks up."""
    local, _, domain = value.rpartition("@")
    address = f"{local}@{domain_name(domain)}"
    refusal = compose.recipient_refusal(address)
    if refusal:
        raise ValidationError(refusal)
    return address
