"""How PostgreSQL stores the mail flow's large columns.

Every received message writes its decrypted content, its mailbox text and its MDN's protected
bytes; PostgreSQL compresses such values with pglz by default, which profiling of the flow
benchmark showed as the largest single cost inside the database (about 8% of its CPU). LZ4
(PostgreSQL 14 and later, when built with it, as Debian's packages are) compresses several times
faster at a similar ratio. The setting applies to values written from then on; nothing is
rewritten. Applied after migrate rather than in a migration because the migrations are
regenerated from the models while nothing has shipped, and the option is vendor-specific.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError, connections, transaction

from hisp.models import Delivery, MailboxEntry, Message

log = logging.getLogger(__name__)

LZ4_COLUMNS = {
    Message: ("raw", "content"),
    MailboxEntry: ("body_text",),
    Delivery: ("wire",),
}


def use_lz4(*, using: str = "default", **_kwargs: Any) -> None:
    """Switch the large columns to LZ4 compression (PostgreSQL 14+; idempotent; a server
    without LZ4 keeps pglz, with a warning)."""
    connection = connections[using]
    if connection.vendor != "postgresql" or connection.pg_version < 140000:  # type: ignore[attr-defined]
        return
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for model, fields in LZ4_COLUMNS.items():
            table = model._meta.db_table
            for name in fields:
                column = model._meta.get_field(name).column
                cursor.execute(
                    "SELECT attcompression FROM pg_attribute "
                    "WHERE attrelid = %s::regclass AND attname = %s",
                    [quote(table), column],
                )
                row = cursor.fetchone()
                if row is None or row[0] == "l":
                    continue
                try:
                    with transaction.atomic(using=using):
                        cursor.execute(
                            f"ALTER TABLE {quote(table)} ALTER COLUMN {quote(column)} "  # noqa: S608 - model names
                            "SET COMPRESSION lz4"
                        )
                except DatabaseError as exc:
                    log.warning("LZ4 column compression unavailable, keeping pglz: %s", exc)
                    return
