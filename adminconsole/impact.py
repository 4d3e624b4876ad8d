"""What a destructive console action is about to do, in names and counts, for the page that asks
a staff member to confirm it.

Read-only: these functions describe and count, nothing more. The actions themselves (and the
final word on whether they are allowed) stay in ``adminconsole.services`` and ``hisp.services``;
``blocked`` only spares the staff member a form that the service would refuse anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef

from adminconsole import services
from hisp.ca.authority import scope_domains, successor
from hisp.certificates import fingerprint
from hisp.models import (
    Address,
    AddressGrant,
    Certificate,
    Delivery,
    Domain,
    Message,
    Route,
    TrustAnchor,
    TrustBundle,
)
from hisp.services import identity, trust

# How far back the anchor page counts the messages that were verified under the anchor.
RECENT = timedelta(days=30)
# Outbound deliveries still waiting for an attempt, which follow a route change at the next one.
WAITING = (Delivery.State.QUEUED, Delivery.State.DEFERRED, Delivery.State.PENDING_CERTIFICATE)


@dataclass(frozen=True)
class Fact:
    label: str
    value: str
    # "code": Message-IDs and SMTP replies, monospaced; "fingerprint": large, to be read out.
    style: Literal["text", "code", "fingerprint"] = "text"


@dataclass(frozen=True)
class AnchorChange:
    """One anchor a bundle refresh starts or stops trusting."""

    change: Literal["added", "removed"]
    subject: str
    fingerprint: str  # colon form, to be read out
    domain: str  # the hosted domain whose trust changes, and for which mail
    note: str = ""  # when the change does not change trust (another anchor covers it)


@dataclass(frozen=True)
class Impact:
    title: str  # what is about to happen, naming the object
    facts: tuple[Fact, ...]  # the object, as the staff member should recognise it
    effects: tuple[str, ...]  # plain sentences, with the counts of what else is touched
    statement: str  # the sentence the staff member ticks
    button: str
    blocked: str = ""  # why the action cannot be done now; empty when it can
    anchors: tuple[AnchorChange, ...] = ()  # the anchors a bundle refresh adds and removes
    no_change: str = ""  # the action would change nothing: said instead of asking


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _colons(fingerprint: str) -> str:
    """The SHA-256 fingerprint as read out over the phone (as on the anchor import page)."""
    upper = fingerprint.upper()
    return ":".join(upper[i : i + 2] for i in range(0, len(upper), 2))


def anchor_removal(anchor: TrustAnchor, *, now: datetime) -> Impact:
    certificate, domain = anchor.certificate, anchor.domain
    blocked = ""
    if anchor.bundle_id is not None:
        blocked = (
            f"This anchor comes from the bundle {anchor.bundle}: "
            "remove the bundle instead (its next refresh would bring the anchor back)."
        )
    elif anchor.certificate_id == domain.issuing_ca_id:
        blocked = "This is the domain's own issuing CA: a domain always trusts its own CA."
    addresses = _count(domain.addresses.count(), "address", "addresses")
    effects = []
    if anchor.incoming:
        effects.append(
            f"Incoming mail signed under this anchor is refused for the {addresses} of "
            f"{domain.name}: senders whose certificates chain to it can no longer write to them."
        )
    if anchor.outgoing:
        effects.append(
            f"Mail from the {addresses} of {domain.name} is no longer encrypted to recipients "
            "whose certificates chain to it: such deliveries fail or wait for another certificate."
        )
    recent = Message.objects.filter(anchor=certificate, created_at__gte=now - RECENT).count()
    effects.append(
        f"{_count(recent, 'message was', 'messages were')} verified under this anchor in the "
        "last 30 days (all hosted domains)."
    )
    others = (
        TrustAnchor.objects.filter(certificate=certificate)
        .exclude(domain=domain)
        .values("domain")
        .distinct()
        .count()
    )
    effects.append(
        f"{_count(others, 'other hosted domain trusts', 'other hosted domains trust')} the same "
        "certificate and keep trusting it."
    )
    effects.append("To trust it again, import it again and confirm its fingerprint with the partner.")
    return Impact(
        title=f"Stop trusting {certificate.subject} for {domain.name}",
        facts=(
            Fact("Domain", domain.name),
            Fact("Anchor subject", certificate.subject),
            Fact("Issuer", certificate.issuer),
            Fact("SHA-256 fingerprint", _colons(certificate.fingerprint_sha256), "fingerprint"),
            Fact("Valid to", f"{certificate.not_after:%Y-%m-%d}"),
            Fact("Trusted for", ", ".join(
                word for word, on in (("incoming", anchor.incoming), ("outgoing", anchor.outgoing))
                if on
            ) or "nothing"),
            Fact("Imported", f"{anchor.created_at:%Y-%m-%d}"
                 + (", fingerprint confirmed" if anchor.confirmed_fingerprint else "")),
        ),
        effects=tuple(effects),
        statement=f"I understand that {domain.name} stops trusting this anchor now.",
        button="Stop trusting",
        blocked=blocked,
    )


def route_deletion(route: Route) -> Impact:
    waiting = Delivery.objects.filter(
        message__direction=Message.Direction.OUTBOUND,
        recipient__iendswith=f"@{route.domain}",
        state__in=WAITING,
    ).count()
    if route.host:
        effects = [
            f"Mail for {route.domain} stops going to {route.host}:{route.port} and goes to the "
            "domain's MX records instead."
        ]
    else:
        effects = [f"Mail for {route.domain} keeps going through its MX records."]
    if route.require_tls:
        effects.append(
            "STARTTLS is no longer required: it is used when the receiving server offers it."
        )
    if route.hold_pending_certificate:
        effects.append(
            "A message for a recipient without a usable certificate fails at once instead of "
            "waiting for one."
        )
    effects.append(
        f"{_count(waiting, 'delivery', 'deliveries')} to {route.domain} waiting in the queue "
        "will use the default path and settings from the next attempt."
    )
    effects.append("To undo, set the route again.")
    return Impact(
        title=f"Delete the route for {route.domain}",
        facts=(
            Fact("Destination domain", route.domain),
            Fact("Goes to", f"{route.host}:{route.port}" if route.host else "its MX records"),
            Fact("STARTTLS required", _yes_no(route.require_tls)),
            Fact("Hold without certificate", _yes_no(route.hold_pending_certificate)),
        ),
        effects=tuple(effects),
        statement=f"I understand that mail for {route.domain} uses the default path from now on.",
        button="Delete the route",
    )


def _where(route: Route) -> str:
    return f"{route.host}:{route.port}" if route.host else "its MX records"


def _before_after(before: str, after: str) -> str:
    return before if before == after else f"{before} → {after}"


def route_replacement(route: Route, new: Route) -> Impact:
    """Setting a route for a domain that has one: ``new`` is the unsaved replacement."""
    domain = route.domain
    if _where(route) != _where(new):
        effects = [f"Mail for {domain} goes to {_where(new)} instead of {_where(route)}."]
    else:
        effects = [f"Mail for {domain} keeps going to {_where(route)}."]
    if route.require_tls and not new.require_tls:
        effects.append(
            "STARTTLS is no longer required: it is used when the receiving server offers it."
        )
    elif new.require_tls and not route.require_tls:
        effects.append(
            f"STARTTLS is required from now on: a server that does not offer it gets no mail for "
            f"{domain}, and the deliveries wait and retry."
        )
    if route.hold_pending_certificate and not new.hold_pending_certificate:
        effects.append(
            "A message for a recipient without a usable certificate fails at once instead of "
            "waiting for one."
        )
    elif new.hold_pending_certificate and not route.hold_pending_certificate:
        effects.append(
            "A message for a recipient without a usable certificate waits for one instead of "
            "failing at once."
        )
    waiting = Delivery.objects.filter(
        message__direction=Message.Direction.OUTBOUND,
        recipient__iendswith=f"@{domain}",
        state__in=WAITING,
    ).count()
    effects.append(
        f"{_count(waiting, 'delivery', 'deliveries')} to {domain} waiting in the queue "
        "will follow the new route from the next attempt."
    )
    effects.append(
        f"To undo, set the route again as it was: {_where(route)}, STARTTLS required "
        f"{_yes_no(route.require_tls)}, hold without certificate "
        f"{_yes_no(route.hold_pending_certificate)}."
    )
    return Impact(
        title=f"Replace the route for {domain}",
        facts=(
            Fact("Destination domain", domain),
            Fact("Goes to", _before_after(_where(route), _where(new))),
            Fact("STARTTLS required",
                 _before_after(_yes_no(route.require_tls), _yes_no(new.require_tls))),
            Fact("Hold without certificate",
                 _before_after(_yes_no(route.hold_pending_certificate),
                               _yes_no(new.hold_pending_certificate))),
        ),
        effects=tuple(effects),
        statement=f"I understand that the route for {domain} is replaced now.",
        button="Replace the route",
    )


def _bundle_facts(bundle: TrustBundle) -> list[Fact]:
    directions = " and ".join(
        word for word, on in (("incoming", bundle.incoming), ("outgoing", bundle.outgoing)) if on
    )
    return [
        Fact("Bundle", bundle.name),
        Fact("Domain", bundle.domain.name),
        Fact("Source", bundle.url or "uploaded file", "code" if bundle.url else "text"),
        Fact("Trusted for", f"{directions} mail" if directions else "nothing"),
        Fact("Pinned signer", _yes_no(bool(bundle.signer_pin))),
    ]


def bundle_refresh_failure(bundle: TrustBundle, error: str) -> Impact:
    return Impact(
        title=f"Refresh the bundle {bundle.name}",
        facts=tuple(_bundle_facts(bundle)),
        effects=(),
        statement="",
        button="",
        blocked=f"Refresh failed: {error}. Nothing was changed: the existing anchors were kept.",
    )


def bundle_refresh(change: trust.BundleChange, *, now: datetime) -> Impact:
    """What applying ``change`` (fetched and verified, not applied) does to the bundle's domain."""
    bundle = change.bundle
    domain = bundle.domain
    facts = _bundle_facts(bundle)
    facts.append(Fact("Bundle SHA-256", change.digest, "code"))
    listed = len(change.added) + change.kept
    facts.append(Fact("Anchors listed", str(listed)))
    if change.skipped:  # listed, but never trusted here: said, not silently left out
        facts.append(Fact("Not usable here", trust.skipped_text(change.skipped)))
    title = f"Refresh the bundle {bundle.name}"
    if change.unchanged:
        return Impact(
            title=title, facts=tuple(facts), effects=(), statement="", button="",
            no_change=(
                f"Refreshing changes nothing: the bundle lists the same "
                f"{_count(listed, 'anchor', 'anchors')} that {domain.name} trusts from it now."
            ),
        )
    # A certificate the domain also trusts outside this bundle (imported by hand, or from
    # another bundle) keeps or already has its trust: the change is real only for the others.
    elsewhere = set(
        TrustAnchor.objects.filter(domain=domain)
        .exclude(bundle=bundle)
        .values_list("certificate__fingerprint_sha256", flat=True)
    )
    directions = " and ".join(
        word for word, on in (("incoming", bundle.incoming), ("outgoing", bundle.outgoing)) if on
    )
    where = f"{domain.name} ({directions} mail)"
    rows = [
        AnchorChange(
            "added", certificate.subject.rfc4514_string(), _colons(fp), where,
            "already trusted through another anchor" if fp in elsewhere else "",
        )
        for certificate, fp in ((c, fingerprint(c)) for c in change.added)
    ]
    rows += [
        AnchorChange(
            "removed", row.subject, _colons(row.fingerprint_sha256), where,
            "still trusted through another anchor" if row.fingerprint_sha256 in elsewhere else "",
        )
        for row in change.removed
    ]
    effects = []
    if change.added:
        effects.append(
            f"{domain.name} starts trusting "
            f"{_count(len(change.added), 'anchor', 'anchors')} from this bundle for "
            f"{directions} mail."
        )
    lost = [row for row in change.removed if row.fingerprint_sha256 not in elsewhere]
    if lost:
        addresses = _count(domain.addresses.count(), "address", "addresses")
        them = _count(len(lost), "removed anchor", "removed anchors")
        it = "it" if len(lost) == 1 else "them"
        if bundle.incoming:
            effects.append(
                f"Incoming mail signed under the {them} is refused for the {addresses} of "
                f"{domain.name}: senders whose certificates chain to {it} can no longer write "
                "to them."
            )
        if bundle.outgoing:
            effects.append(
                f"Mail from the {addresses} of {domain.name} is no longer encrypted to "
                f"recipients whose certificates chain to the {them}: such deliveries fail or "
                "wait for another certificate."
            )
        recent = Message.objects.filter(anchor__in=lost, created_at__gte=now - RECENT).count()
        effects.append(
            f"{_count(recent, 'message was', 'messages were')} verified under the {them} in "
            "the last 30 days (all hosted domains)."
        )
    if change.removed:
        effects.append(
            "A removed anchor is trusted again only when the bundle lists it again, or when it "
            "is imported by hand."
        )
    effects.append(
        f"{_count(change.kept, 'other anchor', 'other anchors')} from this bundle "
        f"{'stays' if change.kept == 1 else 'stay'} as {'it is' if change.kept == 1 else 'they are'}."
    )
    effects.append(
        "Only the changes listed here are applied: if the bundle is different when you confirm, "
        "nothing is applied and the new changes are shown."
    )
    return Impact(
        title=title,
        facts=tuple(facts),
        effects=tuple(effects),
        statement=(
            f"I have checked these anchors, and {domain.name} starts and stops trusting them now."
        ),
        button="Apply the refresh",
        anchors=tuple(rows),
    )


def bundle_removal(bundle: TrustBundle, *, now: datetime) -> Impact:
    """Removing a bundle: the domain stops trusting every anchor it brought, unless the same
    certificate is trusted for the domain another way (imported by hand, or another bundle)."""
    domain = bundle.domain
    directions = " and ".join(
        word for word, on in (("incoming", bundle.incoming), ("outgoing", bundle.outgoing)) if on
    )
    fingerprints = set(
        TrustAnchor.objects.filter(bundle=bundle).values_list(
            "certificate__fingerprint_sha256", flat=True
        )
    )
    elsewhere = set(
        TrustAnchor.objects.filter(domain=domain, certificate__fingerprint_sha256__in=fingerprints)
        .exclude(bundle=bundle)
        .values_list("certificate__fingerprint_sha256", flat=True)
    )
    lost = fingerprints - elsewhere
    facts = _bundle_facts(bundle)
    facts.append(Fact("Anchors from it", str(len(fingerprints))))
    facts.append(Fact("Last fetched", f"{bundle.last_fetched_at:%Y-%m-%d %H:%M}"
                      if bundle.last_fetched_at else "never"))
    effects = [
        f"{domain.name} stops trusting the {_count(len(fingerprints), 'anchor', 'anchors')} "
        f"from this bundle for {directions} mail."
        + (f" {len(elsewhere)} of them stay trusted through another anchor (imported by hand "
           "or from another bundle)." if elsewhere else "")
    ]
    if lost:
        addresses = _count(domain.addresses.count(), "address", "addresses")
        if bundle.incoming:
            effects.append(
                f"Incoming mail signed under these anchors is refused for the {addresses} of "
                f"{domain.name}: senders whose certificates chain to them can no longer write "
                "to them."
            )
        if bundle.outgoing:
            effects.append(
                f"Mail from the {addresses} of {domain.name} is no longer encrypted to recipients "
                "whose certificates chain to these anchors: such deliveries fail or wait for "
                "another certificate."
            )
        recent = Message.objects.filter(
            anchor__fingerprint_sha256__in=lost, created_at__gte=now - RECENT
        ).count()
        effects.append(
            f"{_count(recent, 'message was', 'messages were')} verified under these anchors in "
            "the last 30 days (all hosted domains)."
        )
    effects.append(
        "The bundle is no longer fetched, and its fetch history goes with it; the audit log "
        "keeps this removal with the fingerprints of its anchors and what each refresh changed."
    )
    effects.append("To trust its anchors again, add the bundle again and check them.")
    return Impact(
        title=f"Remove the bundle {bundle.name} from {domain.name}",
        facts=tuple(facts),
        effects=tuple(effects),
        statement=(
            f"I understand that {domain.name} stops trusting the anchors of {bundle.name} now."
        ),
        button="Remove the bundle",
    )


@dataclass(frozen=True)
class ListedAnchor:
    """One anchor of a bundle about to be added, as the staff member checks it."""

    subject: str
    fingerprint: str  # colon form, to be read out
    valid_to: str
    expired: bool
    trusted: str  # how the domain already trusts it ("" when it does not)


@dataclass(frozen=True)
class BundleAddition:
    impact: Impact
    anchors: tuple[ListedAnchor, ...]


def _already_trusted(rows: list[TrustAnchor]) -> str:
    if not rows:
        return ""
    ways = []
    for row in rows:
        directions = " and ".join(
            word for word, on in (("incoming", row.incoming), ("outgoing", row.outgoing)) if on
        )
        source = (
            f"bundle {row.bundle.name}" if row.bundle_id is not None
            else "its own CA" if row.certificate_id == row.domain.issuing_ca_id
            else "imported by hand"
        )
        ways.append(f"{directions or 'no'} mail ({source})")
    return "yes, for " + "; ".join(ways)


def _every(interval: timedelta) -> str:
    seconds = int(interval.total_seconds())
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size and seconds % size == 0:
            return _count(seconds // size, unit, unit + "s")
    return _count(seconds, "second", "seconds")


def bundle_addition(
    preview: trust.BundlePreview,
    *,
    name: str,
    incoming: bool,
    outgoing: bool,
    file_name: str,
    now: datetime,
    refresh_interval: timedelta,
) -> BundleAddition:
    """What adding the previewed (fetched and verified, not stored) bundle trusts, and for whom."""
    domain = preview.domain
    directions = " and ".join(
        word for word, on in (("incoming", incoming), ("outgoing", outgoing)) if on
    )
    existing: dict[str, list[TrustAnchor]] = {}
    fingerprints = [fingerprint(c) for c in preview.anchors]
    for row in (
        TrustAnchor.objects.filter(domain=domain, certificate__fingerprint_sha256__in=fingerprints)
        .select_related("certificate", "bundle", "domain")
        .order_by("pk")
    ):
        existing.setdefault(row.certificate.fingerprint_sha256, []).append(row)
    rows = tuple(
        ListedAnchor(
            subject=certificate.subject.rfc4514_string(),
            fingerprint=_colons(fp),
            valid_to=f"{certificate.not_valid_after_utc:%Y-%m-%d}",
            expired=certificate.not_valid_after_utc <= now,
            trusted=_already_trusted(existing.get(fp, [])),
        )
        for certificate, fp in zip(preview.anchors, fingerprints, strict=True)
    )
    count = len(rows)
    anchors = _count(count, "anchor", "anchors")
    if preview.url:
        source = Fact("Source", preview.url, "code")
    else:
        source = Fact("Source", f"uploaded file {file_name}" if file_name else "uploaded file")
    signer = preview.signer
    facts = (
        Fact("Bundle", name),
        Fact("Domain", domain.name),
        Fact("Trusted for", f"{directions} mail"),
        source,
        Fact("Bundle SHA-256", preview.digest, "code"),
        Fact(
            "Pinned signer",
            f"{signer.subject.rfc4514_string()} ({_colons(fingerprint(signer))}), "
            "signature checked" if signer is not None else "none",
        ),
        Fact("Anchors listed", str(count)),
    ) + (
        # Listed, but never trusted here: said, not silently left out.
        (Fact("Not usable here", trust.skipped_text(preview.skipped)),) if preview.skipped else ()
    )
    known = sum(1 for row in rows if row.trusted)
    effects = [
        f"{domain.name} starts trusting the {anchors} listed above for {directions} mail."
        + (f" It already trusts {known} of them; their trust is kept as it is." if known else ""),
    ]
    addresses = _count(domain.addresses.count(), "address", "addresses")
    if incoming:
        effects.append(
            f"Mail signed under these anchors is accepted for the {addresses} of {domain.name}."
        )
    if outgoing:
        effects.append(
            f"Mail from the {addresses} of {domain.name} is encrypted to recipients whose "
            "certificates chain to these anchors."
        )
    expired = sum(1 for row in rows if row.expired)
    if expired:
        effects.append(
            f"{_count(expired, 'anchor has', 'anchors have')} expired: listed, but no "
            "certificate verifies under an expired anchor."
        )
    if preview.url:
        effects.append(
            f"The bundle is fetched again every {_every(refresh_interval)} and applied without another "
            "confirmation: anchors its publisher adds are trusted, anchors it drops are not."
        )
    effects.append(
        "Only this bundle is added: if it is different when you confirm (its SHA-256 above), "
        "nothing is added and what it holds then is shown instead."
    )
    return BundleAddition(
        impact=Impact(
            title=f"Add the bundle {name} for {domain.name}",
            facts=facts,
            effects=tuple(effects),
            statement=(
                f"I have checked these {anchors} and trust them for {domain.name} "
                f"({directions} mail)."
            ),
            button="Add the bundle",
        ),
        anchors=rows,
    )


def delivery_failure(delivery: Delivery) -> Impact:
    message = delivery.message
    blocked = ""
    if message.direction != Message.Direction.OUTBOUND:
        blocked = "Only outbound deliveries are failed from the console."
    elif delivery.state not in services.FAILABLE:
        blocked = (
            f"This delivery is {delivery.get_state_display().lower()}: it is final or in flight "
            "and cannot be failed."
        )
    elif services.in_flight(delivery):
        blocked = ("This delivery is being sent right now: its outcome is recorded within a "
                   "minute or two. Look again then.")
    others = message.deliveries.exclude(pk=delivery.pk).count()
    sender = message.envelope_from or "the sender"
    return Impact(
        title=f"Fail the delivery to {delivery.recipient}",
        facts=(
            Fact("Recipient", delivery.recipient),
            Fact("Message-ID", message.message_id, "code"),
            Fact("Sender", message.envelope_from or "-"),
            Fact("State", delivery.get_state_display()),
            Fact("Attempts", str(delivery.attempts)),
            Fact("Last result", delivery.detail or "-", "code"),
        ),
        effects=(
            f"The delivery to {delivery.recipient} fails now and is never tried again.",
            f"{sender} gets one failure notice saying an operator of this HISP stopped it.",
            f"The message's {_count(others, 'other recipient is', 'other recipients are')} not "
            "affected." if others else "The message has no other recipients.",
            "This cannot be undone: the sender has to send the message again.",
        ),
        statement=f"I understand that the delivery to {delivery.recipient} fails now.",
        button="Fail the delivery",
        blocked=blocked,
    )


def status_change(address: Address, transition: str) -> Impact:
    """Suspending or disabling an address (the two moves that take it out of service)."""
    target = Address.Status.SUSPENDED if transition == "suspend" else Address.Status.DISABLED
    blocked = ""
    if transition not in services.transitions_from(address.status):
        blocked = (
            f"{address.address} is {address.get_status_display().lower()}: it cannot be "
            f"{target.label.lower()} from that state."
        )
    else:
        try:
            identity.ensure_status_allowed(address, target)
        except identity.IdentityError as exc:
            blocked = str(exc)
    users = address.grants.count()
    certificates = address.certificates.filter(
        revoked_at__isnull=True, superseded_by__isnull=True
    ).count()
    if address.status == Address.Status.ACTIVE:
        effects = [
            f"Mail to {address.address} is refused from now on: other HISPs are told the "
            "mailbox does not exist.",
            f"Its {_count(users, 'user', 'users')} (owner and delegates) can no longer open it "
            "in webmail or send from it, in webmail or from a mail client.",
            f"Its {_count(certificates, 'current certificate is', 'current certificates are')} "
            "no longer published, so partners stop finding it.",
        ]
    else:
        effects = [
            f"It is {address.get_status_display().lower()} now, so mail to it is refused and its "
            f"{_count(users, 'user', 'users')} cannot use it; this stays so.",
        ]
    effects.append("Mail already in the mailbox is kept.")
    if transition == "suspend":
        effects.append("A suspended address can be activated again later.")
    else:
        effects.append("Disabling is final: a disabled address cannot be activated again.")
    verb = "suspended" if transition == "suspend" else "disabled"
    return Impact(
        title=f"{transition.capitalize()} {address.address}",
        facts=(
            Fact("Address", address.address),
            Fact("Name", address.display_name or "-"),
            Fact("Kind", address.get_kind_display()),
            Fact("Status now", address.get_status_display()),
            Fact("Status after", str(target.label)),
        ),
        effects=tuple(effects),
        statement=f"I understand that {address.address} is {verb} now.",
        button=transition.capitalize(),
        blocked=blocked,
    )


def grant_revocation(grant: AddressGrant) -> Impact:
    username = grant.user.get_username()
    address = grant.address.address
    blocked = "The owner's access is not revoked here." if grant.role == AddressGrant.Role.OWNER else ""
    others = AddressGrant.objects.filter(user=grant.user).exclude(pk=grant.pk).count()
    what = "open or send from" if grant.may_send else "open"
    return Impact(
        title=f"Revoke {username}'s access to {address}",
        facts=(
            Fact("Mailbox", address),
            Fact("User", username),
            Fact("Access", grant.get_role_display()),
            Fact("Since", f"{grant.created_at:%Y-%m-%d}"),
        ),
        effects=(
            f"{username} can no longer {what} {address}, from their next page on.",
            f"Their access to {_count(others, 'other mailbox', 'other mailboxes')} is not changed.",
            "The mail in the mailbox stays; only this user's access ends.",
            "To undo, grant access again.",
        ),
        statement=f"I understand that {username} loses access to {address} now.",
        button="Revoke access",
        blocked=blocked,
    )


def password_reset(address: Address) -> Impact:
    owners = list(
        get_user_model().objects.filter(
            addressgrant__address=address, addressgrant__role=AddressGrant.Role.OWNER
        )
    )
    if len(owners) != 1:
        return Impact(
            title=f"Reset the password of {address.address}'s owner",
            facts=(Fact("Address", address.address),),
            effects=(),
            statement="",
            button="",
            blocked="This address has no single owning user to reset.",
        )
    user = owners[0]
    username = user.get_username()
    blocked = "Staff passwords are not reset from the console." if user.is_staff or user.is_superuser else ""
    mailboxes = AddressGrant.objects.filter(user=user).count()
    app_passwords = user.app_passwords.count()
    return Impact(
        title=f"Reset the password of {username}",
        facts=(
            Fact("Address", address.address),
            Fact("User", username),
            Fact("Last sign-in", f"{user.last_login:%Y-%m-%d %H:%M}" if user.last_login else "never"),
        ),
        effects=(
            f"{username}'s current password stops working now, and every session they have open "
            "ends.",
            "A temporary password is shown to you once, on the next page: read it to the user "
            "only after checking who is calling.",
            f"The account reaches {_count(mailboxes, 'mailbox', 'mailboxes')}; its "
            f"{_count(app_passwords, 'app password', 'app passwords')} for mail clients are "
            "not changed.",
        ),
        statement=f"I have checked who is asking, and {username}'s password is reset now.",
        button="Reset the password",
        blocked=blocked,
    )


def ca_rollover(domain: Domain) -> Impact:
    """The next step of replacing ``domain``'s issuing CA (hisp.services.ca_rollover): preparing
    a successor, or activating the one prepared."""
    current = domain.issuing_ca
    if current is None:
        return Impact(title=f"Replace the CA of {domain.name}", facts=(Fact("Domain", domain.name),),
                      effects=(), statement="", button="",
                      blocked="This domain has no issuing CA.")
    domains = [d.name for d in scope_domains(domain)]
    facts = [
        Fact("Domains issuing from it", ", ".join(domains)),
        Fact("Current CA", current.subject),
        Fact("Current CA fingerprint", _colons(current.fingerprint_sha256), "fingerprint"),
        Fact("Current CA valid to", f"{current.not_after:%Y-%m-%d}"),
    ]
    following = successor(domain)
    if following is None:
        return Impact(
            title=f"Prepare a successor for the CA of {domain.name}",
            facts=tuple(facts),
            effects=(
                "A new CA with a new key is created. Nothing is issued by it yet: every "
                "certificate in use stays as it is.",
                f"{_count(len(domains), 'hosted domain trusts', 'hosted domains trust')} it from "
                "now on, next to the current CA.",
                "Next, give partners its certificate (Export the successor) and confirm its "
                "fingerprint with them by phone. Activate it only once they trust it: until "
                "then, mail signed under it would be refused by them.",
            ),
            statement=f"I understand that a successor CA is created for {', '.join(domains)}.",
            button="Prepare the successor",
        )
    renew = Certificate.objects.filter(
        issued_by=current,
        source=Certificate.Source.HOSTED,
        binding__in=[Certificate.Binding.ADDRESS, Certificate.Binding.DOMAIN],
        superseded_by__isnull=True,
        revoked_at__isnull=True,
    ).count()
    facts += [
        Fact("Successor", following.subject),
        Fact("Successor fingerprint", _colons(following.fingerprint_sha256), "fingerprint"),
        Fact("Successor prepared", f"{following.created_at:%Y-%m-%d %H:%M}"),
    ]
    return Impact(
        title=f"Activate the successor CA of {domain.name}",
        facts=tuple(facts),
        effects=(
            f"{', '.join(domains)} issue every new certificate from the successor from now on.",
            f"{_count(renew, 'certificate is', 'certificates are')} renewed under it, with new "
            "keys, by the renewal task within minutes, and published in DNS and LDAP.",
            "Partners that do not trust the successor yet refuse mail signed with the new "
            "certificates: check that each partner has imported it.",
            "The current CA keeps its CRL and OCSP answers, and mail signed or encrypted with the "
            "old certificates is still accepted until they expire.",
        ),
        statement="I have confirmed with our partners that they trust the successor CA.",
        button="Activate the successor",
    )


def _in_use(certificate: Certificate, now: datetime) -> bool:
    return (certificate.revoked_at is None and certificate.superseded_by_id is None
            and certificate.not_before <= now < certificate.not_after)


def certificate_revocation_blocked(certificate: Certificate) -> str:
    """Why this certificate cannot be revoked here (the service refuses it too); empty if it can."""
    if certificate.revoked_at is not None:
        return (f"This certificate was revoked on {certificate.revoked_at:%Y-%m-%d %H:%M} UTC "
                f"({certificate.get_revocation_reason_display()}): there is nothing more to do.")
    if certificate.issued_by_id is None or certificate.source != Certificate.Source.HOSTED:
        return ("Only certificates issued by this HISP can be revoked here. To stop trusting a "
                "partner's certificate, remove its trust anchor.")
    return ""


def certificate_revocation(certificate: Certificate, *, now: datetime) -> tuple[str, ...]:
    """What revoking one of our certificates stops, for the revoke page: above all whether the
    address or domain is left with no certificate at all (then partners cannot encrypt to it
    until a new one is issued, and renewing would have been the gentler way)."""
    name = certificate.bound_name or certificate.subject
    if certificate.revoked_at is not None:
        return ()
    effects = [
        "Partners refuse mail signed with this certificate and stop encrypting to it: the CRL "
        "is regenerated now and OCSP answers \"revoked\" from the next request on.",
    ]
    if not _in_use(certificate, now):
        effects.append("This certificate is no longer in use (superseded or expired): nothing "
                       "else changes for its owner.")
    elif certificate.binding in (Certificate.Binding.ADDRESS, Certificate.Binding.DOMAIN):
        # A dual-use certificate is replaced by another dual-use one; a signing-only one by a
        # signing or dual-use one, and so on.
        covers = [Certificate.Usage.DUAL] if certificate.usage == Certificate.Usage.DUAL else [
            certificate.usage, Certificate.Usage.DUAL]
        others = Certificate.objects.filter(
            bound_name=certificate.bound_name, binding=certificate.binding, usage__in=covers,
            revoked_at__isnull=True, superseded_by__isnull=True, not_before__lte=now,
            not_after__gt=now,
        ).exclude(pk=certificate.pk).count()
        if others:
            effects.append(f"{name} keeps {_count(others, 'other certificate', 'other certificates')}"
                           " in use: its mail goes on.")
        elif certificate.binding == Certificate.Binding.ADDRESS:
            fallback = Certificate.objects.filter(
                bound_name=certificate.domain.name if certificate.domain else "",
                binding=Certificate.Binding.DOMAIN, revoked_at__isnull=True,
                superseded_by__isnull=True, not_before__lte=now, not_after__gt=now,
            ).exists()
            effects.append(
                f"{name} has no other certificate of its own: partners fall back to the "
                "domain's certificate." if fallback else
                f"{name} is left with no certificate: partners cannot encrypt to it and its "
                "mail cannot be signed until a new certificate is issued."
            )
        else:
            # One subquery, so the four conditions hold for the same certificate (an exclude()
            # across a multi-valued relation may match them on different ones).
            own = Certificate.objects.filter(
                address=OuterRef("pk"), binding=Certificate.Binding.ADDRESS,
                revoked_at__isnull=True, superseded_by__isnull=True, not_after__gt=now,
            )
            bare = Address.objects.filter(domain__name=certificate.bound_name).exclude(
                Exists(own)).count()
            effects.append(
                f"{name} is left with no domain certificate: "
                f"{_count(bare, 'address', 'addresses')} of it without a certificate of its own "
                "cannot receive encrypted mail or send signed mail until a new one is issued."
            )
        effects.append("If the key was not compromised, renewing instead replaces the "
                       "certificate without a gap.")
    effects.append("Revocation cannot be undone, whatever the reason chosen (a \"certificate "
                   "hold\" is not released either).")
    return tuple(effects)
