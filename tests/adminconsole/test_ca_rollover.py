"""Replacing a domain's issuing CA from the console: two confirmed steps, each audited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from adminconsole.forms.confirm import CONFIRM_REQUIRED
from hisp.certificates import display_fingerprint
from hisp.models import AuditEvent, Certificate, Domain
from hisp.services import ca_rollover, identity, pki

WHERE = "198.51.100.7"


@pytest.fixture(autouse=True)
def _fast_keys(settings: Any) -> None:
    settings.HISP_CA_KEY_BITS = 2048


@pytest.fixture
def hosted(db: None) -> Domain:
    domain = identity.add_domain("rollover.example.org")
    identity.add_address("carol@rollover.example.org", address_cert=True)
    return domain


def _page(domain: Domain) -> str:
    return reverse("adminconsole:domain-ca-rollover", kwargs={"pk": domain.pk})


def _issuing(domain: Domain) -> Certificate:
    domain.refresh_from_db()
    assert domain.issuing_ca is not None
    return domain.issuing_ca


def _queued_tasks() -> list[str]:
    """The task names in the broker's queue (the filesystem transport the tests use)."""
    folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
    return [json.loads(p.read_bytes())["headers"]["task"] for p in folder.glob("*.msg")]


def test_prepare_then_activate_from_the_console(
    staff_client: Client, hosted: Domain, django_capture_on_commit_callbacks: Any,
) -> None:
    before = _queued_tasks().count("hisp.pki.renew_certificates")
    old = _issuing(hosted)
    detail = reverse("adminconsole:domain-detail", kwargs={"pk": hosted.pk})
    assert "Replace this CA" in staff_client.get(detail).content.decode()

    page = staff_client.get(_page(hosted)).content.decode()
    assert "Prepare a successor for the CA of rollover.example.org" in page
    assert "?step=prepare" in page
    # Without the tick nothing happens.
    response = staff_client.post(_page(hosted) + "?step=prepare", {}, REMOTE_ADDR=WHERE)
    assert response.status_code == 400 and CONFIRM_REQUIRED in response.content.decode()
    assert ca_rollover.pending(hosted.name) is None

    response = staff_client.post(_page(hosted) + "?step=prepare", {"confirm": "on"},
                                 REMOTE_ADDR=WHERE)
    assert response.status_code == 302
    successor = ca_rollover.pending(hosted.name)
    assert successor is not None and _issuing(hosted) == old
    event = AuditEvent.objects.get(action="ca.rollover-prepare")
    assert event.actor_label == "sam" and event.client_address == WHERE

    # The domain page points at the export of the successor, which partners import.
    page = staff_client.get(detail).content.decode()
    assert "successor prepared" in page and "?next=1" in page
    exported = staff_client.get(
        reverse("adminconsole:anchor-export", kwargs={"pk": hosted.pk}) + "?next=1"
    ).content.decode()
    assert "successor trust anchor" in exported
    assert display_fingerprint(successor.fingerprint_sha256) in exported
    download = staff_client.get(
        reverse("adminconsole:anchor-export", kwargs={"pk": hosted.pk}) + "?next=1&download=1"
    )
    assert b"BEGIN CERTIFICATE" in download.content
    assert "next-anchor.pem" in download["Content-Disposition"]

    # A confirmation given on the "prepare" page does not activate anything.
    stale = staff_client.post(_page(hosted) + "?step=prepare", {"confirm": "on"})
    assert stale.status_code == 400 and "changed since this page was shown" in stale.content.decode()
    assert _issuing(hosted) == old

    page = staff_client.get(_page(hosted)).content.decode()
    assert "Activate the successor CA of rollover.example.org" in page
    assert "certificates are renewed" in page
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(_page(hosted) + "?step=activate", {"confirm": "on"},
                                     REMOTE_ADDR=WHERE)
    assert response.status_code == 302
    assert _issuing(hosted) == successor
    event = AuditEvent.objects.get(action="ca.rollover-activate", actor_label="sam")
    # The request only switches the CA; the renewal task (queued on commit) renews.
    assert event.detail["renewed"] == 0 and event.detail["left_to_the_renewal_task"] >= 3
    assert _queued_tasks().count("hisp.pki.renew_certificates") == before + 1
    renewed = pki.renew_due()
    assert len(renewed) == event.detail["left_to_the_renewal_task"]
    assert all(c.issued_by_id == successor.pk for c in renewed)
    assert not Certificate.objects.filter(issued_by=old, superseded_by__isnull=True,
                                          revoked_at__isnull=True).exists()


@pytest.mark.parametrize("method", ["get", "post"])
def test_only_verified_staff_reach_the_rollover(
    method: str, hosted: Domain, client: Client, outsider_client: Client,
    unverified_staff_client: Client,
) -> None:
    url = _page(hosted) + "?step=prepare"
    data = {"confirm": "on"} if method == "post" else None
    assert getattr(client, method)(url, data).status_code == 302  # to sign-in
    assert getattr(outsider_client, method)(url, data).status_code == 404
    refused = getattr(unverified_staff_client, method)(url, data)
    assert refused.status_code == 302 and "/login/code/" in refused["Location"]
    assert ca_rollover.pending(hosted.name) is None


def test_dashboard_lists_cas_that_end_within_one_certificate_lifetime(
    staff_client: Client, hosted: Domain, settings: Any
) -> None:
    url = reverse("adminconsole:dashboard")
    assert "CAs to replace" not in staff_client.get(url).content.decode()
    ca = _issuing(hosted)
    settings.HISP_CERT_VALIDITY = (ca.not_after - ca.not_before) * 2
    page = staff_client.get(url).content.decode()
    assert "CAs to replace" in page and _page(hosted) in page
