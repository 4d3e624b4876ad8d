"""A held delivery whose queued re-check is lost (Redis restarted, the task dropped) is found by
the sweeper like any other lost task, instead of waiting for ever with no copy, no due time and
no word to its sender."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from hisp.models import Delivery
from hisp.services import mail
from tests.hisp.mail.test_outbound_review2_pending import held  # noqa: F401  (fixture)


def test_a_held_delivery_whose_recheck_task_was_lost_is_queued_again(world, held) -> None:  # noqa: F811
    # What the sweeper leaves when it queues a re-check (next_attempt_at cleared) and the task
    # is then lost: no claim, no copy, no due time.
    long_ago = timezone.now() - timedelta(hours=1)
    Delivery.objects.filter(pk=held.pk).update(
        claimed_at=None, next_attempt_at=None, updated_at=long_ago
    )
    assert mail.sweep()["deliveries"] == 1
    held.refresh_from_db()
    assert held.updated_at > long_ago  # touched: the next sweep does not queue it again at once
    assert mail.sweep()["deliveries"] == 0
