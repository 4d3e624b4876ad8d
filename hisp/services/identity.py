"""Hosted domains and Direct addresses: creating them with their CA, certificates and keys."""

from __future__ import annotations

import re

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from hisp.ca import crl as crls
from hisp.ca.authority import CAError, ca_for, issue_set
from hisp.models import Address, AddressGrant, Certificate, Domain, TrustAnchor
from hisp.services import audit

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# RFC 5321 4.1.2 dot-string local parts (quoted local parts are not offered for hosted addresses).
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")

Actor = AbstractBaseUser | str | None


class IdentityError(ValueError):
    """A domain or address cannot be created as asked (the message says why)."""


def normalise_domain(name: str) -> str:
    value = name.strip().rstrip(".").lower()
    try:
        value = value.encode("idna").decode("ascii")
    except UnicodeError:
        raise IdentityError(f"not a valid domain name: {name!r}") from None
    labels = value.split(".")
    if len(value) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise IdentityError(f"not a valid domain name: {name!r}")
    return value


def normalise_address(address: str) -> str:
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or len(local) > 64 or not _LOCAL.match(local):
        raise IdentityError(f"not a valid Direct address: {address!r}")
    return f"{local}@{normalise_domain(domain)}"


def add_domain(
    name: str, *, portal: bool = False, actor: Actor = None, client: str | None = None
) -> Domain:
    """Create a hosted domain with its issuing CA (or the shared one), a domain-bound certificate
    and key, and its own CA as an incoming and outgoing trust anchor."""
    value = normalise_domain(name)
    if Domain.objects.filter(name=value).exists():
        raise IdentityError(f"domain {value} already exists")
    with transaction.atomic():
        domain = Domain.objects.create(
            name=value, kind=Domain.Kind.PATIENT_PORTAL if portal else Domain.Kind.PROVIDER
        )
        try:
            ca = ca_for(domain)
            Domain.objects.filter(pk=domain.pk).update(issuing_ca=ca)
            domain.issuing_ca = ca
            issued = issue_set(ca, binding=Certificate.Binding.DOMAIN, name=value, domain=domain)
        except CAError as exc:
            raise IdentityError(str(exc)) from None
        # Mail between our own users is validated like any other: the domain trusts its CA.
        TrustAnchor.objects.create(
            certificate=ca,
            domain=domain,
            incoming=True,
            outgoing=True,
            confirmed_fingerprint=ca.fingerprint_sha256,
        )
        if not ca.crls.exists():
            crls.generate(ca)
        audit.record(
            action="domain.add",
            obj=domain,
            actor=actor,
            client=client,
            kind=domain.kind,
            ca=ca.fingerprint_sha256,
            certificates=[c.fingerprint_sha256 for c in issued],
        )
    return domain


def add_address(
    address: str,
    *,
    name: str = "",
    password: str | None = None,
    address_cert: bool = False,
    patient: bool = False,
    actor: Actor = None,
    client: str | None = None,  # the staff member's address, for the audit event
) -> Address:
    """Create a hosted Direct address; with a password, also a user (username = the address)
    who owns it; with ``address_cert``, an address-bound certificate and key."""
    value = normalise_address(address)
    domain_name = value.rsplit("@", 1)[1]
    domain = Domain.objects.filter(name=domain_name).first()
    if domain is None:
        raise IdentityError(f"domain {domain_name} is not hosted here (add it first)")
    if Address.objects.filter(address=value).exists():
        raise IdentityError(f"address {value} already exists")
    users = get_user_model()
    if password is not None:
        if users.objects.filter(username=value).exists():
            raise IdentityError(f"a user named {value} already exists")
        candidate = users(username=value)
        try:
            validate_password(password, user=candidate)
        except ValidationError as exc:
            raise IdentityError("password rejected: " + " ".join(exc.messages)) from None
    with transaction.atomic():
        row = Address.objects.create(
            address=value,
            domain=domain,
            display_name=name,
            kind=Address.Kind.PATIENT if patient else Address.Kind.CLINICIAN,
        )
        if password is not None:
            user = users.objects.create_user(username=value, password=password)
            AddressGrant.objects.create(user=user, address=row, role=AddressGrant.Role.OWNER)
        issued: list[Certificate] = []
        if address_cert:
            if domain.issuing_ca is None:
                raise IdentityError(f"domain {domain.name} has no issuing CA")
            try:
                issued = issue_set(
                    domain.issuing_ca,
                    binding=Certificate.Binding.ADDRESS,
                    name=value,
                    domain=domain,
                    address=row,
                )
            except CAError as exc:
                raise IdentityError(str(exc)) from None
        audit.record(
            action="address.add",
            obj=row,
            actor=actor,
            client=client,
            kind=row.kind,
            user=password is not None,
            certificates=[c.fingerprint_sha256 for c in issued],
        )
    return row
