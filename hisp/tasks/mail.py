"""Mail-flow tasks. Each takes a primary key (never a message body), claims its row with a
conditional UPDATE inside the service it calls, and is therefore safe to run twice."""

from __future__ import annotations

from celery import shared_task

from hisp.services import inbound, mail, outbound, tracking


@shared_task(name="hisp.mail.process_incoming")
def process_incoming(message_pk: int) -> str:
    return inbound.process(message_pk)


@shared_task(name="hisp.mail.process_incoming_batch")
def process_incoming_batch(message_pks: list[int]) -> list[str]:
    """Several received messages, one after another, exactly as if each had its own task
    (hisp.services.batches says why the listener sends them together)."""
    return inbound.process_each(message_pks)


@shared_task(name="hisp.mail.process_outgoing")
def process_outgoing(message_pk: int) -> str:
    return outbound.process(message_pk)


@shared_task(name="hisp.mail.deliver")
def deliver(delivery_pk: int) -> str:
    return outbound.deliver(delivery_pk, only_due=True)


@shared_task(name="hisp.mail.sweep")
def sweep() -> dict[str, int]:
    """Return expired claims and lost work to the queue (beat, every minute)."""
    return mail.sweep()


@shared_task(name="hisp.mail.check_delivery_timeouts")
def check_delivery_timeouts() -> int:
    """Fail deliveries whose processed/dispatched MDN did not arrive in time (beat)."""
    return tracking.expire_overdue()
