"""The scheduled PKI tasks, called as the worker calls them, and their beat entries."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from hisp.models import Address, Certificate, Domain, TrustBundle
from hisp.services import trust
from hisp.tasks import pki as tasks
from tests.hisp.pki.conftest import VECTORS
from tests.hisp.pki.support import bundle_server


def test_beat_schedules_renewal_crls_and_bundles() -> None:
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"hisp.pki.renew_certificates", "hisp.pki.regenerate_crls",
            "hisp.pki.refresh_bundles"} <= scheduled


def test_renewal_task_renews_certificates_past_twelve_months(alice: Address) -> None:
    assert tasks.renew_certificates() == 0
    Certificate.objects.filter(address=alice).update(
        not_before=timezone.now() - timedelta(days=366))
    assert tasks.renew_certificates() == 1
    assert tasks.renew_certificates() == 0  # running twice does nothing the second time
    assert Certificate.objects.filter(address=alice, superseded_by__isnull=True).count() == 1


def test_crl_task_regenerates_only_when_due(provider: Domain) -> None:
    ca = provider.issuing_ca
    assert tasks.regenerate_crls() == 0
    ca.crls.update(next_update=timezone.now() + timedelta(hours=1))
    assert tasks.regenerate_crls() == 1
    assert tasks.regenerate_crls() == 0


def test_bundle_task_refreshes_due_bundles(provider: Domain, settings: Any) -> None:
    with bundle_server() as server:
        server.body = (VECTORS / "gateway_testBundle.p7b").read_bytes()
        bundle = trust.add_bundle(server.url, domain=provider.name).bundle
        assert tasks.refresh_bundles() == 0  # just fetched: not due
        TrustBundle.objects.filter(pk=bundle.pk).update(
            last_fetched_at=timezone.now() - settings.HISP_BUNDLE_REFRESH_INTERVAL)
        assert tasks.refresh_bundles() == 1
        assert server.hits == 2


@pytest.mark.django_db
def test_worker_start_refuses_a_wrong_kek(alice: Address, settings: Any) -> None:
    from hisp.bootstrap import new_kek

    tasks._check_kek_at_start()
    settings.HISP_KEY_ENCRYPTION_KEY = new_kek()
    with pytest.raises(SystemExit, match="refusing to start: HISP_KEY_ENCRYPTION_KEY does not"):
        tasks._check_kek_at_start()
