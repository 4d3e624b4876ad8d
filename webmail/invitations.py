"""Accepting a patient's invitation (issued in the console, adminconsole/views/invitations.py).

The link carries a 256-bit token; the database keeps only its SHA-256, so a token is looked up
by its hash (an index lookup on a digest leaks nothing useful about the token through timing).
Every way a token can fail (unknown, expired, used, revoked, its address out of service) gives
the visitor the same answer; the audit log, which only staff read, keeps the reason. Failures
are counted per client IP and throttled.

The account: an address whose owner already exists (made with a temporary password, say) gets
that account's password set, keeping its second factor if it has one; otherwise a user named
after the address is created and made its owner, as ``identity.add_address`` does with a
password. Either way the patient then signs in with the address and the new password.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import SetPasswordForm, SetPasswordMixin
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.validators import MaxLengthValidator
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from hisp.models import Address, AddressGrant, Domain, Invitation
from hisp.services.audit import client_address, record

# Failed token attempts allowed per client IP within the sign-in cool-off before every
# invitation link answers "too many attempts" from that IP. Tokens cannot be guessed; this
# keeps a scan from filling the audit log and the database.
FAILURE_LIMIT = 10
MAX_TOKEN_CHARS = 128  # our tokens are 43; anything much longer is not one of ours
MAX_PASSWORD_CHARS = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Invalid(Exception):  # noqa: N818 - an outcome the view turns into the neutral page
    """The invitation cannot be used; ``reason`` is for the audit log only, never the page."""

    def __init__(self, reason: str, invitation: Invitation | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.invitation = invitation


# --- Looking up -------------------------------------------------------------------------------
def find(*, token: str = "", token_hash: str = "") -> Invitation:
    """The usable invitation for a token (or its hash, as kept in the session), or ``Invalid``."""
    if token:
        if len(token) > MAX_TOKEN_CHARS:
            raise Invalid("malformed")
        token_hash = Invitation.hash_token(token)
    if not token_hash:
        raise Invalid("no-token")
    invitation = (
        Invitation.objects.select_related("address", "address__domain")
        .filter(token_hash=token_hash)
        .first()
    )
    if invitation is None:
        raise Invalid("unknown")
    if invitation.accepted_at is not None:
        raise Invalid("used", invitation)
    if invitation.revoked_at is not None:
        raise Invalid("revoked", invitation)
    if invitation.expires_at <= timezone.now():
        raise Invalid("expired", invitation)
    address = invitation.address
    if (
        address.status != Address.Status.ACTIVE
        or address.kind != Address.Kind.PATIENT
        or address.domain.kind != Domain.Kind.PATIENT_PORTAL
    ):
        raise Invalid("address-unavailable", invitation)
    return invitation


def account_for(invitation: Invitation) -> AbstractBaseUser:
    """The account the password is chosen for: the owner, or a new user named after the
    address (unsaved; used to check the password against the user's own name and email)."""
    owner = _owner(invitation.address)
    if owner is not None:
        return owner
    return get_user_model()(username=invitation.address.address, email=invitation.email)


def _owner(address: Address) -> Any:
    owners = list(
        get_user_model().objects.filter(
            addressgrant__address=address, addressgrant__role=AddressGrant.Role.OWNER
        )
    )
    if len(owners) > 1:
        raise Invalid("several-owners")
    if owners and (owners[0].is_staff or owners[0].is_superuser):
        raise Invalid("staff-owner")
    return owners[0] if owners else None


# --- Throttling and failures ------------------------------------------------------------------
def _failure_key(request: HttpRequest) -> str:
    return f"invitation-failures:{client_address(request) or 'unknown'}"


def throttled(request: HttpRequest) -> bool:
    return int(cache.get(_failure_key(request), 0)) >= FAILURE_LIMIT


def record_failure(*, request: HttpRequest, failure: Invalid) -> None:
    """Count the failure against the client's IP and audit it (until the IP is throttled:
    past that the count says enough, and a scan cannot grow the audit log without end)."""
    key = _failure_key(request)
    window = int(settings.AXES_COOLOFF_TIME.total_seconds())
    cache.add(key, 0, timeout=window)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=window)
        count = 1
    if count > FAILURE_LIMIT:
        return
    invitation = failure.invitation
    record(
        action="invitation.token-failed",
        obj=invitation if invitation is not None else ("hisp.invitation", "unknown"),
        actor="anonymous",
        request=request,
        reason=failure.reason,
        failures=count,
        throttled=count >= FAILURE_LIMIT,
    )


# --- Accepting --------------------------------------------------------------------------------
def accept(*, invitation: Invitation, password: str, request: HttpRequest) -> AbstractBaseUser:
    """Use the invitation once: set the password (creating the owner when there is none).

    The claim is a conditional UPDATE on ``accepted_at IS NULL``: of two acceptances at once
    (two tabs, a forwarded link) the second waits on the row lock, then finds it taken and
    fails like any used token; a revocation racing with it is the same UPDATE's other side.
    """
    now = timezone.now()
    address = invitation.address
    users = get_user_model()
    try:
        with transaction.atomic():
            claimed = Invitation.objects.filter(
                pk=invitation.pk,
                accepted_at__isnull=True,
                revoked_at__isnull=True,
                expires_at__gt=now,
            ).update(accepted_at=now)
            if claimed != 1:
                raise Invalid("used-or-revoked-meanwhile", invitation)
            user = _owner(address)
            created = user is None
            if user is None:
                user = users.objects.create_user(
                    username=address.address, password=password, email=invitation.email
                )
                AddressGrant.objects.create(
                    user=user, address=address, role=AddressGrant.Role.OWNER
                )
            else:
                user.set_password(password)  # ends the account's other sessions too
                fields = ["password"]
                if invitation.email and not user.email:
                    user.email = invitation.email
                    fields.append("email")
                user.save(update_fields=fields)
            Invitation.objects.filter(pk=invitation.pk).update(accepted_by=user)
            record(
                action="invitation.accept",
                obj=invitation,
                actor=user,
                request=request,
                address=address.address,
                username=user.get_username(),
                account="created" if created else "existing",
            )
    except IntegrityError:
        # A user named after the address appeared meanwhile without owning it.
        raise Invalid("username-taken", invitation) from None
    invitation.accepted_at, invitation.accepted_by = now, user
    return user


# --- The form ---------------------------------------------------------------------------------
def _no_control_characters(value: str) -> None:
    if _CONTROL.search(value):
        raise ValidationError("A password cannot contain control characters (tabs, line breaks).")


class InvitationPasswordForm(SetPasswordForm):
    """Django's set-password form (its validators, the two entries must match) with limits on
    what a hostile client may post."""

    new_password1, new_password2 = SetPasswordMixin.create_password_fields(
        label1="Choose a password", label2="Type the password again"
    )

    def __init__(self, user: AbstractBaseUser, *args: Any, **kwargs: Any) -> None:
        super().__init__(user, *args, **kwargs)
        for name in ("new_password1", "new_password2"):
            field = self.fields[name]
            field.validators.append(MaxLengthValidator(MAX_PASSWORD_CHARS))
            field.validators.append(_no_control_characters)
            field.widget.attrs["maxlength"] = str(MAX_PASSWORD_CHARS)
