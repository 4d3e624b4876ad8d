"""A delivery a worker is sending right now (its claim taken, the lease running) is not failed
from the console: before, the staff member's "Fail now" released the worker's claim, so the
message reached the partner while its sender got a failure notice saying an operator stopped
it (and the worker's result was dropped as a lost lease). Retry already waited for the worker."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from hisp.models import AuditEvent, Delivery, Message


def _fail(client: Client, delivery: Delivery) -> Any:
    return client.post(reverse("adminconsole:delivery-fail", kwargs={"pk": delivery.pk}),
                       {"note": "partner asked us to stop", "confirm": "on"})


def _dsns(world: Any) -> int:
    return Message.objects.filter(kind=Message.Kind.DSN, original=world.message).count()


def test_a_delivery_being_sent_now_is_not_failed(staff_client: Client, world: Any) -> None:
    claimed = timezone.now()
    Delivery.objects.filter(pk=world.delivery.pk).update(claimed_at=claimed)
    response = _fail(staff_client, world.delivery)
    assert response.status_code == 400
    assert "being sent right now" in response.content.decode()
    world.delivery.refresh_from_db()
    assert (world.delivery.state, world.delivery.claimed_at) == (Delivery.State.DEFERRED, claimed)
    assert _dsns(world) == 0
    assert not AuditEvent.objects.filter(action="delivery.fail_now").exists()


def test_the_confirmation_page_says_so_before_asking(staff_client: Client, world: Any) -> None:
    Delivery.objects.filter(pk=world.delivery.pk).update(claimed_at=timezone.now())
    page = staff_client.get(reverse("adminconsole:delivery-fail", kwargs={"pk": world.delivery.pk}))
    assert "being sent right now" in page.content.decode()
    assert page.context["impact"].blocked
    detail = staff_client.get(reverse("adminconsole:delivery-detail",
                                      kwargs={"pk": world.delivery.pk}))
    assert detail.context["may_fail"] is False


def test_a_claim_whose_lease_ran_out_does_not_protect_the_delivery(
    staff_client: Client, world: Any
) -> None:
    # The worker died: its lease is over, and the sweeper would give the delivery back anyway.
    stale = timezone.now() - settings.HISP_CLAIM_LEASE - settings.HISP_CLAIM_LEASE
    Delivery.objects.filter(pk=world.delivery.pk).update(claimed_at=stale)
    assert _fail(staff_client, world.delivery).status_code == 302
    world.delivery.refresh_from_db()
    assert world.delivery.state == Delivery.State.FAILED
    assert _dsns(world) == 1
