"""Periodic webmail work: purge old Trash, send "a message is waiting" notices, forget the mail
API's old Idempotency-Keys."""

from __future__ import annotations

from celery import shared_task

from webmail import services
from webmail.api import submissions


@shared_task(name="webmail.purge_trash")
def purge_trash() -> int:
    return services.purge_trash()


@shared_task(name="webmail.send_waiting_notices")
def send_waiting_notices() -> int:
    return services.send_waiting_notices()


@shared_task(name="webmail.forget_idempotency_keys")
def forget_idempotency_keys() -> int:
    return submissions.forget_old_keys()
