"""The mailbox sidebar: the user's mailboxes, the current mailbox's folders and unread counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count
from django.urls import reverse

from hisp.models import Address, AddressGrant, Folder, MailboxEntry
from webmail.models import Draft

Box = MailboxEntry.SystemFolder
SYSTEM_FOLDERS = (Box.INBOX, Box.SENT, Box.DRAFTS, Box.ARCHIVE, Box.TRASH)


@dataclass(frozen=True)
class FolderLink:
    label: str
    url: str
    unread: int
    key: str  # "inbox" ... or "folder:<id>"


def sidebar(*, user: Any, address: Address, current: str) -> dict[str, Any]:
    user_grants = list(
        AddressGrant.objects.filter(user_id=user.pk, address__status=Address.Status.ACTIVE)
        .select_related("address").order_by(
            "role", "address__address"
        )
    )
    unread_inboxes = dict(
        MailboxEntry.objects.filter(
            address_id__in=[g.address_id for g in user_grants], folder=Box.INBOX, read=False
        ).values_list("address_id").annotate(n=Count("id")).values_list("address_id", "n")
    )
    counts: dict[str, int] = {}
    for folder, user_folder, n in (
        MailboxEntry.objects.filter(address=address, read=False)
        .values_list("folder", "user_folder").annotate(n=Count("id"))
        .values_list("folder", "user_folder", "n")
    ):
        key = f"folder:{user_folder}" if folder == Box.USER else folder
        counts[key] = counts.get(key, 0) + n
    drafts = Draft.objects.filter(address=address, author_id=user.pk).count()
    links = []
    for box in SYSTEM_FOLDERS:
        unread = drafts if box == Box.DRAFTS else counts.get(box, 0)
        links.append(FolderLink(
            label=box.label, unread=unread, key=box.value,
            url=reverse("webmail:folder", args=[address.pk, box.value]),
        ))
    for folder in Folder.objects.filter(address=address):
        key = f"folder:{folder.pk}"
        links.append(FolderLink(
            label=folder.name, unread=counts.get(key, 0), key=key,
            url=reverse("webmail:user-folder", args=[address.pk, folder.pk]),
        ))
    grant = next(g for g in user_grants if g.address_id == address.pk)
    return {
        "mailbox": address,
        "grant": grant,
        "mailboxes": [(g, unread_inboxes.get(g.address_id, 0)) for g in user_grants],
        "folder_links": links,
        "current_folder": current,
    }


def move_targets(address: Address) -> list[tuple[str, str]]:
    """Where a message of this mailbox can be moved (the value MoveForm reads)."""
    targets = [(Box.INBOX.value, "Inbox"), (Box.ARCHIVE.value, "Archive")]
    targets += [(f"folder:{f.pk}", f.name) for f in address.folders.all()]
    return targets
