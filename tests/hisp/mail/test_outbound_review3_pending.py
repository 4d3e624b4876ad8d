"""Outbound review 3: deliveries held for a certificate.

A staff import of the partner's certificate, of a trust anchor or of a bundle queues (on
commit, an id only) a prompt re-check of the held deliveries it may release, instead of leaving
them to the periodic re-check up to HISP_PENDING_CERTIFICATE_RECHECK later. And the sender's
"pending" notice, like the failure that may follow it, says why it is held: no certificate
(4.7.31, then 5.7.31) or a certificate that is not trusted (4.7.11, then 5.7.11).

The queue is the real broker of the tests (its filesystem transport, which no worker reads
here): the tests read what was published and run it as a worker would. A real Celery worker
releases a held delivery after ``manage.py cert import`` in test_outbound_review3_worker.py.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from django.conf import settings as django_settings
from django.utils import timezone

from hisp.models import Certificate, Delivery, Route
from hisp.services import compose, outbound, pki, trust
from hisp.tasks import mail as tasks
from tests.hisp.mail.conftest import HOSTED
from tests.hisp.mail.drive import drain
from tests.hisp.mail.partner import PARTNER, Partner, leaf_certificate
from tests.hisp.mail.test_outbound import _alice_dsn_texts, _alice_dsns

NURSE = f"nurse@{PARTNER}"
CLERK = f"clerk@{PARTNER}"


@pytest.fixture(autouse=True)
def _filesystem_broker(settings):
    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.skip("reads the queue of the filesystem broker")


def _published(before: set[Path]) -> list[tuple[str, list]]:
    """The (task name, arguments) published to the broker since ``before`` was listed."""
    folder = Path(django_settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
    found = []
    for path in sorted(set(folder.glob("*.msg")) - before, key=lambda p: p.stat().st_mtime_ns):
        envelope = json.loads(path.read_bytes())
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        found.append((envelope["headers"]["task"], args))
    return found


def _queue() -> set[Path]:
    return set(Path(django_settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]).glob("*.msg"))


def _run_as_the_worker(published, capture) -> list[str]:
    """Run each task published (as the worker would, by name and arguments), then the tasks
    those publish, until none is left; returns what each returned."""
    results = []
    while published:
        before = _queue()
        with capture(execute=True):
            for name, args in published:
                task = {"hisp.mail.recheck_held": tasks.recheck_held,
                        "hisp.mail.deliver": tasks.deliver}[name]
                results.append(task(*args))
        published = _published(before)
    return results


def _hold(world, *recipients: str) -> list[Delivery]:
    Route.objects.filter(domain=PARTNER).update(hold_pending_certificate=True)
    held = []
    for rcpt in recipients:
        raw = compose.build_message(sender=world.alice.address, to=[rcpt], subject="Referral",
                                    body_text="Please see the patient.",
                                    delivery_notification=False)
        message = compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
        drain()
        delivery = Delivery.objects.get(message=message)
        assert delivery.state == Delivery.State.PENDING_CERTIFICATE
        held.append(delivery)
    return held


def _pem(certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def test_importing_the_partners_certificate_rechecks_its_held_deliveries_at_once(
    world, django_capture_on_commit_callbacks
):
    nurse, clerk = _hold(world, NURSE, CLERK)
    partner = world.partner  # its CA is an anchor of ours already: only the certificate lacks
    before = _queue()
    with django_capture_on_commit_callbacks(execute=False) as on_commit:
        row = pki.import_certificate(
            _pem(leaf_certificate(partner.ca, partner.ca_key, partner.key, NURSE))
        )
        assert _published(before) == []  # nothing before the import commits
    for callback in on_commit:
        callback()
    # One task, carrying the certificate's id only, and nothing done in the staff request.
    assert _published(before) == [("hisp.mail.recheck_held", [row.pk, None])]
    assert Delivery.objects.get(pk=nurse.pk).state == Delivery.State.PENDING_CERTIFICATE
    # The worker re-checks the delivery to the certificate's address (in any case), only.
    results = _run_as_the_worker(_published(before), django_capture_on_commit_callbacks)
    assert results[:2] == [1, "released"]
    drain()
    assert [r.rcpt_tos for r in world.sink.handler.messages] == [[NURSE]]
    states = {d.pk: d.state for d in Delivery.objects.filter(pk__in=[nurse.pk, clerk.pk])}
    assert states == {nurse.pk: Delivery.State.SENT, clerk.pk: Delivery.State.PENDING_CERTIFICATE}
    assert len(_alice_dsns(world)) == 2  # the two "pending" notices, nothing more


def test_a_domain_certificate_rechecks_every_held_delivery_to_its_domain(
    world, django_capture_on_commit_callbacks
):
    held = _hold(world, NURSE, CLERK)
    partner = world.partner
    domain_cert = leaf_certificate(partner.ca, partner.ca_key, partner.key, PARTNER,
                                   names=[x509.DNSName(PARTNER)])
    before = _queue()
    with django_capture_on_commit_callbacks(execute=True):
        row = pki.import_certificate(_pem(domain_cert))
    assert row.binding == Certificate.Binding.DOMAIN
    results = _run_as_the_worker(_published(before), django_capture_on_commit_callbacks)
    assert results[:3] == [2, "released", "released"]
    drain()
    assert sorted(r.rcpt_tos[0] for r in world.sink.handler.messages) == sorted([CLERK, NURSE])
    assert {d.state for d in Delivery.objects.filter(pk__in=[d.pk for d in held])} == {
        Delivery.State.SENT
    }


def _untrusted_nurse(world, tmp_path) -> Partner:
    """The nurse's certificate is imported, but the CA that issued it is no anchor of ours."""
    nurse = Partner.create(tmp_path / "nurse", slot="nurse", address=NURSE)
    pki.import_certificate(nurse.cert_file.read_bytes())
    return nurse


def test_a_hold_for_an_untrusted_certificate_says_so_and_an_anchor_releases_it(
    world, tmp_path, django_capture_on_commit_callbacks
):
    nurse = _untrusted_nurse(world, tmp_path)
    [held] = _hold(world, NURSE)
    assert held.detail == "untrusted-recipient"
    [pending] = _alice_dsns(world)
    assert (pending.recipients[0].action, pending.recipients[0].status) == ("delayed", "4.7.11")
    assert pending.recipients[0].diagnostic == "x-direct; pending-certificate (untrusted-recipient)"
    [text] = _alice_dsn_texts(world)
    assert "is not trusted" in text
    assert "no usable certificate" not in text
    # Staff trust the nurse's CA for mail we send: the hold ends now, not at the re-check.
    before = _queue()
    with django_capture_on_commit_callbacks(execute=True):
        trust.import_anchors(nurse.ca_file.read_bytes(), domain=HOSTED)
    published = _published(before)
    assert published == [("hisp.mail.recheck_held", [None, HOSTED])]
    assert _run_as_the_worker(published, django_capture_on_commit_callbacks)[:2] == [1, "released"]
    drain()
    assert [r.rcpt_tos for r in world.sink.handler.messages] == [[NURSE]]
    assert b"Please see the patient." in nurse.open(world.sink.handler.messages[0].data,
                                                    our_domain=HOSTED)


def test_an_anchor_for_incoming_mail_only_rechecks_nothing(
    world, tmp_path, django_capture_on_commit_callbacks
):
    nurse = _untrusted_nurse(world, tmp_path)
    _hold(world, NURSE)
    before = _queue()
    with django_capture_on_commit_callbacks(execute=True):
        trust.import_anchors(nurse.ca_file.read_bytes(), domain=HOSTED, outgoing=False)
    assert _published(before) == []


def test_an_anchor_of_another_hosted_domain_rechecks_none_of_this_domains_deliveries(
    world, tmp_path, django_capture_on_commit_callbacks
):
    # Outbound trust is the sender's domain's: an anchor another of our domains imports can
    # release none of alice's held deliveries, so none is re-checked (and discovered again).
    from hisp.services import identity

    nurse = _untrusted_nurse(world, tmp_path)
    [held] = _hold(world, NURSE)
    other = identity.add_domain("other-clinic.example.org").name
    before = _queue()
    with django_capture_on_commit_callbacks(execute=True):
        trust.import_anchors(nurse.ca_file.read_bytes(), domain=other)
    published = _published(before)
    assert published == [("hisp.mail.recheck_held", [None, other])]
    assert _run_as_the_worker(published, django_capture_on_commit_callbacks) == [0]
    assert Delivery.objects.get(pk=held.pk).state == Delivery.State.PENDING_CERTIFICATE


def test_a_bundle_that_adds_an_anchor_rechecks_held_deliveries(
    world, tmp_path, django_capture_on_commit_callbacks
):
    nurse = _untrusted_nurse(world, tmp_path)
    _hold(world, NURSE)
    bundle = pkcs7.serialize_certificates([nurse.ca], serialization.Encoding.DER)
    before = _queue()
    with django_capture_on_commit_callbacks(execute=True):
        trust.add_bundle(bundle, domain=HOSTED, name="nurses")
    published = _published(before)
    assert published == [("hisp.mail.recheck_held", [None, HOSTED])]
    assert _run_as_the_worker(published, django_capture_on_commit_callbacks)[:2] == [1, "released"]


def test_an_untrusted_certificate_at_the_end_of_the_hold_fails_with_5_7_11(
    world, tmp_path, settings
):
    _untrusted_nurse(world, tmp_path)
    [held] = _hold(world, NURSE)
    Delivery.objects.filter(pk=held.pk).update(
        first_attempt_at=timezone.now() - settings.HISP_PENDING_CERTIFICATE_HOLD
    )
    assert outbound.deliver(held.pk) == "failed"
    [_pending, failed] = _alice_dsns(world)
    assert (failed.recipients[0].action, failed.recipients[0].status) == ("failed", "5.7.11")
    text = _alice_dsn_texts(world)[1]
    assert "is not trusted" in text
    assert "no usable certificate" not in text


def test_a_hold_for_a_missing_certificate_still_says_4_7_31(world):
    _hold(world, NURSE)
    [pending] = _alice_dsns(world)
    assert (pending.recipients[0].action, pending.recipients[0].status) == ("delayed", "4.7.31")
    assert "no usable certificate was found" in _alice_dsn_texts(world)[0]
