"""Forms for domains, addresses, identity proofing and mailbox access."""

from __future__ import annotations

from datetime import date
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.utils import timezone

from adminconsole.forms.confirm import CONFIRM_REQUIRED, confirm_field
from adminconsole.forms.fields import (
    DomainField,
    PlainTextField,
    direct_address,
)
from adminconsole.models import ProofingRecord
from hisp.models import Address, AddressGrant, Domain

# --- Domains ---------------------------------------------------------------------------------


class DomainAddForm(forms.Form):
    name = DomainField(label="Domain name")
    kind = forms.ChoiceField(choices=Domain.Kind.choices, initial=Domain.Kind.PROVIDER)

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"]
        if Domain.objects.filter(name=name).exists():
            raise ValidationError("This domain is hosted already.")
        return name


# --- Addresses and proofing ------------------------------------------------------------------


class AddressFilterForm(forms.Form):
    status = forms.ChoiceField(choices=[("", "Any status"), *Address.Status.choices], required=False)
    kind = forms.ChoiceField(choices=[("", "Any kind"), *Address.Kind.choices], required=False)
    domain = forms.ModelChoiceField(
        queryset=Domain.objects.all(), required=False, empty_label="Any domain"
    )
    q = PlainTextField(label="Search", max_length=320, required=False)


class ProofingForm(forms.Form):
    proofed_by = PlainTextField(
        label="Proofed by", max_length=200, help_text="The person who checked the evidence."
    )
    method = forms.ChoiceField(choices=ProofingRecord.Method.choices)
    evidence_reference = PlainTextField(
        label="Evidence reference", max_length=200,
        help_text="Case number or document reference; never the ID number itself.",
    )
    proofed_on = forms.DateField(label="Date proofed", widget=forms.DateInput(attrs={"type": "date"}))

    def clean_proofed_on(self) -> date:
        proofed_on: date = self.cleaned_data["proofed_on"]
        if proofed_on > timezone.localdate():
            raise ValidationError("The proofing date cannot be in the future.")
        return proofed_on


# Lifecycle moves that take an address out of service: each needs a reason and a confirmation.
CONFIRMED_TRANSITIONS = ("suspend", "disable")


class StatusForm(forms.Form):
    transition = forms.ChoiceField(
        choices=[("activate", "Activate"), ("suspend", "Suspend"), ("disable", "Disable")]
    )
    note = PlainTextField(
        label="Reason", max_length=500, required=False,
        help_text="Kept in the audit log.",
    )
    confirm = confirm_field()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Activation puts nobody out of service: it is done in one step from the address page.
        self.fields["confirm"].required = False

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("transition") in CONFIRMED_TRANSITIONS:
            if not cleaned.get("note") and "note" not in self.errors:
                self.add_error("note", "Say why: the reason is kept in the audit log.")
            if not cleaned.get("confirm"):
                self.add_error("confirm", CONFIRM_REQUIRED)
        # cleaned_data is passed on as the service's keyword arguments, which the tick is not.
        cleaned.pop("confirm", None)
        return cleaned


class GrantForm(forms.Form):
    username = PlainTextField(max_length=150)
    role = forms.ChoiceField(
        choices=[
            (AddressGrant.Role.READ, AddressGrant.Role.READ.label),
            (AddressGrant.Role.READ_SEND, AddressGrant.Role.READ_SEND.label),
        ]
    )

    def clean_username(self) -> Any:
        username = self.cleaned_data["username"].strip()
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise ValidationError("No active user with this username.")
        return user


class AddressAddForm(forms.Form):
    address = forms.CharField(label="Direct address", max_length=320)
    name = PlainTextField(label="Display name", max_length=200)
    patient = forms.BooleanField(required=False, label="Patient address (portal domain)")
    address_cert = forms.BooleanField(
        required=False, initial=True, label="Issue an address-bound certificate"
    )
    with_owner = forms.BooleanField(
        required=False, initial=True,
        label="Create a webmail user for it (temporary password shown once)",
    )

    def clean_address(self) -> str:
        # identity's rule, not Django's validate_email: that one let through what the service
        # then refused (a quoted local part, a 64-character label) and missed a hosted domain
        # typed in Unicode.
        normalised = direct_address(self.cleaned_data["address"])
        domain = normalised.rpartition("@")[2]
        if not Domain.objects.filter(name=domain).exists():
            raise ValidationError("The domain of this address is not hosted here.")
        if Address.objects.filter(address=normalised).exists():
            raise ValidationError("This address exists already.")
        return normalised
