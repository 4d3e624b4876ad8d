"""Every write the webmail makes, with its audit event: folders, moves, read flags, contacts,
drafts, delegation, app passwords, second-factor enrolment (TOTP and security keys) and notices."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from hisp.models import Address, AddressGrant, AppPassword, Folder, MailboxEntry
from hisp.services import identity
from hisp.services.audit import record
from hisp.smtp.credentials import app_password_hash
from webmail.models import Contact, Draft, NotificationPreference, WebAuthnDevice
from webmail.securitykeys import NewKey, Reason, Refused

Box = MailboxEntry.SystemFolder


# --- Reading -----------------------------------------------------------------------------------
def open_entry(*, entry: MailboxEntry, request: HttpRequest, mark_read: bool = True) -> None:
    """Opening a message is audited every time (who, which message, from where)."""
    record(action="message.open", obj=entry.message, request=request, entry=entry.pk,
           mailbox=entry.address_id)
    if mark_read and not entry.read:
        MailboxEntry.objects.filter(pk=entry.pk, read=False).update(read=True)
        entry.read = True


def record_search(*, address: Address, query: str, results: int, request: HttpRequest) -> None:
    """Every search is audited with its words, so "who searched for this patient" can be
    answered (snooping is found by the criteria, not only by the messages opened). Each page of
    results is one event; ``results`` is what that page showed. The words may name a patient:
    they are kept in the audit log, which is where access to PHI is recorded, and nowhere else."""
    record(action="mailbox.search", obj=address, request=request, mailbox=address.pk,
           address=address.address, query=query, results=results,
           page="next" if request.GET.get("cursor") else "first")


def set_read(*, entry: MailboxEntry, read: bool, request: HttpRequest) -> None:
    MailboxEntry.objects.filter(pk=entry.pk).update(read=read)
    entry.read = read
    record(action="message.mark-read" if read else "message.mark-unread", obj=entry.message,
           request=request, entry=entry.pk)


def set_flag(*, entry: MailboxEntry, flagged: bool, request: HttpRequest) -> None:
    MailboxEntry.objects.filter(pk=entry.pk).update(flagged=flagged)
    entry.flagged = flagged
    record(action="message.flag" if flagged else "message.unflag", obj=entry.message,
           request=request, entry=entry.pk)


# --- Moving ------------------------------------------------------------------------------------
class FolderGone(Exception):  # noqa: N818 - an outcome the views turn into a message
    """The user folder a message was being moved into was deleted meanwhile."""


def move_entry(
    *, entry: MailboxEntry, folder: str, user_folder: Folder | None = None, request: HttpRequest
) -> MailboxEntry:
    """Move to a system folder or a user folder of the same mailbox. Moving to Trash stamps
    ``trashed_at`` (the retention clock); moving out clears it."""
    if folder == Box.USER and (user_folder is None or user_folder.address_id != entry.address_id):
        raise ValueError("a user folder of the same mailbox is required")
    if folder not in Box.values:
        raise ValueError(f"unknown folder {folder!r}")
    trashed_at = timezone.now() if folder == Box.TRASH else None
    target_user_folder = user_folder if folder == Box.USER else None
    try:
        with transaction.atomic():
            MailboxEntry.objects.filter(pk=entry.pk).update(
                folder=folder, user_folder=target_user_folder, trashed_at=trashed_at
            )
    except IntegrityError:
        if not MailboxEntry.objects.filter(
            address_id=entry.address_id, message_id=entry.message_id, folder=folder
        ).exclude(pk=entry.pk).exists():
            # Not a duplicate: the user folder was deleted at the same moment (another window,
            # a colleague), and the deferred foreign key refused the move at commit. The
            # message stays where it was; deleting it here would lose it from the mailbox.
            raise FolderGone(target_user_folder.pk if target_user_folder else None) from None
        # The same message already sits in that folder of this mailbox (sent to oneself):
        # the moved copy merges into it.
        MailboxEntry.objects.filter(pk=entry.pk).delete()
    entry.folder, entry.user_folder, entry.trashed_at = folder, target_user_folder, trashed_at
    record(action="message.move", obj=entry.message, request=request, entry=entry.pk,
           folder=folder, user_folder=target_user_folder.pk if target_user_folder else None)
    return entry


def delete_entry(*, entry: MailboxEntry, request: HttpRequest) -> None:
    """Delete goes to Trash; deleting from Trash purges at once."""
    if entry.folder == Box.TRASH:
        record(action="message.purge", obj=entry.message, request=request, entry=entry.pk)
        MailboxEntry.objects.filter(pk=entry.pk).delete()
    else:
        move_entry(entry=entry, folder=Box.TRASH, request=request)


def trash_before(*, address: Address, moment: datetime) -> QuerySet[MailboxEntry]:
    """The Trash of a mailbox as it was at ``moment`` (an entry with no stamp predates it)."""
    return MailboxEntry.objects.filter(address=address, folder=Box.TRASH).filter(
        Q(trashed_at__lte=moment) | Q(trashed_at__isnull=True)
    )


def empty_trash(*, address: Address, trashed_before: datetime, request: HttpRequest) -> int:
    """Delete forever what was in this mailbox's Trash when the user confirmed: a message
    trashed after the confirmation page was shown (another tab, a delegate) is not part of
    what they agreed to lose. Each purge is audited like a single "Delete forever"."""
    with transaction.atomic():
        chosen = list(
            trash_before(address=address, moment=trashed_before)
            .select_for_update(of=("self",)).select_related("message")
        )
        for entry in chosen:
            record(action="message.purge", obj=entry.message, request=request, entry=entry.pk,
                   via="empty-trash")
        MailboxEntry.objects.filter(pk__in=[e.pk for e in chosen]).delete()
    return len(chosen)


def purge_trash(*, now: datetime | None = None) -> int:
    """Remove Trash entries older than HISP_TRASH_RETENTION. The Message rows stay (other
    mailboxes and delivery tracking refer to them)."""
    cutoff = (now or timezone.now()) - settings.HISP_TRASH_RETENTION
    stale = MailboxEntry.objects.filter(folder=Box.TRASH, trashed_at__lt=cutoff)
    count, _ = stale.delete()
    if count:
        record(action="mailbox.purge-trash", obj=("mailbox", "*"), actor="system",
               entries=count, cutoff=cutoff.isoformat())
    return count


# --- Folders -----------------------------------------------------------------------------------
def create_folder(*, address: Address, name: str, request: HttpRequest) -> Folder:
    folder = Folder.objects.create(address=address, name=name)
    record(action="folder.create", obj=folder, request=request, mailbox=address.pk)
    return folder


def rename_folder(*, folder: Folder, name: str, request: HttpRequest) -> None:
    Folder.objects.filter(pk=folder.pk).update(name=name)
    folder.name = name
    record(action="folder.rename", obj=folder, request=request)


def delete_folder(*, folder: Folder, request: HttpRequest) -> None:
    """A deleted folder's messages go back to the Inbox, never silently away."""
    with transaction.atomic():
        for entry in MailboxEntry.objects.filter(user_folder=folder):
            move_entry(entry=entry, folder=Box.INBOX, request=request)
        record(action="folder.delete", obj=folder, request=request)
        folder.delete()
        # A move into the folder that another window committed after the loop above read it
        # was left with no folder at all by the delete (SET NULL): shown nowhere. Inbox too.
        for entry in MailboxEntry.objects.filter(
            address_id=folder.address_id, folder=Box.USER, user_folder__isnull=True
        ):
            move_entry(entry=entry, folder=Box.INBOX, request=request)


# --- Contacts and drafts -----------------------------------------------------------------------
def add_contact(*, owner: AbstractBaseUser, address: str, name: str) -> Contact:
    contact, _ = Contact.objects.update_or_create(
        owner=owner, address=address.lower(), defaults={"name": name}
    )
    return contact


def delete_contact(*, contact: Contact) -> None:
    contact.delete()


def save_draft(
    *, author: AbstractBaseUser, address: Address, draft: Draft | None, to: str, cc: str,
    subject: str, body: str, delivery_notification: bool, forward_of: MailboxEntry | None,
) -> tuple[Draft, bool]:
    """Save the text of one compose page. ``draft`` carries the ``updated_at`` that page last
    saw. Returns the draft saved and whether it is a new one standing in for ``draft``.

    The update is conditional on that version: a draft sent, discarded or changed meanwhile in
    another window (or by a send racing with this autosave) is never overwritten, nor brought
    back by ``save()``'s UPDATE-then-INSERT; this page's text goes to a new draft instead, so
    neither window's words are lost."""
    fields = {
        "address": address, "to": to, "cc": cc, "subject": subject, "body": body,
        "delivery_notification": delivery_notification, "forward_of": forward_of,
    }
    if draft is not None:
        now = timezone.now()
        if Draft.objects.filter(
            pk=draft.pk, author_id=author.pk, updated_at=draft.updated_at
        ).update(**fields, updated_at=now):
            for name, value in fields.items():
                setattr(draft, name, value)
            draft.updated_at = now
            return draft, False
    return Draft.objects.create(author=author, **fields), draft is not None


def delete_draft(*, draft: Draft) -> None:
    draft.delete()


def discard_sent_draft(
    *, author: AbstractBaseUser, draft_id: int, seen: datetime | None = None
) -> None:
    """After sending: the draft it came from is gone (only ever the author's own). With
    ``seen``, only if nobody changed it since the sending page last saved it: text typed into
    it in another window was not part of what was sent."""
    drafts = Draft.objects.filter(pk=draft_id, author_id=author.pk)
    if seen is not None:
        drafts = drafts.filter(updated_at=seen)
    drafts.delete()


# --- Delegation --------------------------------------------------------------------------------
def grant_delegate(
    *, address: Address, user: AbstractBaseUser, role: str, request: HttpRequest
) -> AddressGrant:
    if role not in (AddressGrant.Role.READ, AddressGrant.Role.READ_SEND):
        raise ValueError("a delegate is read-only or read-and-send")
    refusal = identity.delegation_refusal(address, user)
    if refusal:
        raise ValueError(refusal)
    grant, created = AddressGrant.objects.get_or_create(
        user=user, address=address, defaults={"role": role}
    )
    if not created and grant.role != AddressGrant.Role.OWNER:
        AddressGrant.objects.filter(pk=grant.pk).update(role=role)
        grant.role = role
    record(action="mailbox.delegate", obj=address, request=request, delegate=user.pk, role=role)
    return grant


def revoke_delegate(*, grant: AddressGrant, request: HttpRequest) -> None:
    record(action="mailbox.revoke-delegate", obj=grant.address, request=request,
           delegate=grant.user_id, role=grant.role)
    grant.delete()


# --- App passwords and the second factor -------------------------------------------------------
def create_app_password(*, user: AbstractBaseUser, name: str, request: HttpRequest) -> tuple[AppPassword, str]:
    """Returns the row and the clear password, which is shown once and never stored."""
    clear = "-".join(secrets.token_hex(3) for _ in range(4))  # 96 bits, easy to type
    # Stored with its selector, so AUTH verifies it with one hash among any number.
    app_password = AppPassword.objects.create(
        user=user, name=name, password_hash=app_password_hash(clear)
    )
    record(action="app-password.create", obj=app_password, request=request)
    return app_password, clear


def delete_app_password(*, app_password: AppPassword, request: HttpRequest) -> None:
    record(action="app-password.delete", obj=app_password, request=request)
    app_password.delete()


def pending_totp_device(*, user: AbstractBaseUser) -> TOTPDevice:
    """The unconfirmed device being enrolled (one per user, reused across page loads so the QR
    code does not change under the user's phone)."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    return device or TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)


def confirm_totp_device(*, device: TOTPDevice, request: HttpRequest) -> None:
    TOTPDevice.objects.filter(pk=device.pk).update(confirmed=True)
    device.confirmed = True
    record(action="otp.enrol", obj=device, request=request)


def add_security_key(
    *, user: AbstractBaseUser, name: str, key: NewKey, request: HttpRequest
) -> WebAuthnDevice:
    try:
        with transaction.atomic():
            device = WebAuthnDevice.objects.create(
                user=user, name=name, confirmed=True, credential_id=key.credential_id,
                public_key=key.public_key, sign_count=key.sign_count, transports=key.transports,
            )
    except IntegrityError:
        # The credential id is on another account: only a crafted registration repeats one.
        raise Refused(Reason.ALREADY_REGISTERED)
    record(action="webauthn.register", obj=device, request=request, name=name,
           credential=_credential_fingerprint(key.credential_id))
    return device


def remove_security_key(*, device: WebAuthnDevice, request: HttpRequest) -> None:
    record(action="webauthn.remove", obj=device, request=request, name=device.name,
           credential=_credential_fingerprint(device.credential_id))
    device.delete()


def security_key_used(*, device: WebAuthnDevice, sign_count: int) -> None:
    """Store the counter the key reported. Conditional, so of two sign-ins racing with copies
    of one key the later counter wins and a lower one never overwrites it."""
    WebAuthnDevice.objects.filter(pk=device.pk, sign_count__lte=sign_count).update(
        sign_count=sign_count, last_used_at=timezone.now()
    )


def _credential_fingerprint(credential_id: str) -> str:
    # Enough to tell keys apart in the audit log; the id itself is not secret but is long.
    return hashlib.sha256(credential_id.encode()).hexdigest()[:16]


# --- "A message is waiting" --------------------------------------------------------------------
def set_notifications(*, user: AbstractBaseUser, enabled: bool) -> NotificationPreference:
    preference, _ = NotificationPreference.objects.update_or_create(
        user=user, defaults={"enabled": enabled}
    )
    return preference


def send_waiting_notices(*, now: datetime | None = None) -> int:
    """One notice per opted-in user with unread mail that arrived since the last notice, at
    most once per HISP_NOTIFY_INTERVAL. The text carries no PHI: no sender, no subject."""
    now = now or timezone.now()
    interval: timedelta = settings.HISP_NOTIFY_INTERVAL
    sent = 0
    due = NotificationPreference.objects.filter(enabled=True).filter(
        Q(last_sent_at__isnull=True) | Q(last_sent_at__lte=now - interval)
    ).select_related("user")
    for preference in due:
        user = preference.user
        if not user.email:
            continue
        waiting = MailboxEntry.objects.filter(  # only mailboxes the user can open (active)
            address__grants__user=user, address__status=Address.Status.ACTIVE,
            folder=Box.INBOX, read=False,
        )
        if preference.last_sent_at is not None:
            waiting = waiting.filter(received_at__gt=preference.last_sent_at)
        if not waiting.exists():
            continue
        # Claim the slot first (conditional UPDATE): two workers never both send.
        claimed = NotificationPreference.objects.filter(
            pk=preference.pk, last_sent_at=preference.last_sent_at
        ).update(last_sent_at=now)
        if not claimed:
            continue
        send_mail(
            subject="A secure message is waiting for you",
            message=(
                "A new secure message is waiting in your Direct mailbox.\n\n"
                f"Sign in to read it: {settings.HISP_WEB_URL}{reverse('webmail:inbox')}\n\n"
                "For your privacy this notice does not say who sent it or what it is about.\n"
            ),
            from_email=None,
            recipient_list=[user.email],
        )
        record(action="notice.waiting", obj=user, actor="system")
        sent += 1
    return sent
