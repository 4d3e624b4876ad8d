"""The maildrop of one POP3 session: who may open which INBOX, reading, and Trash at QUIT.

Every function here touches the database and runs on the listener's database threads
(hisp/smtp/threads.py ``in_thread``), never on its event loop.

Who may read (the webmail's rule, webmail/access.py, kept here because hisp may not import
webmail): a user with a grant on the address (owner, or delegate of either kind) whose address
is active; an inactive user has no credentials at all (hisp/smtp/credentials.py). A read-only
delegate reads without changing the owner's mailbox: RETR leaves the entry unread, and DELE is
refused (the webmail answers such a delegate's move or delete with 403). The grant is checked
again at every retrieval and at QUIT, so a grant revoked or an address suspended during a
session stops it from reading more.

Every RETR and TOP is a message opened, audited as the webmail audits its message page
(``message.open`` with the entry and mailbox, and ``via="pop3"``), before any byte is sent.
DELE moves the entry to Trash at QUIT, as the webmail's Delete does (``message.move`` to
``trash``, ``trashed_at`` stamped): the message stays recoverable until the Trash retention.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from hisp.models import Address, AddressGrant, MailboxEntry, Message
from hisp.pop3.render import authserv_id, rendered
from hisp.services.audit import record

log = logging.getLogger(__name__)

Box = MailboxEntry.SystemFolder
VIA = "pop3"
# The rendered size of a message never changes (its bytes, sender, trace and signer are fixed
# once it is delivered), so it is remembered: without it every login, every few minutes per
# mail client, read every message in the INBOX to count its octets.
SIZE_TTL = 7 * 24 * 3600
# With the message's creation time: a database restored under a cache that outlived it reuses
# ids, and a size remembered for another message would make LIST lie.
_SIZE_KEY = "hisp:pop3:size:v1:{server}:{pk}:{created}"
_SIZE_CHUNK = 20  # messages read at once while counting: memory stays a few messages' worth


@dataclass(frozen=True)
class Item:
    entry: int  # MailboxEntry pk: the UIDL
    message: int
    size: int  # octets RETR sends, before dot-stuffing (RFC 1939 LIST)


@dataclass(frozen=True)
class Maildrop:
    user_id: int
    address_id: int
    may_change: bool  # owner or read-and-send delegate: RETR marks read, DELE allowed
    items: tuple[Item, ...]


def _grant(
    user_id: int, address_id: int | None = None, address: str | None = None
) -> AddressGrant | None:
    grants = AddressGrant.objects.filter(
        user_id=user_id, user__is_active=True, address__status=Address.Status.ACTIVE
    )
    if address_id is not None:
        grants = grants.filter(address_id=address_id)
    if address is not None:
        grants = grants.filter(address__address__iexact=address.strip())
    return grants.first()


def _sizes(messages: dict[int, datetime]) -> dict[int, int]:
    """The rendered size of each message, by pk (``messages``: pk to creation time)."""
    server = authserv_id()
    keys = {
        pk: _SIZE_KEY.format(server=server, pk=pk, created=created.timestamp())
        for pk, created in messages.items()
    }
    pks = sorted(messages)
    try:
        remembered = cache.get_many(list(keys.values()))
    except Exception:  # the cache away: count them all, the session still works
        log.warning("POP3 size cache unreachable", exc_info=True)
        remembered = {}
    sizes = {pk: remembered[key] for pk, key in keys.items() if key in remembered}
    missing = [pk for pk in pks if pk not in sizes]
    counted: dict[str, int] = {}
    # ``raw`` is read only for a message that has no verified content (render.message_bytes):
    # received mail would otherwise be read twice, wire bytes and inner message.
    fields = ("pk", "direction", "content", "envelope_from", "trace", "signer")
    for start in range(0, len(missing), _SIZE_CHUNK):
        chunk = missing[start : start + _SIZE_CHUNK]
        for message in Message.objects.filter(pk__in=chunk).only(*fields):
            sizes[message.pk] = len(rendered(message))
            counted[keys[message.pk]] = sizes[message.pk]
    if counted:
        try:
            cache.set_many(counted, SIZE_TTL)
        except Exception:
            log.warning("POP3 size cache unreachable", exc_info=True)
    return sizes


def open_maildrop(user: AbstractBaseUser, address: str) -> Maildrop | None:
    """The INBOX of ``address`` for ``user``, oldest first, or None when the user may not
    read it (no grant, the address not active, the user inactive)."""
    grant = _grant(user.pk, address=address)
    if grant is None:
        return None
    rows = list(
        MailboxEntry.objects.filter(address_id=grant.address_id, folder=Box.INBOX)
        .order_by("received_at", "id")
        .values_list("pk", "message_id", "message__created_at")
    )
    sizes = _sizes({message: created for _entry, message, created in rows})
    items = tuple(
        Item(entry=entry, message=message, size=sizes[message])
        for entry, message, _created in rows
        if message in sizes  # a message purged between the two queries is not offered
    )
    return Maildrop(
        user_id=user.pk,
        address_id=grant.address_id,
        may_change=grant.role != AddressGrant.Role.READ,
        items=items,
    )


class Gone(Exception):  # noqa: N818 - an outcome the session answers with -ERR
    """The entry or the user's right to it is no longer there."""


def retrieve(
    drop: Maildrop, item: Item, *, user: AbstractBaseUser, client: str | None, command: str
) -> bytes:
    """The rendered message of ``item``, after its audit event (and, for RETR by someone who
    may change the mailbox, the read flag) are committed."""
    with transaction.atomic():
        grant = _grant(drop.user_id, address_id=drop.address_id)
        entry = (
            MailboxEntry.objects.filter(pk=item.entry, address_id=drop.address_id)
            .select_related("message")
            .defer("body_text", "message__raw")  # raw is read only when it is what is sent
            .first()
        )
        if grant is None or entry is None:
            raise Gone(item.entry)
        record(
            action="message.open",
            obj=entry.message,
            actor=user,
            client=client,
            entry=entry.pk,
            mailbox=entry.address_id,
            via=VIA,
            command=command,
        )
        if command == "RETR" and grant.role != AddressGrant.Role.READ and not entry.read:
            MailboxEntry.objects.filter(pk=entry.pk, read=False).update(read=True)
        return rendered(entry.message)


def may_change(drop: Maildrop) -> bool:
    grant = _grant(drop.user_id, address_id=drop.address_id)
    return grant is not None and grant.role != AddressGrant.Role.READ


def trash(drop: Maildrop, items: list[Item], *, user: AbstractBaseUser, client: str | None) -> int:
    """Move the entries of ``items`` still in the INBOX to Trash (RFC 1939 UPDATE state);
    the number not moved. An entry moved elsewhere meanwhile (the webmail, another session)
    stays where it now is: the user put it there after this session's snapshot. One whose
    message already sits in this mailbox's Trash stays in the INBOX: merging them, as the
    webmail does, would delete a row, and a POP3 client never deletes."""
    if not items:
        return 0
    if not may_change(drop):
        return len(items)
    left = 0
    now = timezone.now()
    with transaction.atomic():
        for item in items:
            try:
                with transaction.atomic():
                    moved = MailboxEntry.objects.filter(
                        pk=item.entry, address_id=drop.address_id, folder=Box.INBOX
                    ).update(folder=Box.TRASH, user_folder=None, trashed_at=now)
            except IntegrityError:
                moved = 0
            if not moved:
                left += 1
                continue
            record(
                action="message.move",
                obj=("hisp.message", item.message),
                actor=user,
                client=client,
                entry=item.entry,
                folder=Box.TRASH.value,
                user_folder=None,
                via=VIA,
            )
    return left
