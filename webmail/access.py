"""One access function per object type. Another user's object answers 404, never 403: a
probing user cannot tell "exists but not yours" from "does not exist".

Only an *active* address's mailbox opens. Suspending or disabling an address (console) shuts
its mailbox to owner and delegates alike, as it already shuts SMTP submission and inbound
delivery; the mail stays stored and reappears if staff reactivate the address."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404

from hisp.models import Address, AddressGrant, AppPassword, Folder, MailboxEntry
from webmail.models import Contact, Draft, WebAuthnDevice

User = AbstractBaseUser | AnonymousUser
ACTIVE = Address.Status.ACTIVE


def grants(user: User) -> QuerySet[AddressGrant]:
    """The mailboxes this user may open, owned ones first."""
    return (
        AddressGrant.objects.filter(user_id=user.pk, address__status=ACTIVE)
        .select_related("address", "address__domain")
        .order_by("role", "address__address")
    )


def grant_for(user: User, address_id: int, *, write: bool = False) -> AddressGrant:
    """``write``: the user changes the mailbox (moves, deletes, flags, folders), which a
    read-only delegate may not; they see the mailbox, so the answer is 403, not 404."""
    grant = get_object_or_404(grants(user), address_id=address_id)
    if write and grant.role == AddressGrant.Role.READ:
        raise PermissionDenied("read-only access to this mailbox")
    return grant


def address_for(user: User, address_id: int, *, write: bool = False) -> Address:
    return grant_for(user, address_id, write=write).address


def sending_address_for(user: User, address_id: int) -> Address:
    """An address the user may send as: owner or read-and-send delegate."""
    grant = grant_for(user, address_id)
    if not grant.may_send:
        # The mailbox is visible to this user (read-only delegate), so 404 would be a lie.
        raise PermissionDenied("read-only access to this mailbox")
    return grant.address


def owned_address_for(user: User, address_id: int) -> Address:
    """Only the owner manages delegation of a mailbox."""
    grant = grant_for(user, address_id)
    if grant.role != AddressGrant.Role.OWNER:
        raise PermissionDenied("only the owner manages this mailbox")
    return grant.address


def entries(user: User) -> QuerySet[MailboxEntry]:
    return MailboxEntry.objects.filter(address__grants__user_id=user.pk, address__status=ACTIVE)


def entry_for(user: User, entry_id: int, *, write: bool = False) -> MailboxEntry:
    entry = get_object_or_404(
        entries(user).select_related("message", "address", "address__domain", "user_folder"),
        pk=entry_id,
    )
    if write:
        grant_for(user, entry.address_id, write=True)
    return entry


def folder_for(user: User, folder_id: int, *, write: bool = False) -> Folder:
    folder = get_object_or_404(
        Folder.objects.filter(address__grants__user_id=user.pk, address__status=ACTIVE)
        .select_related("address"),
        pk=folder_id,
    )
    if write:
        grant_for(user, folder.address_id, write=True)
    return folder


def draft_for(user: User, draft_id: int) -> Draft:
    """Drafts are private to their author, even in a shared mailbox."""
    draft = get_object_or_404(Draft.objects.select_related("address"), pk=draft_id, author_id=user.pk)
    if not grants(user).filter(address_id=draft.address_id).exists():
        raise Http404("no such draft")
    return draft


def contact_for(user: User, contact_id: int) -> Contact:
    return get_object_or_404(Contact, pk=contact_id, owner_id=user.pk)


def app_password_for(user: User, app_password_id: int) -> AppPassword:
    return get_object_or_404(AppPassword, pk=app_password_id, user_id=user.pk)


def security_key_for(user: User, key_id: int) -> WebAuthnDevice:
    return get_object_or_404(WebAuthnDevice, pk=key_id, user_id=user.pk)


def delegate_grant_for(user: User, grant_id: int) -> AddressGrant:
    """A delegation on a mailbox this user owns (the owner's own grant is not revocable here)."""
    grant = get_object_or_404(
        AddressGrant.objects.select_related("address", "user").exclude(role=AddressGrant.Role.OWNER),
        pk=grant_id,
    )
    if not AddressGrant.objects.filter(
        user_id=user.pk, address_id=grant.address_id, role=AddressGrant.Role.OWNER
    ).exists():
        raise Http404("no such delegation")
    return grant
