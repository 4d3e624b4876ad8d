"""Keyset pagination over a mailbox (index address, folder, -received_at, -id) and the delivery
summary shown next to sent mail. Offsets are avoided: page 2,000 costs what page 1 costs."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db.models import OrderBy, Q, QuerySet

from hisp.models import Delivery, MailboxEntry

PAGE_SIZE = 50
_S = Delivery.State


@dataclass(frozen=True)
class Page:
    entries: list[MailboxEntry]
    next_cursor: str | None


def cursor_of(entry: MailboxEntry) -> str:
    micros = int(entry.received_at.timestamp() * 1_000_000)
    return f"{micros}.{entry.pk}"


def parse_cursor(text: str | None) -> tuple[datetime, int] | None:
    if not text:
        return None
    try:
        micros, pk = text.split(".", 1)
        return datetime.fromtimestamp(int(micros) / 1_000_000, tz=UTC), int(pk)
    except (ValueError, OverflowError, OSError):
        return None  # a mangled cursor shows the first page rather than an error


NEWEST_FIRST: tuple[str | OrderBy, ...] = ("-received_at", "-id")


def page(
    entries: QuerySet[MailboxEntry], cursor: str | None,
    ordering: tuple[str | OrderBy, ...] = NEWEST_FIRST,
) -> Page:
    """``ordering`` must sort like NEWEST_FIRST; search passes an equivalent expression that
    keeps PostgreSQL off the time index (see webmail.search.ORDERING)."""
    position = parse_cursor(cursor)
    ordered = entries.order_by(*ordering)
    if position is not None:
        at, pk = position
        # "(received_at, id) < (at, pk)" written so that its first half is a plain range on
        # received_at: the (address, folder, -received_at, -id) index serves it directly.
        ordered = ordered.filter(received_at__lte=at).filter(
            Q(received_at__lt=at) | Q(id__lt=pk)
        )
    rows = list(
        ordered.defer("body_text", "recipients")[: PAGE_SIZE + 1]
    )
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return Page(entries=rows, next_cursor=cursor_of(rows[-1]) if more and rows else None)


def summarise(states: list[str]) -> str:
    """One word for a sent message's recipients: the least advanced or the failure."""
    if not states:
        return ""
    if _S.FAILED in states:
        return _S.FAILED
    for state in (_S.QUEUED, _S.PENDING_CERTIFICATE, _S.DEFERRED, _S.SENT, _S.PROCESSED):
        if state in states:
            return state
    return _S.DISPATCHED


def delivery_summaries(entries: list[MailboxEntry]) -> dict[int, str]:
    """message id -> summary state, in one query for the page."""
    states: dict[int, list[str]] = defaultdict(list)
    ids = [e.message_id for e in entries if e.folder == MailboxEntry.SystemFolder.SENT]
    for message_id, state in Delivery.objects.filter(message_id__in=ids).values_list(
        "message_id", "state"
    ):
        states[message_id].append(state)
    return {message_id: summarise(found) for message_id, found in states.items()}
