"""Periodic webmail work: purge old Trash, send "a message is waiting" notices."""

from __future__ import annotations

from celery import shared_task

from webmail import services


@shared_task(name="webmail.purge_trash")
def purge_trash() -> int:
    return services.purge_trash()


@shared_task(name="webmail.send_waiting_notices")
def send_waiting_notices() -> int:
    return services.send_waiting_notices()
