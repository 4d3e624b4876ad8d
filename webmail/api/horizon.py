"""The newest mailbox entry before which no other can still appear: where a list ordered by id
stops, so that ``after=<the last id seen>`` never skips a message.

PostgreSQL hands out ids when a row is inserted, not when its transaction commits: a delivery
that drew id 100 can commit after one that drew 101. A program that saw 101 and then asks for
"after 101" would never see 100. So a list never goes past the horizon: the highest id at a
moment when no transaction that inserted entries is still open.

That moment is made with ``LOCK TABLE ... IN SHARE MODE``: it waits for every transaction
holding the table's ROW EXCLUSIVE lock (which an INSERT takes before it draws an id, and keeps
until commit) and lets no new one start until the highest id is read. Deliveries wait for it a
moment, about a millisecond. While the list waits for a long writer (a trash purge), new writers
queue behind it, deliveries too: so it waits at most LOCK_WAIT, a quarter of a second, then
answers 503 with Retry-After rather than an unsafe page, and a program's poll never holds up
received mail longer than that.

It relies on ids being drawn one at a time from the table's sequence, as Django's identity
column does (sequence CACHE 1): a sequence that handed each session a block of ids would let a
later transaction hold a lower block.

SQLite (the quick start) allows one writer at a time, whose ids are committed in order: no
horizon is needed there.
"""

from __future__ import annotations

from django.db import OperationalError, connections, transaction

from hisp.models import MailboxEntry

LOCK_WAIT = "250ms"


class Busy(Exception):  # noqa: N818 - an outcome the view answers with 503
    """The entries table was being written for longer than LOCK_WAIT."""


def settled_horizon(using: str = "default") -> int | None:
    """The highest entry id with no lower id still uncommitted; None where ids commit in order."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return None
    table = connection.ops.quote_name(MailboxEntry._meta.db_table)
    try:
        with transaction.atomic(using=using), connection.cursor() as cursor:
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [LOCK_WAIT])
            cursor.execute(f"LOCK TABLE {table} IN SHARE MODE")  # noqa: S608 - a model's table
            cursor.execute(f"SELECT coalesce(max(id), 0) FROM {table}")  # noqa: S608
            return int(cursor.fetchone()[0])
    except OperationalError as exc:
        cause = exc.__cause__
        if getattr(cause, "sqlstate", None) == "55P03":  # lock_not_available
            raise Busy from None
        raise
