"""Writing to the append-only audit log."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import models
from django.http import HttpRequest

from hisp.models import AuditEvent

SYSTEM = "system"


def client_address(request: HttpRequest | None) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


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
