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
# RFC 5321 section 4.5.1 and RFC 2142 section 5: every mail domain accepts mail for this local
# part (any case), so each hosted domain gets it when created and it cannot be switched off.
POSTMASTER = "postmaster"

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


def is_postmaster(address: str) -> bool:
    """Whether ``address`` is a domain's reserved ``postmaster`` mailbox (local part in any
    case, RFC 5321 section 2.4)."""
    local, at, _ = address.strip().rpartition("@")
    return bool(at) and local.lower() == POSTMASTER


def delegation_refusal(address: Address, user: AbstractBaseUser) -> str:
    """Why ``user`` may not be given delegate access to ``address`` ("" when they may). The one
    rule for the webmail's sharing page and the console alike: a patient's mailbox holds their
    own health mail and is shared with no one, and a practice's mailbox (mail about other
    patients) is never opened to a patient's account."""
    if address.kind == Address.Kind.PATIENT:
        return "a patient's mailbox is not shared"
    if AddressGrant.objects.filter(user=user, address__kind=Address.Kind.PATIENT).exists():
        return "that account is a patient's: a practice mailbox is not shared with patients"
    return ""


def ensure_status_allowed(address: Address, status: str) -> None:
    """Refuse a lifecycle move that would stop ``address`` receiving mail when it is the
    postmaster mailbox: RFC 5321 section 4.5.1 says its domain MUST accept mail for it.
    Every caller that changes an address's status asks here first (console and CLI alike)."""
    if status != Address.Status.ACTIVE and is_postmaster(address.address):
        raise IdentityError(
            f"{address.address} is the domain's postmaster mailbox, which RFC 5321 requires to "
            "accept mail: it stays active (grant staff access to it instead)"
        )


def add_domain(
    name: str, *, portal: bool = False, actor: Actor = None, client: str | None = None
) -> Domain:
    """Create a hosted domain with its issuing CA (or the shared one), a domain-bound certificate
    and key, its own CA as an incoming and outgoing trust anchor, and its ``postmaster@``
    address with an address-bound certificate."""
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
        _add_postmaster(domain, actor=actor, client=client)
    return domain


def _add_postmaster(domain: Domain, *, actor: Actor, client: str | None) -> Address:
    """The domain's ``postmaster@`` mailbox: a system address, active from the start (no
    identity to proof), read by the staff granted access to it in the console."""
    row = Address.objects.create(
        address=f"{POSTMASTER}@{domain.name}",
        domain=domain,
        display_name="Postmaster",
        kind=Address.Kind.SYSTEM,
        status=Address.Status.ACTIVE,
    )
    issued = _issue_address_certificates(domain, row)
    audit.record(
        action="address.add",
        obj=row,
        actor=actor,
        client=client,
        kind=row.kind,
        user=False,
        certificates=[c.fingerprint_sha256 for c in issued],
    )
    return row


def _issue_address_certificates(domain: Domain, row: Address) -> list[Certificate]:
    if domain.issuing_ca is None:
        raise IdentityError(f"domain {domain.name} has no issuing CA")
    try:
        return issue_set(
            domain.issuing_ca,
            binding=Certificate.Binding.ADDRESS,
            name=row.address,
            domain=domain,
            address=row,
        )
    except CAError as exc:
        raise IdentityError(str(exc)) from None


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
    portal = domain.kind == Domain.Kind.PATIENT_PORTAL
    if patient and not portal:
        # A portal domain has its own CA, so partners choose separately whether to trust
        # patients (DirectTrust keeps patient and provider bundles apart): a patient under a
        # provider domain's CA would reach everyone who trusts that provider.
        raise IdentityError(f"{domain_name} is a provider domain: patient addresses belong on "
                            "a patient-portal domain (domain add NAME --portal)")
    if portal and not patient:
        raise IdentityError(f"{domain_name} is a patient-portal domain: only patient addresses "
                            "belong there (add it with --patient)")
    if Address.objects.filter(address=value).exists():
        raise IdentityError(f"address {value} already exists")
    if is_postmaster(value) and Address.objects.filter(address__iexact=value).exists():
        # Mail to postmaster in any case reaches one mailbox (find_address falls back to a
        # case-insensitive match): a second spelling would split it.
        raise IdentityError(f"the postmaster address of {domain_name} already exists")
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
        issued = _issue_address_certificates(domain, row) if address_cert else []
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
