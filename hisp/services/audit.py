"""Writing to the append-only audit log."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection, models
from django.http import HttpRequest
from django.utils import timezone

from hisp.models import AuditEvent

SYSTEM = "system"
# A request that came another way than the web pages (the mail API sets "api") names it here:
# every event recorded for that request then carries ``via``, whichever service writes it, so
# the log tells a program's reads and changes from a person's.
VIA_ATTRIBUTE = "hisp_audit_via"


def client_address(request: HttpRequest | None) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def appended_for(
    source: str,
    *,
    action: str,
    object_type: str,
    actor: str = SYSTEM,
    client: str | None = None,
    **detail: Any,
) -> tuple[str, list[object]]:
    """An ``INSERT ... SELECT`` (PostgreSQL) appending one event per row of ``source``, a CTE
    of the same statement whose ``id`` column is the object id: the mail flow's hot paths
    write a row and its audit event in one statement instead of a transaction of several.
    ``source`` must be an identifier of the caller's own making; every value is a parameter."""
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    sql = (
        f"INSERT INTO {table} (actor_id, actor_label, action, object_type, object_id, at, "  # noqa: S608
        f"client_address, detail) SELECT NULL, %s, %s, %s, {source}.id::text, %s, %s::inet, "
        f"%s::jsonb FROM {source}"
    )
    return sql, [actor, action, object_type, timezone.now(), client, json.dumps(detail)]


def record(
    *,
    action: str,
    obj: models.Model | tuple[str, str | int],
    actor: AbstractBaseUser | AnonymousUser | str | None = None,
    request: HttpRequest | None = None,
    client: str | None = None,
    **detail: Any,
) -> AuditEvent:
    """Append one audit event. ``obj`` is a model instance or ``(type, id)``.

    ``detail`` must never carry message bodies, subjects or key material: ids, codes and
    fingerprints only.
    """
    if request is not None and actor is None:
        actor = request.user
    via = getattr(request, VIA_ATTRIBUTE, None)
    if via and "via" not in detail:
        detail["via"] = via
    user = actor if isinstance(actor, AbstractBaseUser) else None
    if user is not None:
        label = user.get_username()
    elif isinstance(actor, str):
        label = actor
    else:
        label = SYSTEM
    if isinstance(obj, models.Model):
        object_type, object_id = obj._meta.label_lower, str(obj.pk)
    else:
        object_type, object_id = obj[0], str(obj[1])
    return AuditEvent.objects.create(
        actor=user,
        actor_label=label,
        action=action,
        object_type=object_type,
        object_id=object_id,
        client_address=client or client_address(request),
        detail=detail,
    )
