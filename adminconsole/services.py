"""Staff actions that only the console performs: identity proofing, the address lifecycle,
mailbox grants, password resets, removing a hand-imported anchor or a bundle, pushing or
stopping a delivery, and audited wrappers for a bundle refresh and a discovery cache flush.
Each changes state with a conditional UPDATE or under a row lock (two staff members acting at
once cannot both win) and writes one audit event in the same transaction.

Creating domains and addresses, certificates, anchor import and export, bundles and routes are
not here: the console calls ``hisp.services`` for those, and they audit themselves.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from adminconsole.models import ProofingRecord
from hisp import discovery
from hisp.agent_env import bump_pki_version
from hisp.models import Address, AddressGrant, Delivery, Message, TrustAnchor, TrustBundle
from hisp.services import audit, identity, mail, tracking, trust

Status = Address.Status


class StaffActionError(ValueError):
    """A staff action that the object's current state does not allow; ``code`` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# Which lifecycle moves exist, from which states (a move from any other state is refused).
_TRANSITIONS: dict[str, tuple[Status, frozenset[str]]] = {
    "activate": (Status.ACTIVE, frozenset({Status.PENDING, Status.SUSPENDED})),
    "suspend": (Status.SUSPENDED, frozenset({Status.ACTIVE})),
    "disable": (Status.DISABLED, frozenset({Status.PENDING, Status.ACTIVE, Status.SUSPENDED})),
}
TRANSITIONS = tuple(_TRANSITIONS)


def transitions_from(status: str) -> tuple[str, ...]:
    """The lifecycle moves an address in ``status`` may make: the console offers only these."""
    return tuple(name for name, (_, sources) in _TRANSITIONS.items() if status in sources)


def proofing_detail(record: ProofingRecord) -> dict[str, str | int]:
    return {
        "proofing_record": record.pk,
        "proofed_by": record.proofed_by,
        "method": record.method,
        "evidence_reference": record.evidence_reference,
        "proofed_on": record.proofed_on.isoformat(),
    }


def record_proofing(
    *,
    request: HttpRequest,
    address: Address,
    proofed_by: str,
    method: str,
    evidence_reference: str,
    proofed_on: date,
) -> ProofingRecord:
    with transaction.atomic():
        record = ProofingRecord.objects.create(
            address=address,
            proofed_by=proofed_by,
            method=method,
            evidence_reference=evidence_reference,
            proofed_on=proofed_on,
            recorded_by=request.user if request.user.is_authenticated else None,
        )
        audit.record(
            action="address.proofing_recorded",
            obj=address,
            request=request,
            address=address.address,
            **proofing_detail(record),
        )
    return record


def change_status(
    *, request: HttpRequest, address: Address, transition: str, note: str = ""
) -> Address:
    """Move an address through its lifecycle; activation needs a proofing record on file."""
    if transition not in _TRANSITIONS:
        raise StaffActionError("unknown_transition", f"unknown lifecycle action {transition!r}")
    target, sources = _TRANSITIONS[transition]
    try:
        identity.ensure_status_allowed(address, target)
    except identity.IdentityError as exc:
        raise StaffActionError("postmaster_stays_active", str(exc)) from None
    latest = address.proofing_records.order_by("-proofed_on", "-id").first()
    if transition == "activate" and latest is None:
        raise StaffActionError(
            "proofing_required", "record how this identity was proofed before activating it"
        )
    with transaction.atomic():
        previous = address.status
        # Conditional UPDATE: two staff members acting at once cannot both move the same state.
        changed = Address.objects.filter(pk=address.pk, status__in=sources).update(status=target)
        if changed != 1:
            raise StaffActionError(
                "invalid_transition",
                f"cannot {transition} an address that is {address.get_status_display().lower()}",
            )
        bump_pki_version()  # an update() sends no signal: tell the mail flow's caches
        detail: dict[str, object] = {
            "address": address.address,
            "from": previous,
            "to": str(target),
        }
        if note:
            detail["note"] = note
        if latest is not None:
            detail.update(proofing_detail(latest))
        audit.record(action=f"address.{transition}", obj=address, request=request, **detail)
    address.status = target
    return address


def grant_access(
    *, request: HttpRequest, address: Address, user: AbstractBaseUser, role: str
) -> AddressGrant:
    """Give a delegate read-only or read-and-send access; owners are made with the address."""
    if role not in (AddressGrant.Role.READ, AddressGrant.Role.READ_SEND):
        raise StaffActionError("invalid_role", "delegates get read-only or read-and-send access")
    refusal = identity.delegation_refusal(address, user)
    if refusal:
        raise StaffActionError("patient", refusal)
    with transaction.atomic():
        existing = AddressGrant.objects.select_for_update().filter(
            address=address, user=user
        ).first()
        if existing is not None and existing.role == AddressGrant.Role.OWNER:
            raise StaffActionError("already_owner", "this user owns the mailbox already")
        previous = existing.role if existing else None
        grant, _ = AddressGrant.objects.update_or_create(
            address=address, user=user, defaults={"role": role}
        )
        audit.record(
            action="address.grant",
            obj=address,
            request=request,
            address=address.address,
            user=user.get_username(),
            role=role,
            previous_role=previous,
        )
    return grant


def revoke_access(*, request: HttpRequest, grant: AddressGrant, reason: str = "") -> None:
    if grant.role == AddressGrant.Role.OWNER:
        raise StaffActionError("owner_grant", "the owner's access is not revoked here")
    with transaction.atomic():
        deleted, _ = AddressGrant.objects.filter(pk=grant.pk, role=grant.role).delete()
        if deleted != 1:
            raise StaffActionError("grant_changed", "this access was changed meanwhile")
        audit.record(
            action="address.revoke_grant",
            obj=grant.address,
            request=request,
            address=grant.address.address,
            user=grant.user.get_username(),
            role=grant.role,
            **_reason(reason),
        )


@dataclass(frozen=True)
class PasswordReset:
    username: str
    temporary_password: str  # shown once to the staff member, never stored in clear or logged


def reset_owner_password(
    *, request: HttpRequest, address: Address, reason: str = ""
) -> PasswordReset:
    """Set a temporary password for the address's owner (webmail has no self-service reset).

    Staff accounts are refused: a console user must not take over another console user.
    """
    owners = list(
        get_user_model().objects.filter(
            addressgrant__address=address, addressgrant__role=AddressGrant.Role.OWNER
        )
    )
    if len(owners) != 1:
        raise StaffActionError(
            "no_single_owner", "this address has no single owning user to reset"
        )
    user = owners[0]
    if user.is_staff or user.is_superuser:
        raise StaffActionError(
            "staff_account", "staff passwords are not reset from the console"
        )
    temporary = _temporary_password()
    with transaction.atomic():
        user.set_password(temporary)  # also ends the user's other sessions (auth hash changes)
        user.save(update_fields=["password"])
        audit.record(
            action="user.password_reset",
            obj=user,
            request=request,
            address=address.address,
            username=user.get_username(),
            **_reason(reason),
        )
    return PasswordReset(username=user.get_username(), temporary_password=temporary)


@dataclass(frozen=True)
class NewAddress:
    address: Address
    reset: PasswordReset | None  # the owner's temporary password, shown once


def add_address_for_proofing(
    *,
    request: HttpRequest,
    address: str,
    name: str,
    patient: bool,
    address_cert: bool,
    with_owner: bool,
) -> NewAddress:
    """Create an address that stays pending until staff record its proofing and activate it.

    ``identity.add_address`` makes addresses active (the CLI is used by operators who proofed
    already); the console holds them back so no mail is accepted for an unproofed identity.
    """
    temporary = _temporary_password() if with_owner else None
    with transaction.atomic():
        row = identity.add_address(
            address,
            name=name,
            password=temporary,
            address_cert=address_cert,
            patient=patient,
            actor=request.user if request.user.is_authenticated else None,
            client=audit.client_address(request),
        )
        Address.objects.filter(pk=row.pk).update(status=Status.PENDING)
        bump_pki_version()  # an update() sends no signal: tell the mail flow's caches
        row.status = Status.PENDING
        audit.record(
            action="address.hold_for_proofing",
            obj=row,
            request=request,
            address=row.address,
            owner=row.address if with_owner else None,
        )
    reset = PasswordReset(row.address, temporary) if temporary is not None else None
    return NewAddress(address=row, reset=reset)


def _temporary_password() -> str:
    # 4 groups of 4 from an unambiguous alphabet: 80 bits, easy to read out over the phone.
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    groups = ("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(4))
    return "-".join(groups)


class RefreshChanged(Exception):
    """The bundle refresh about to be applied is not the one the staff member previewed."""


def apply_previewed_refresh(
    *, request: HttpRequest, change: trust.BundleChange, added: list[str], removed: list[str]
) -> trust.RefreshOutcome:
    """Apply the bundle bytes that were just fetched and verified, and only if the anchors they
    add and remove are exactly the ``added`` and ``removed`` fingerprints previewed: a
    scheduled refresh that ran in between would make them differ, and then nothing is kept
    (``RefreshChanged``). The scheduled refresh is a system action and is not audited here."""
    with transaction.atomic():
        # force: the same bytes as last time still repair anchors that drifted from the bundle.
        outcome = trust.refresh_bundle(change.bundle, body=change.body, force=True)
        if outcome.failed or (outcome.added, outcome.removed) != (added, removed):
            raise RefreshChanged
        audit.record(
            action="bundle.refresh",
            obj=change.bundle,
            request=request,
            result=str(outcome.result),
            added=outcome.added,
            removed=outcome.removed,
            digest=change.digest,
        )
    return outcome


# Outbound deliveries a staff member may push: waiting for a retry or for a certificate.
RETRYABLE = (Delivery.State.DEFERRED, Delivery.State.PENDING_CERTIFICATE)
# Outbound deliveries a staff member may stop: not sent anywhere final yet.
FAILABLE = (Delivery.State.QUEUED, *RETRYABLE)
# RFC 3463 3.1: "other or undefined status"; the DSN's explanation says a person stopped it.
STAFF_FAILED_STATUS = "5.0.0"


def _outbound(delivery: Delivery) -> None:
    if delivery.message.direction != Message.Direction.OUTBOUND:
        raise StaffActionError("not_outbound", "only outbound deliveries are retried or failed")


def retry_delivery_now(*, request: HttpRequest, delivery: Delivery) -> None:
    """Make a deferred (or certificate-waiting) delivery due now and queue it for the worker."""
    _outbound(delivery)
    with transaction.atomic():
        # Conditional UPDATE: a worker holding the lease, or a state that moved on, wins.
        due = Delivery.objects.filter(
            pk=delivery.pk, state__in=RETRYABLE, claimed_at__isnull=True
        ).update(next_attempt_at=timezone.now())
        if due != 1:
            raise StaffActionError(
                "not_retryable", "this delivery is not waiting for a retry (or a worker has it)"
            )
        audit.record(
            action="delivery.retry_now",
            obj=delivery,
            request=request,
            state=delivery.state,
            recipient=delivery.recipient,
        )
        mail.enqueue("deliver", delivery.pk)


in_flight = tracking.in_flight  # the rule tracking.fail(unless_in_flight=True) applies


IN_FLIGHT = "this delivery is being sent right now: look again in a minute"


def fail_delivery_now(*, request: HttpRequest, delivery: Delivery, note: str) -> None:
    """Stop a delivery: it fails with exactly one failure DSN to the sender (tracking.fail).

    Never while a worker holds its claim: failing would release the claim under the worker,
    whose message may reach the partner while the sender is told it was stopped. The row is
    locked from the check to the failure, so a worker cannot claim it in between."""
    _outbound(delivery)
    if delivery.state not in FAILABLE:
        raise StaffActionError("not_failable", "this delivery is already final or in flight")
    with transaction.atomic():
        current = Delivery.objects.select_for_update().only("id", "state", "claimed_at").filter(
            pk=delivery.pk, state__in=FAILABLE
        ).first()
        if current is None:
            raise StaffActionError("not_failable", "this delivery changed state meanwhile")
        if in_flight(current):
            raise StaffActionError("in_flight", IN_FLIGHT)
        failed = tracking.fail(
            delivery,
            detail="x-staff-failed",
            status=STAFF_FAILED_STATUS,
            why="an operator of your HISP stopped the delivery",
        )
        if not failed:
            raise StaffActionError("not_failable", "this delivery changed state meanwhile")
        audit.record(
            action="delivery.fail_now",
            obj=delivery,
            request=request,
            recipient=delivery.recipient,
            note=note,
        )


def flush_discovery_cache(*, request: HttpRequest, entry: str) -> str:
    """Forget cached discovery answers for an address or a whole domain (after a partner
    republished certificates); ``discovery.DiscoveryError`` when the cache cannot be reached."""
    flushed = discovery.flush(entry)
    audit.record(action="discovery.flush", obj=("discovery", flushed), request=request)
    return flushed


def remove_anchor(*, request: HttpRequest, anchor: TrustAnchor, reason: str = "") -> None:
    """Stop trusting an anchor imported by hand (a partner left, or its CA was compromised).

    Anchors from a bundle follow the bundle (the next refresh would bring them back), and a
    domain's own CA stays: without it mail between our own users would fail validation.
    """
    if anchor.bundle_id is not None:
        raise StaffActionError("bundle_anchor", "this anchor comes from a bundle: remove the bundle")
    if anchor.certificate_id == anchor.domain.issuing_ca_id:
        raise StaffActionError("own_ca", "a domain always trusts its own issuing CA")
    with transaction.atomic():
        deleted, _ = TrustAnchor.objects.filter(pk=anchor.pk, bundle__isnull=True).delete()
        if deleted != 1:
            raise StaffActionError("anchor_changed", "this anchor was removed meanwhile")
        audit.record(
            action="anchor.remove",
            obj=("hisp.trustanchor", anchor.pk),
            request=request,
            domain=anchor.domain.name,
            fingerprint=anchor.certificate.fingerprint_sha256,
            incoming=anchor.incoming,
            outgoing=anchor.outgoing,
            **_reason(reason),
        )


def remove_bundle(*, request: HttpRequest, bundle: TrustBundle, reason: str = "") -> list[str]:
    """Stop trusting a bundle and the anchors it brought (the HISP left the community, or the
    bundle was added for the wrong domain); its scheduled refresh stops with it. Returns the
    fingerprints of the anchors removed.

    Locked as a refresh locks it (trust.lock_bundle), so a refresh running now is waited for
    rather than deadlocked with; one that starts meanwhile waits for this transaction and then
    fails on the missing bundle, so no anchor outlives its bundle.
    """
    with transaction.atomic():
        locked = trust.lock_bundle(bundle)
        if locked is None:
            raise StaffActionError("bundle_changed", "this bundle was removed meanwhile")
        removed = sorted(
            TrustAnchor.objects.filter(bundle=locked).values_list(
                "certificate__fingerprint_sha256", flat=True
            )
        )
        # The bundle's history goes with it: what each refresh started or stopped trusting is
        # compliance history, so it is kept in the audit event (failed fetches are not).
        history = [
            {"at": event.at.isoformat(), "added": event.added, "removed": event.removed}
            for event in locked.events.order_by("at", "id")
            if event.added or event.removed
        ]
        # Cascades to its anchors (their delete signals tell the mail flow's caches) and history.
        locked.delete()
        audit.record(
            action="bundle.remove",
            obj=("hisp.trustbundle", bundle.pk),
            request=request,
            name=bundle.name,
            domain=bundle.domain.name,
            url=bundle.url,
            removed=removed,
            history=history,
            **_reason(reason),
        )
    return removed


def _reason(reason: str) -> dict[str, str]:
    """The staff member's stated reason, for the audit detail; left out when none was asked."""
    return {"reason": reason} if reason else {}
