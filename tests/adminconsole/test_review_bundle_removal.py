"""A trust bundle can be removed from the console: the page names what stops being trusted,
and the removal needs a reason and a tick, and is audited with the anchors' fingerprints.
Before, nothing (console or CLI) could remove a bundle, although the anchor page sends staff
to do exactly that."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

from adminconsole.forms.confirm import CONFIRM_REQUIRED
from hisp.models import AuditEvent, Certificate, TrustAnchor, TrustBundle, TrustBundleEvent
from tests.adminconsole import pkitools

WHERE = "198.51.100.23"


def _bundle_anchor(world: Any, name: str) -> TrustAnchor:
    certificate = pkitools.store(pkitools.make_ca(name), source=Certificate.Source.ANCHOR)
    return TrustAnchor.objects.create(certificate=certificate, domain=world.domain,
                                      bundle=world.bundle)


def _url(world: Any) -> str:
    return reverse("adminconsole:bundle-remove", kwargs={"pk": world.bundle.pk})


def test_the_bundle_page_offers_removal(staff_client: Client, world: Any) -> None:
    body = staff_client.get(reverse("adminconsole:bundle-detail",
                                    kwargs={"pk": world.bundle.pk})).content.decode()
    assert _url(world) in body


def test_removal_page_names_the_bundle_and_what_stops_being_trusted(
    staff_client: Client, world: Any
) -> None:
    _bundle_anchor(world, "Community Member CA 1")
    _bundle_anchor(world, "Community Member CA 2")
    response = staff_client.get(_url(world))
    body = response.content.decode()
    assert response.status_code == 200
    assert "Remove the bundle Community bundle from direct.example.org" in body
    assert "direct.example.org stops trusting the 2 anchors from this bundle" in body
    assert "Incoming mail signed under these anchors is refused for the 1 address" in body
    assert TrustBundle.objects.filter(pk=world.bundle.pk).exists()


def test_removal_without_the_tick_changes_nothing(staff_client: Client, world: Any) -> None:
    anchor = _bundle_anchor(world, "Community Member CA")
    response = staff_client.post(_url(world), {"reason": "left the community"})
    assert response.status_code == 400
    assert CONFIRM_REQUIRED in response.content.decode()
    assert TrustAnchor.objects.filter(pk=anchor.pk).exists()
    assert not AuditEvent.objects.filter(action="bundle.remove").exists()


def test_confirmed_removal_drops_the_bundle_its_anchors_and_history_and_is_audited(
    staff_client: Client, world: Any
) -> None:
    anchor = _bundle_anchor(world, "Community Member CA")
    response = staff_client.post(
        _url(world), {"reason": "we left the community", "confirm": "on"}, REMOTE_ADDR=WHERE
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("adminconsole:bundle-list")
    assert not TrustBundle.objects.filter(pk=world.bundle.pk).exists()
    assert not TrustAnchor.objects.filter(pk=anchor.pk).exists()
    assert not TrustBundleEvent.objects.filter(bundle_id=world.bundle.pk).exists()
    # The certificate row stays: messages verified under it still name it.
    assert Certificate.objects.filter(pk=anchor.certificate_id).exists()
    event = AuditEvent.objects.get(action="bundle.remove")
    assert (event.actor_label, event.client_address) == ("sam", WHERE)
    assert (event.object_type, event.object_id) == ("hisp.trustbundle", str(world.bundle.pk))
    assert event.detail["reason"] == "we left the community"
    assert event.detail["removed"] == [anchor.certificate.fingerprint_sha256]
    assert event.detail["domain"] == "direct.example.org"
    assert event.detail["url"] == "https://bundles.example.net/community.p7b"
    # What each refresh trusted is kept, although the bundle's own history is gone.
    assert [entry["added"] for entry in event.detail["history"]] == [["cd" * 32]]


def test_an_anchor_also_imported_by_hand_stays_trusted(staff_client: Client, world: Any) -> None:
    in_bundle = _bundle_anchor(world, "Shared Partner CA")
    by_hand = TrustAnchor.objects.create(certificate=in_bundle.certificate, domain=world.domain)
    page = staff_client.get(_url(world)).content.decode()
    assert "1 of them stay trusted through another anchor" in page
    staff_client.post(_url(world), {"reason": "duplicate bundle", "confirm": "on"})
    assert TrustAnchor.objects.filter(pk=by_hand.pk).exists()
    assert not TrustAnchor.objects.filter(pk=in_bundle.pk).exists()


def _sessions_waiting_on_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND datname = current_database()")
        return int(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_a_removal_during_a_scheduled_refresh_waits_for_it_instead_of_deadlocking(
    staff_client: Client, world: Any
) -> None:
    """A refresh locks the bundle's anchors, then updates the bundle row (trust.refresh_bundle);
    the removal takes the same locks in the same order, so two real sessions finish one after
    the other. Taking the bundle row first deadlocked: PostgreSQL then aborted the removal."""
    _bundle_anchor(world, "Community Member CA")
    locked, results = threading.Event(), {}

    def refresh() -> None:
        try:
            with transaction.atomic():
                list(TrustAnchor.objects.select_for_update().filter(bundle=world.bundle))
                locked.set()
                deadline = time.monotonic() + 10
                while _sessions_waiting_on_a_lock() < 1 and time.monotonic() < deadline:
                    time.sleep(0.02)
                TrustBundle.objects.filter(pk=world.bundle.pk).update(last_error="")
            results["refresh"] = "committed"
        except Exception as exc:  # the test reads it
            results["refresh"] = exc
        finally:
            connection.close()  # this thread's own database session

    thread = threading.Thread(target=refresh, daemon=True)
    thread.start()
    assert locked.wait(10)
    response = staff_client.post(_url(world), {"reason": "we left", "confirm": "on"})
    thread.join(10)
    assert results["refresh"] == "committed"
    assert response.status_code == 302
    assert not TrustBundle.objects.filter(pk=world.bundle.pk).exists()
