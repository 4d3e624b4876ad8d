"""Patient invitations: staff invite the person behind a proofed patient-portal address to set
up the account that owns it; the patient accepts in the webmail (webmail/invitations.py).
Every state change is a conditional UPDATE with its audit event in the same transaction."""

from __future__ import annotations

import smtplib
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

from adminconsole.forms.invitations import InvitationForm
from adminconsole.services import StaffActionError
from hisp.models import Address, AddressGrant, Domain, Invitation
from hisp.services import audit

SUBJECT = "Set up your secure health mailbox"


# --- Reading ------------------------------------------------------------------------------------
def live_invitation(address: Address) -> Invitation | None:
    """The invitation whose link still works (at most one: see the model's constraint)."""
    return (
        Invitation.objects.filter(
            address=address,
            accepted_at__isnull=True,
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
        )
        .select_related("created_by")
        .first()
    )


def refusal(address: Address) -> StaffActionError | None:
    """Why this address cannot be given an invitation now, or None when it can."""
    if address.kind != Address.Kind.PATIENT or address.domain.kind != Domain.Kind.PATIENT_PORTAL:
        return StaffActionError(
            "not_patient",
            "Only patient addresses on a patient-portal domain get invitations; clinicians and "
            "organisations get their accounts from staff.",
        )
    if not address.proofing_records.exists():
        return StaffActionError(
            "proofing_required",
            "Record how this patient's identity was proofed before inviting them.",
        )
    if address.status != Address.Status.ACTIVE:
        return StaffActionError(
            "not_active",
            f"The address is {address.get_status_display().lower()}: activate it before "
            "inviting the patient (until then the mailbox does not open).",
        )
    owners = list(
        get_user_model().objects.filter(
            addressgrant__address=address, addressgrant__role=AddressGrant.Role.OWNER
        )
    )
    if len(owners) > 1:
        return StaffActionError(
            "several_owners", "This address has more than one owner: an invitation needs one."
        )
    if owners and (owners[0].is_staff or owners[0].is_superuser):
        return StaffActionError(
            "staff_account",
            "The owner is a staff account: staff passwords are not set by invitation.",
        )
    namesake = get_user_model().objects.filter(username=address.address).first()
    if namesake is not None and namesake not in owners:
        return StaffActionError(
            "username_taken",
            f"A user named {address.address} exists but does not own this address: grant it "
            "ownership or remove it first.",
        )
    return None


def detail_context(address: Address) -> dict[str, object]:
    """What the address page shows about invitations."""
    return {
        "invitation": live_invitation(address),
        "invitation_refusal": refusal(address),
        "invitation_form": InvitationForm(),
    }


# --- Writing ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Issued:
    invitation: Invitation
    link: str  # shown once to the staff member: never stored, logged or put in a message
    emailed: bool
    email_failed: bool


def invitation_link(token: str) -> str:
    return f"{settings.HISP_WEB_URL}{reverse('webmail:invitation', kwargs={'token': token})}"


def issue(*, request: HttpRequest, address: Address, email: str) -> Issued:
    """A new invitation for ``address``; any open one is revoked in the same transaction."""
    refused = refusal(address)
    if refused is not None:
        raise refused
    token = Invitation.new_token()
    now = timezone.now()
    try:
        with transaction.atomic():
            # Two staff members inviting at once queue here; the partial unique index on open
            # invitations is the backstop should anything else slip past.
            Address.objects.select_for_update().filter(pk=address.pk).first()
            replaced = _revoke_open(request=request, address=address, now=now, why="replaced")
            invitation = Invitation.objects.create(
                address=address,
                email=email,
                token_hash=Invitation.hash_token(token),
                created_by=request.user if request.user.is_authenticated else None,
                created_at=now,
                expires_at=now + settings.HISP_INVITATION_TTL,
            )
            audit.record(
                action="invitation.issue",
                obj=invitation,
                request=request,
                address=address.address,
                email=email or None,
                expires_at=invitation.expires_at.isoformat(),
                replaced=replaced,
            )
    except IntegrityError:
        raise StaffActionError(
            "invitation_raced", "Another invitation was issued meanwhile: reload the page."
        ) from None
    link = invitation_link(token)
    emailed = failed = False
    if email:
        emailed = _send(invitation, link)
        failed = not emailed
        audit.record(
            action="invitation.emailed" if emailed else "invitation.email-failed",
            obj=invitation,
            request=request,
            email=email,
        )
    return Issued(invitation=invitation, link=link, emailed=emailed, email_failed=failed)


def _revoke_open(
    *, request: HttpRequest, address: Address, now: datetime, why: str
) -> list[int]:
    open_ids = list(
        Invitation.objects.filter(
            address=address, accepted_at__isnull=True, revoked_at__isnull=True
        ).values_list("pk", flat=True)
    )
    revoked: list[int] = []
    for pk in open_ids:
        # Conditional: an acceptance that committed first keeps its invitation.
        if Invitation.objects.filter(
            pk=pk, accepted_at__isnull=True, revoked_at__isnull=True
        ).update(revoked_at=now):
            revoked.append(pk)
            audit.record(
                action="invitation.revoke",
                obj=("hisp.invitation", pk),
                request=request,
                address=address.address,
                reason=why,
            )
    return revoked


def _send(invitation: Invitation, link: str) -> bool:
    """Email the link. The text carries no PHI: not the Direct address (it may spell the
    patient's name), no provider, no reason for care; only where and until when."""
    until = timezone.localtime(invitation.expires_at).strftime("%d %B %Y, %H:%M %Z")
    body = (
        "You have been invited to set up your secure health mailbox at:\n\n"
        f"{link}\n\n"
        f"The link is valid until {until} and works once.\n\n"
        "If you did not expect this invitation, ignore this email.\n"
    )
    try:
        send_mail(SUBJECT, body, None, [invitation.email])
    except (OSError, smtplib.SMTPException):
        # The invitation stands: staff see the link and can hand it over instead.
        return False
    return True


def revoke(*, request: HttpRequest, invitation: Invitation) -> None:
    with transaction.atomic():
        # Conditional UPDATE: a patient accepting at this moment and the revocation cannot
        # both win.
        changed = Invitation.objects.filter(
            pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True
        ).update(revoked_at=timezone.now())
        if changed != 1:
            raise StaffActionError(
                "invitation_closed", "This invitation was used or revoked already."
            )
        audit.record(
            action="invitation.revoke",
            obj=invitation,
            request=request,
            address=invitation.address.address,
            reason="staff",
        )
