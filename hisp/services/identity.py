"""Hosted domains and Direct addresses: creating them with their CA, certificates and keys."""

from __future__ import annotations

import logging
import re

import idna
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from agent.discovery.names import AddressError, target_for
from hisp.ca import crl as crls
from hisp.ca.authority import CAError, ca_for, issue_set
from hisp.models import Address, AddressGrant, Certificate, Domain, Route, TrustAnchor
from hisp.services import audit

logger = logging.getLogger(__name__)

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_LONGEST_DOMAIN = 253  # RFC 1035 section 2.3.4, as text without the final dot
_LONGEST_LOCAL = 64  # RFC 5321 section 4.5.3.1.1
_LONGEST_ADDRESS = 254  # a 256-octet RFC 5321 path less its angle brackets
_LONGEST_DISPLAY_NAME = 200  # Address.display_name
_LONGEST_ECHO = 100
# Angle brackets (a name that looks like an address), C0 and C1 controls, DEL, lone surrogates (bytes that were not UTF-8), the bidirectional
# embeddings, overrides and isolates, and Unicode's line and paragraph separators.
_NOT_PLAIN = re.compile("[<>\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069"
                        "\u2028\u2029\u200e\u200f\u061c]")
# RFC 5321 4.1.2 dot-string local parts (quoted local parts are not offered for hosted addresses).
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
# RFC 5321 section 4.5.1 and RFC 2142 section 5: every mail domain accepts mail for this local
# part (any case), so each hosted domain gets it when created and it cannot be switched off.
POSTMASTER = "postmaster"
ADDRESS_REFUSED = "not a valid Direct address"  # how every refused address begins

Actor = AbstractBaseUser | str | None


class IdentityError(ValueError):
    """A domain or address cannot be created as asked (the message says why)."""


def normalise_domain(name: str) -> str:
    """``name`` as a hosted or partner Direct domain is stored: lower case, internationalised
    labels as their ASCII ``xn--`` A-labels, no final dot. Refuses what is not a DNS host name
    (RFC 1123 section 2.1, RFC 5321 section 2.3.5): an IP address literal, a single label, an
    empty label, an over-long name or label, an all-numeric last label, a label IDNA reserves.

    Two labels at least: a Direct domain publishes MX and CERT records and gets a certificate,
    none of which a bare ``localhost``-style name can have (discovery refuses those too)."""
    value = name.strip()
    if value.endswith("."):
        value = value[:-1]  # one final dot is the absolute form of the same name
    if len(value) > _LONGEST_DOMAIN * 4:
        # Longer than any name that could be valid even before IDNA: not worth encoding.
        raise IdentityError(f"not a valid domain name: {_echo(name)} (longer than "
                            f"{_LONGEST_DOMAIN} characters)")
    # ASCII is lowered, not mapped: the same stored name and refusals as before IDNA 2008.
    value = value.lower() if value.isascii() else _a_labels(name, value)
    labels = value.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise IdentityError(f"not a valid domain name: {_echo(name)}")
    if len(value) > _LONGEST_DOMAIN:
        raise IdentityError(f"not a valid domain name: {_echo(name)} (longer than "
                            f"{_LONGEST_DOMAIN} characters)")
    if len(labels) < 2:
        raise IdentityError(f"not a valid domain name: {_echo(name)} (a Direct domain has at "
                            "least two labels, such as direct.example.org)")
    if labels[-1].isdigit():
        # RFC 3696 section 2: a top-level domain is never all-numeric, which is what keeps
        # 192.0.2.1 an address and not a name.
        raise IdentityError(f"not a valid domain name: {_echo(name)} (an IP address or a "
                            "numeric top-level label is not a domain)")
    for label in labels:
        if not _valid_idna_label(label):
            raise IdentityError(f"not a valid domain name: {_echo(name)} (the label "
                                f"{_echo(label)} is not a valid internationalised label)")
    return value


def _a_labels(name: str, value: str) -> str:
    """``value`` (not ASCII) with each label as its A-label, by UTS 46 nontransitional
    mapping and IDNA 2008 (RFC 5891), as registries, browsers and dnspython (``agent/``) spell
    the name today. Python's own ``idna`` codec is IDNA 2003, which turns ``faß`` into
    ``fass`` (another domain, perhaps someone else's) and lets symbols IDNA 2008 disallows
    through; the names it gives are not the ones DNS holds."""
    try:
        # Case folding and width mapping as UTS 46 does them (str.lower() has its own rules for
        # final sigma and dotted capital I, which a browser would not follow).
        mapped = idna.uts46_remap(value, std3_rules=False)
    except idna.IDNAError:
        raise IdentityError(f"not a valid domain name: {_echo(name)} (it holds a character "
                            "that domain names cannot hold)") from None
    if mapped.endswith("."):
        mapped = mapped[:-1]  # the final dot was an ideographic one (U+3002)
    encoded = []
    for label in mapped.split("."):
        if label.isascii():
            encoded.append(label)  # judged below like any ASCII name
            continue
        try:
            encoded.append(idna.alabel(label).decode("ascii"))
        except idna.IDNAError as exc:
            raise IdentityError(f"not a valid domain name: {_echo(name)} (the label "
                                f"{_echo(label)} {_idna_refusal(exc)})") from None
    return ".".join(encoded)


def _idna_refusal(exc: idna.IDNAError) -> str:
    """Why IDNA 2008 refuses a label, in the words of the rule (its own message quotes the
    label again and names code points by position)."""
    if isinstance(exc, idna.IDNABidiError):
        return "mixes right-to-left and left-to-right text as IDNA does not allow (RFC 5893)"
    if isinstance(exc, idna.InvalidCodepointContext):
        return "holds a joiner or mark where IDNA does not allow it (RFC 5892 appendix A)"
    if isinstance(exc, idna.InvalidCodepoint):
        return "holds a character IDNA 2008 does not allow in domain names (RFC 5892)"
    if "too long" in str(exc):
        return "is longer than 63 characters in its ASCII (xn--) form"
    return "is not a valid internationalised label"


def _valid_idna_label(label: str) -> bool:
    """RFC 5890 section 2.3.1: a label with hyphens in its third and fourth places is reserved
    for IDNA; only an ``xn--`` A-label that decodes to an IDNA 2008 U-label and encodes back
    to itself is one (``xn--zz`` is not, nor IDNA 2003's ``xn--n3h`` for a snowman)."""
    if label[2:4] != "--":
        return True
    if not label.startswith("xn--"):
        return False
    try:
        return bool(idna.alabel(idna.ulabel(label)) == label.encode("ascii"))
    except UnicodeError:  # idna.IDNAError and the punycode codec's own errors
        return False


def normalise_address(address: str) -> str:
    """``address`` as a Direct address is stored: the local part as given (RFC 5321 section
    2.4 leaves its case to the receiving host), the domain by ``normalise_domain``.

    The local part is an RFC 5321 dot-string (a quoted local part, an ``@`` inside or a
    display name such as ``Dr A <a@x.org>`` is not an address) and the whole fits where a
    Direct address must go: 254 characters in an SMTP path (RFC 5321 section 4.5.3.1.3) and,
    for its address-bound certificate, a DNS owner name (Direct Applicability Statement 5.1:
    every dot-separated piece of the local part becomes a label of at most 63 octets)."""
    value = address.strip()
    local, at, domain = value.rpartition("@")
    if (
        not at
        or not local
        or len(local) > _LONGEST_LOCAL
        or not _LOCAL.match(local)
        or any(len(label) > 63 for label in local.split("."))
    ):
        raise IdentityError(f"{ADDRESS_REFUSED}: {_echo(address)}")
    try:
        stored = f"{local}@{normalise_domain(domain)}"
    except IdentityError:
        raise IdentityError(f"{ADDRESS_REFUSED}: {_echo(address)} (the domain is not "
                            "a valid domain name)") from None
    if len(stored) > _LONGEST_ADDRESS:
        raise IdentityError(f"{ADDRESS_REFUSED}: {_echo(address)} (longer than "
                            f"{_LONGEST_ADDRESS} characters)")
    try:
        target_for(stored)
    except AddressError:
        raise IdentityError(f"{ADDRESS_REFUSED}: {_echo(address)} (too long to "
                            "publish its certificate in DNS)") from None
    return stored


def normalise_display_name(name: str) -> str:
    """A display name as staff or an operator typed it, trimmed. Refused when it holds an angle
    bracket (``Dr A <a@x.org>`` would pass for an address in a From line), a control character (a line break would split the header it is put in, an escape rewrites
    the operator's terminal) or a mark that reorders text (CVE-2021-42574), or is longer than
    the column."""
    value = name.strip()
    if _NOT_PLAIN.search(value):
        raise IdentityError("the display name must be plain text: no angle brackets, control "
                            "characters or invisible direction marks")
    if len(value) > _LONGEST_DISPLAY_NAME:
        raise IdentityError(f"the display name is longer than {_LONGEST_DISPLAY_NAME} characters")
    return value


def _echo(value: str) -> str:
    """The caller's input quoted for an error message, short enough to read: services answer
    the console and the CLI, and a 100 KB name would otherwise come back whole."""
    shown = value if len(value) <= _LONGEST_ECHO else value[:_LONGEST_ECHO] + "\u2026"
    return repr(shown)


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
    address with an address-bound certificate. A route left for the domain is kept and
    reported (``unused_route``)."""
    value = normalise_domain(name)
    if Domain.objects.filter(name=value).exists():
        raise IdentityError(f"domain {value} already exists")
    route = unused_route(value)
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
            # Only when there is one: the event's shape stays what readers of the log know.
            **({"unused_route": route.target} if route is not None else {}),
        )
        _add_postmaster(domain, actor=actor, client=client)
    if route is not None:
        logger.warning(
            "domain %s is now hosted here: its route (%s) is no longer used, mail for it is "
            "delivered to its own mailboxes; remove it with `manage.py route delete %s`",
            value, route.target, value,
        )
    return domain


def unused_route(domain: str) -> Route | None:
    """The route left for ``domain`` from before it was hosted here, if any.

    Kept, not deleted, when the domain is added: ``routes.lookup`` ignores it already, and only
    the operator knows whether it is a leftover to remove or the record of where the domain's
    mail went before (hosting a partner's domain by mistake is undone more easily with its
    route and policies still there). ``add_domain`` records it in the audit event and warns."""
    return Route.objects.filter(domain=normalise_domain(domain)).first()


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
    same = Address.objects.filter(address__iexact=value).values_list("address", flat=True).first()
    if same is not None:
        # Senders do not keep the case of a local part (RFC 5321 section 2.4 only asks hosts
        # to), and find_address answers a spelling it does not store with a case-insensitive
        # match: two mailboxes differing in case would have one's health mail reach the other.
        raise IdentityError(f"address {same} already exists (addresses differing only in case "
                            "would share their mail)")
    display_name = normalise_display_name(name)
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
            display_name=display_name,
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
