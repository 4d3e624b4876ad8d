"""Mail-flow tasks. Each takes a primary key (never a message body), claims its row with a
conditional UPDATE inside the service it calls, and is therefore safe to run twice."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from hisp.services import inbound, mail, outbound, tracking

# A mail task never outlives its claim: at 80% of the lease a SoftTimeLimitExceeded ends the
# message or attempt at hand as an internal error (retried, then given up); at the lease the
# worker process is killed, the claim expires and the sweeper counts it abandoned
# (mail.MAX_ABANDONED). Without these, a message that makes a worker loop would hold it for
# ever, and take the next worker when its lease ran out.
_LEASE = settings.HISP_CLAIM_LEASE.total_seconds()
LIMITS = {"soft_time_limit": 0.8 * _LEASE, "time_limit": _LEASE}


@shared_task(name="hisp.mail.process_incoming", **LIMITS)
def process_incoming(message_pk: int) -> str:
    return inbound.process(message_pk)


@shared_task(name="hisp.mail.process_incoming_batch", **LIMITS)
def process_incoming_batch(message_pks: list[int]) -> list[str]:
    """Several received messages, one after another, exactly as if each had its own task
    (hisp.services.batches says why the listener sends them together)."""
    return inbound.process_each(message_pks)


@shared_task(name="hisp.mail.process_outgoing", **LIMITS)
def process_outgoing(message_pk: int) -> str:
    return outbound.process(message_pk)


@shared_task(name="hisp.mail.deliver", **LIMITS)
def deliver(delivery_pk: int) -> str:
    return outbound.deliver(delivery_pk, only_due=True)


@shared_task(name="hisp.mail.recheck_held")
def recheck_held(certificate_pk: int | None = None, sender_domain: str | None = None) -> int:
    """Queue a re-check of the held deliveries that a certificate or trust anchor staff just
    imported may release (outbound.recheck_held_soon)."""
    return outbound.queue_held_rechecks(certificate_pk=certificate_pk, sender_domain=sender_domain)


@shared_task(name="hisp.mail.sweep")
def sweep() -> dict[str, int]:
    """Return expired claims and lost work to the queue (beat, every minute)."""
    return mail.sweep()


@shared_task(name="hisp.mail.check_delivery_timeouts")
def check_delivery_timeouts() -> int:
    """Fail deliveries whose processed/dispatched MDN did not arrive in time (beat)."""
    return tracking.expire_overdue()
