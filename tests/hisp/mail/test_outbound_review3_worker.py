"""Outbound review 3, with real processes: a delivery held for want of the partner's
certificate leaves within seconds of an operator importing it (``manage.py cert import``, its
own process), taken up by a real Celery worker over Redis, not at the periodic re-check
(HISP_PENDING_CERTIFICATE_RECHECK, 15 minutes by default) that used to be its only way out."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from hisp.models import Delivery, Route
from hisp.services import compose
from tests.hisp.mail import processes
from tests.hisp.mail.drive import drain
from tests.hisp.mail.partner import PARTNER, leaf_certificate
from tests.hisp.mail.world import World, make_world
from tests.support.services import redis_url

pytestmark = pytest.mark.slow

NURSE = f"nurse@{PARTNER}"


@pytest.fixture
def live_world(transactional_db: None, tmp_path: Path) -> Iterator[World]:
    processes.database_url()  # skip early (fail in CI) without PostgreSQL
    with make_world(tmp_path) as world:
        yield world


def test_a_certificate_imported_by_an_operator_releases_the_held_delivery_at_once(
    live_world, tmp_path
):
    world = live_world
    Route.objects.filter(domain=PARTNER).update(hold_pending_certificate=True)
    raw = compose.build_message(sender=world.alice.address, to=[NURSE], subject="Referral",
                                body_text="Please see the patient.", delivery_notification=False)
    message = compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
    drain()
    delivery = Delivery.objects.get(message=message)
    assert delivery.state == Delivery.State.PENDING_CERTIFICATE
    partner = world.partner
    certificate = tmp_path / "nurse.pem"
    certificate.write_bytes(
        leaf_certificate(partner.ca, partner.ca_key, partner.key, NURSE).public_bytes(
            serialization.Encoding.PEM
        )
    )
    queue = processes.queue_name()
    env = processes.environment(redis_url(), queue)
    worker = processes.worker(env, tmp_path, queue)
    try:
        imported = subprocess.run(
            [sys.executable, "manage.py", "cert", "import", str(certificate)],
            cwd=processes.ROOT, env=env, capture_output=True, timeout=60, check=False,
        )
        assert imported.returncode == 0, imported.stderr.decode(errors="replace")
        # The worker's sweeper would re-check it only when due, 15 minutes from now.
        processes.wait_for(
            lambda: Delivery.objects.filter(pk=delivery.pk, state=Delivery.State.SENT).exists(),
            timeout=45, what=f"the held delivery to be sent\n{worker.tail()}",
        )
    finally:
        worker.stop()
    assert [r.rcpt_tos for r in world.sink.handler.messages] == [[NURSE]]
