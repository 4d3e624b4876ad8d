"""Mailbox search by sender, recipients, subject and body text.

On PostgreSQL: full-text search (django.contrib.postgres) over one tsvector expression, backed by
a GIN expression index on the same expression that ``ensure_search_index`` creates after
migrate (the expression must match the query's text exactly for the planner to use it). On
SQLite (the quick start): case-insensitive substring match. The choice follows
``connection.vendor`` at run time.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.db import connections
from django.db.models import DateTimeField, ExpressionWrapper, F, OrderBy, Q, QuerySet, Value
from django.db.models.expressions import RawSQL

from hisp.models import MailboxEntry

# The body's first SEARCH_CHARS characters are searchable. PostgreSQL refuses a tsvector over
# 1 MB ("string is too long for tsvector"), which a long text body of distinct words (about
# 40,000) reaches: the index would then refuse the mailbox entry, and the message could not
# be filed at all. 100,000 characters (some thirty pages) stay under a third of that limit
# whatever the script or words (measured: distinct CJK pairs, astral characters, hex tokens).
SEARCH_CHARS = 100_000
# Renamed whenever the indexed expression changes: ensure_search_index then drops the old one.
INDEX_NAME = "webmail_entry_fts_v2"
_OLD_INDEXES = ("webmail_entry_fts",)
_TABLE = MailboxEntry._meta.db_table
_DOCUMENT = (
    "to_tsvector('english'::regconfig, "
    "coalesce({t}sender, '') || ' ' || coalesce({t}recipients::text, '') || ' ' || "
    f"coalesce({{t}}subject, '') || ' ' || coalesce(left({{t}}body_text, {SEARCH_CHARS}), ''))"
)


# Above this many estimated matches, walking the time index finds a page of matches sooner
# than collecting and sorting every match (about 51 / share-of-matches rows to test).
COMMON_MATCHES = 2000


def ordering(matches: QuerySet[MailboxEntry]) -> tuple[str | OrderBy, ...]:
    """Newest first, in the form that lets PostgreSQL pick the right plan for this query.

    A plain ``ORDER BY received_at DESC LIMIT 51`` makes the planner walk the time index and
    compute each row's tsvector until 51 match: fast for common words, seconds at 100,000
    entries for a rare one. With the time wrapped in a no-op expression there is no index to
    walk, so it takes the GIN index and sorts the matches: fast for rare words, seconds for
    common ones. The planner's own estimate of the number of matches decides between the two.
    """
    if connections[matches.db].vendor != "postgresql" or matches.query.is_empty():
        return ("-received_at", "-id")
    plan = json.loads(matches.order_by().explain(format="json"))
    if int(plan[0]["Plan"]["Plan Rows"]) >= COMMON_MATCHES:
        return ("-received_at", "-id")
    newest = ExpressionWrapper(F("received_at") + Value(timedelta(0)), output_field=DateTimeField())
    return (newest.desc(), F("id").desc())


def filter_entries(entries: QuerySet[MailboxEntry], query: str) -> QuerySet[MailboxEntry]:
    query = query.strip()
    if not query:
        return entries.none()
    if connections[entries.db].vendor == "postgresql":
        from django.contrib.postgres.search import SearchQuery, SearchVectorField

        document = RawSQL(  # noqa: S611 - a constant expression, no user input
            _DOCUMENT.format(t=f'"{_TABLE}".'), [], output_field=SearchVectorField()
        )
        return entries.alias(document=document).filter(
            document=SearchQuery(query, config="english", search_type="websearch")
        )
    match = Q()
    for word in query.split()[:8]:
        match &= (
            Q(sender__icontains=word) | Q(recipients__icontains=word)
            | Q(subject__icontains=word) | Q(body_text__icontains=word)
        )
    return entries.filter(match)


def ensure_search_index(*, using: str = "default", **_kwargs: Any) -> None:
    """Create the GIN index the full-text query uses (PostgreSQL only; idempotent).

    Runs after migrate rather than from a migration because the webmail migrations are
    regenerated from the models while nothing has shipped, and the index is vendor-specific.
    """
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for old in _OLD_INDEXES:
            cursor.execute(f"DROP INDEX IF EXISTS {old}")
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS {INDEX_NAME} ON {_TABLE} USING gin "  # noqa: S608 - constants
            f"(({_DOCUMENT.format(t='')}))"
        )
