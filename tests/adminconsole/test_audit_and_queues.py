from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from hisp.models import AuditEvent, Delivery, Message
from hisp.services import audit

AUDIT = "adminconsole:audit-log"


def test_viewing_the_audit_log_is_itself_audited(staff_client: Client, sam: Any) -> None:
    audit.record(action="domain.add", obj=("hisp.domain", 7), actor="system")
    response = staff_client.get(reverse(AUDIT), {"action": "domain."})
    assert [e.action for e in response.context["page"]] == ["domain.add"]
    view = AuditEvent.objects.get(action="audit.view")
    assert view.actor == sam
    assert view.detail == {"filters": {"action": "domain."}, "page": 1}
    assert view.client_address == "127.0.0.1"


def test_audit_log_filters_by_actor_object_and_dates(staff_client: Client, sam: Any) -> None:
    audit.record(action="address.activate", obj=("hisp.address", 1), actor="pat")
    audit.record(action="address.activate", obj=("hisp.address", 2), actor="lee")
    url = reverse(AUDIT)

    def actions(**params: str) -> list[tuple[str, str]]:
        return [(e.actor_label, e.object_id) for e in staff_client.get(url, params).context["page"]]

    assert actions(actor="pat") == [("pat", "1")]
    assert actions(object_type="hisp.address", object_id="2") == [("lee", "2")]
    tomorrow = (timezone.localdate() + timedelta(days=1)).isoformat()
    assert actions(since=tomorrow, action="address.") == []
    today = timezone.localdate().isoformat()
    assert len(actions(since=today, until=today, action="address.")) == 2


def test_audit_log_rejects_bad_filters_without_error(staff_client: Client) -> None:
    response = staff_client.get(
        reverse(AUDIT), {"since": "2026-12-01", "until": "2026-01-01", "actor": "<script>"}
    )
    assert response.status_code == 200
    form = response.context["form"]
    assert form.errors["actor"]
    assert b"<script>" not in response.content
    oversized = staff_client.get(reverse(AUDIT), {"action": "a" * 5000, "page": "nonsense"})
    assert oversized.status_code == 200
    assert oversized.context["form"].errors["action"]


def test_audit_log_paginates(staff_client: Client) -> None:
    for n in range(120):
        audit.record(action="test.bulk", obj=("thing", n), actor="system")
    first = staff_client.get(reverse(AUDIT), {"action": "test.bulk"})
    assert len(first.context["page"]) == 50
    last = staff_client.get(reverse(AUDIT), {"action": "test.bulk", "page": "3"})
    assert len(last.context["page"]) == 20
    assert b"page=2" in last.content


def test_queue_pages_show_metadata_but_never_subject_or_body(staff_client: Client, world: Any) -> None:
    pages = [
        reverse("adminconsole:message-list"),
        reverse("adminconsole:message-detail", kwargs={"pk": world.message.pk}),
        reverse("adminconsole:delivery-list"),
        reverse("adminconsole:delivery-detail", kwargs={"pk": world.delivery.pk}),
        reverse("adminconsole:dashboard"),
    ]
    for url in pages:
        content = staff_client.get(url).content
        assert b"SECRET-BODY-TEXT" not in content
        assert b"Jane Roe" not in content
    detail = staff_client.get(pages[3]).content.decode()
    assert "&lt;m1@direct.example.org&gt;" in detail
    assert "451 4.3.0 try later" in detail
    assert "zoe@partner.example.net" in detail


def test_message_list_filters_by_direction_and_state(staff_client: Client, world: Any) -> None:
    Message.objects.create(
        direction=Message.Direction.INBOUND, state=Message.State.RECEIVED,
        message_id="<in1@partner.example.net>", raw=b"x",
    )
    url = reverse("adminconsole:message-list")
    inbound = staff_client.get(url, {"direction": "in"}).context["page"]
    assert [m.message_id for m in inbound] == ["<in1@partner.example.net>"]
    sent = staff_client.get(url, {"state": "sent"}).context["page"]
    assert [m.message_id for m in sent] == ["<m1@direct.example.org>"]


def test_delivery_list_filters_by_state(staff_client: Client, world: Any) -> None:
    url = reverse("adminconsole:delivery-list")
    assert [d.pk for d in staff_client.get(url, {"state": "deferred"}).context["page"]] == [
        world.delivery.pk
    ]
    assert list(staff_client.get(url, {"state": "failed"}).context["page"]) == []
    bad = staff_client.get(url, {"state": "<b>"})
    assert bad.status_code == 200
    assert bad.context["form"].errors["state"]


def test_dashboard_counts(staff_client: Client, world: Any) -> None:
    Delivery.objects.create(message=world.message, recipient="x@partner.example.net", state="failed")
    context = staff_client.get(reverse("adminconsole:dashboard")).context
    assert context["domain_count"] == 1
    assert ("pending", "Pending identity proofing", 1) in context["addresses"]
    assert context["deferred_count"] == 1
    assert context["failed_count"] == 1
    sent = [row for row in context["message_rows"] if row[0] == "sent"]
    assert sent == [("sent", "Protected and handed to delivery", 0, 1)]
    assert [b.name for b in context["bundle_errors"]] == ["Community bundle"]


def _delivery_url(name: str, delivery: Delivery) -> str:
    return reverse(f"adminconsole:{name}", kwargs={"pk": delivery.pk})


def test_retry_now_makes_a_deferred_delivery_due_and_queues_it(
    staff_client: Client, world: Any, sam: Any, django_capture_on_commit_callbacks: Any
) -> None:
    delivery = world.delivery
    Delivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() + timedelta(hours=1)
    )
    with django_capture_on_commit_callbacks() as queued:
        response = staff_client.post(_delivery_url("delivery-retry", delivery))
    assert response.status_code == 302
    delivery.refresh_from_db()
    assert delivery.next_attempt_at <= timezone.now()
    assert len(queued) == 1  # the deliver task, sent once the transaction commits
    event = AuditEvent.objects.get(action="delivery.retry_now")
    assert event.actor == sam
    assert event.detail["state"] == "deferred"


def test_retry_now_refuses_a_delivery_a_worker_holds(staff_client: Client, world: Any) -> None:
    Delivery.objects.filter(pk=world.delivery.pk).update(claimed_at=timezone.now())
    response = staff_client.post(_delivery_url("delivery-retry", world.delivery), follow=True)
    assert b"not waiting for a retry" in response.content
    assert not AuditEvent.objects.filter(action="delivery.retry_now").exists()


def test_retry_now_refuses_a_final_delivery(staff_client: Client, world: Any) -> None:
    Delivery.objects.filter(pk=world.delivery.pk).update(state=Delivery.State.DISPATCHED)
    staff_client.post(_delivery_url("delivery-retry", world.delivery))
    assert not AuditEvent.objects.filter(action="delivery.retry_now").exists()
    world.delivery.refresh_from_db()
    assert world.delivery.state == Delivery.State.DISPATCHED


def test_fail_now_fails_the_delivery_with_one_notice_and_is_audited(
    staff_client: Client, world: Any, sam: Any
) -> None:
    delivery = world.delivery
    response = staff_client.post(
        _delivery_url("delivery-fail", delivery),
        {"note": "partner asked us to stop", "confirm": "on"},
    )
    assert response.status_code == 302
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.FAILED
    assert delivery.events.last().detail == "x-staff-failed"
    assert Message.objects.filter(kind=Message.Kind.DSN, original=world.message).count() == 1
    event = AuditEvent.objects.get(action="delivery.fail_now")
    assert event.actor == sam
    assert event.detail["note"] == "partner asked us to stop"
    again = staff_client.post(
        _delivery_url("delivery-fail", delivery), {"note": "again", "confirm": "on"}
    )
    assert again.status_code == 400
    assert Message.objects.filter(kind=Message.Kind.DSN, original=world.message).count() == 1


@pytest.mark.parametrize("note", ["", "<script>alert(1)</script>", "n" * 201])
def test_fail_now_needs_a_plain_note(staff_client: Client, world: Any, note: str) -> None:
    response = staff_client.post(
        _delivery_url("delivery-fail", world.delivery), {"note": note, "confirm": "on"}
    )
    assert response.status_code == 400
    assert response.context["form"].errors["note"]
    assert b"<script>alert" not in response.content
    world.delivery.refresh_from_db()
    assert world.delivery.state == Delivery.State.DEFERRED


def test_inbound_deliveries_are_not_failed_from_the_console(staff_client: Client, world: Any) -> None:
    inbound = Message.objects.create(
        direction=Message.Direction.INBOUND, state=Message.State.PROCESSING,
        message_id="<in2@partner.example.net>", raw=b"x",
    )
    delivery = Delivery.objects.create(
        message=inbound, recipient="alice@direct.example.org", state=Delivery.State.QUEUED
    )
    response = staff_client.post(
        _delivery_url("delivery-fail", delivery), {"note": "stop", "confirm": "on"}
    )
    assert response.status_code == 400
    assert "only outbound" in str(response.context["form"].non_field_errors())
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.QUEUED


def test_an_inbound_message_page_names_its_signer_and_links_the_anchor_that_vouched(
    staff_client: Client, world: Any
) -> None:
    anchor = world.anchor.certificate
    received = Message.objects.create(
        direction=Message.Direction.INBOUND, state=Message.State.DELIVERED,
        message_id="<in-signed@partner.example.net>", raw=b"x", signer="doc@partner.example.net",
        signer_organisation="Partner Clinic LLC", signer_fingerprint="ab" * 32, anchor=anchor,
    )
    page = staff_client.get(
        reverse("adminconsole:message-detail", kwargs={"pk": received.pk})
    ).content.decode()
    assert "<bdi>doc@partner.example.net</bdi> (<bdi>Partner Clinic LLC</bdi>)" in page
    assert ":".join(["AB"] * 32) in page
    certificate = reverse("adminconsole:certificate-detail", kwargs={"pk": anchor.pk})
    assert f'<a href="{certificate}">{anchor.subject}</a>' in page
