"""End to end with real processes: ``manage.py runsmtp`` takes mail from the partner HISP over
SMTP, a real Celery worker (Redis broker) unprotects, delivers and sends the processed MDN to
the partner's SMTP sink. And durability: killing the worker mid-burst, restarting Redis and the
SMTP process loses nothing and delivers nothing twice."""

from __future__ import annotations

import smtplib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db.models import Count

from hisp import mdn
from hisp.models import Delivery, MailboxEntry, Message
from hisp.services import compose
from tests.hisp.mail import processes
from tests.hisp.mail.world import HOSTED, World, make_world
from tests.support.services import free_port, redis_url

pytestmark = pytest.mark.slow

FAST_SWEEP = {"HISP_CLAIM_LEASE": "4s", "HISP_QUEUE_GRACE": "2s", "HISP_SWEEP_INTERVAL": "1s"}


@pytest.fixture
def live_world(transactional_db: None, tmp_path: Path) -> Iterator[World]:
    processes.database_url()  # skip early (fail in CI) without PostgreSQL
    with make_world(tmp_path) as world:
        yield world


def _messages(world: World, count: int, tag: str) -> list[tuple[str, bytes]]:
    made = []
    for i in range(count):
        message_id = f"<{tag}-{i}@partner.example.net>"
        inner = world.partner.inner(to=world.alice.address, message_id=message_id,
                                    subject=f"Referral {i}")
        made.append((message_id, world.partner.protect(inner, to=world.alice.address)))
    return made


def _send(port: int, batch: list[tuple[str, bytes]], rcpt: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("partner.example.net")
        for _message_id, raw in batch:
            client.sendmail("doc@partner.example.net", [rcpt], raw)


def _settled(expected: int) -> bool:
    inbound = Message.objects.filter(direction=Message.Direction.INBOUND,
                                     kind=Message.Kind.REGULAR, peer__startswith="127.0.0.1")
    mdns = Delivery.objects.filter(message__kind=Message.Kind.MDN, state=Delivery.State.SENT)
    return (
        inbound.filter(state=Message.State.DELIVERED).count() == expected
        and mdns.count() >= expected
    )


def _broker(db: int) -> str:
    return redis_url().rsplit("/", 1)[0] + f"/{db}"


def test_worker_delivers_smtp_mail_and_sends_mdns(live_world, tmp_path):
    world = live_world
    queue = processes.queue_name()
    env = processes.environment(_broker(13), queue, **FAST_SWEEP)
    port = free_port()
    batch = _messages(world, 4, "e2e")
    smtp = processes.smtp(env, tmp_path, port)
    worker = processes.worker(env, tmp_path, queue)
    try:
        _send(port, batch, world.alice.address)
        # Queued in this process (its own broker, which no worker reads): the workers' sweeper
        # finds the stored message after the grace period and sends it anyway.
        sent = compose.submit(
            address=world.alice.address,
            raw=compose.build_message(sender=world.alice.address, to=[world.partner.address],
                                      subject="Reply", body_text="Thanks."),
            actor="test", peer="test",
        )
        processes.wait_for(lambda: _settled(len(batch)), timeout=90,
                           what=f"delivery and MDNs\n{worker.tail()}")
        processes.wait_for(
            lambda: Delivery.objects.filter(message=sent, state=Delivery.State.SENT).exists(),
            timeout=60, what=f"the swept outbound message\n{worker.tail()}",
        )
    finally:
        worker.stop()
        smtp.stop()
    assert MailboxEntry.objects.filter(address=world.alice, folder="inbox").count() == len(batch)
    reports = {}
    for received in world.sink.handler.messages:
        opened = world.partner.open(received.data, our_domain=HOSTED)
        if b"disposition-notification" in opened:
            report = mdn.parse(opened)
            reports[report.original_message_id] = report.disposition
    assert reports == {message_id: "processed" for message_id, _ in batch}


def test_killed_worker_restarted_redis_and_smtp_lose_nothing_and_deliver_once(
    live_world, tmp_path
):
    world = live_world
    redis = processes.PrivateRedis(tmp_path)
    redis.start()
    queue = processes.queue_name()
    env = processes.environment(redis.url, queue, **FAST_SWEEP)
    port = free_port()
    batches = [_messages(world, n, f"burst{n}") for n in (16, 6, 6)]
    smtp = processes.smtp(env, tmp_path, port)
    worker = processes.worker(env, tmp_path, queue)
    try:
        sender = threading.Thread(target=_send, args=(port, batches[0], world.alice.address))
        sender.start()
        # Mid-burst: as soon as the worker has taken work, while the partner is still sending.
        processes.wait_for(
            lambda: Message.objects.filter(
                state__in=[Message.State.PROCESSING, Message.State.DELIVERED]
            ).exists(),
            timeout=60, what=f"the worker to take work\n{worker.tail()}",
        )
        worker.kill()  # claims held, tasks unacknowledged, nothing cleaned up
        sender.join(timeout=60)
        _send(port, batches[1], world.alice.address)
        redis.restart()  # every queued task is gone
        smtp.stop()
        smtp = processes.smtp(env, tmp_path, port)
        _send(port, batches[2], world.alice.address)
        worker = processes.worker(env, tmp_path, queue)
        total = sum(len(b) for b in batches)
        processes.wait_for(lambda: _settled(total), timeout=120,
                           what=f"every message delivered\n{worker.tail()}")
    finally:
        worker.stop()
        smtp.stop()
        redis.stop()
    inbound = Message.objects.filter(direction=Message.Direction.INBOUND,
                                     kind=Message.Kind.REGULAR, peer__startswith="127.0.0.1")
    assert inbound.count() == total  # every 250 was stored
    assert set(inbound.values_list("state", flat=True)) == {Message.State.DELIVERED}
    per_message = inbound.annotate(
        n_entries=Count("entries", distinct=True), n_mdns=Count("reports", distinct=True)
    )
    assert {(m.n_entries, m.n_mdns) for m in per_message} == {(1, 1)}  # exactly once each
    expected = {message_id for batch in batches for message_id, _ in batch}
    assert set(inbound.values_list("message_id", flat=True)) == expected


def _stored(count: int) -> bool:
    return Message.objects.filter(direction=Message.Direction.INBOUND,
                                  kind=Message.Kind.REGULAR, peer__startswith="127.0.0.1",
                                  state=Message.State.RECEIVED).count() == count


def _delivered_once(expected: list[tuple[str, bytes]]) -> None:
    inbound = Message.objects.filter(direction=Message.Direction.INBOUND,
                                     kind=Message.Kind.REGULAR, peer__startswith="127.0.0.1")
    per_message = inbound.annotate(
        n_entries=Count("entries", distinct=True), n_mdns=Count("reports", distinct=True)
    )
    assert {(m.state, m.n_entries, m.n_mdns) for m in per_message} == {
        (Message.State.DELIVERED, 1, 1)
    }
    assert sorted(inbound.values_list("message_id", flat=True)) == sorted(
        message_id for message_id, _ in expected
    )


# The listener gathers accepted ids into one task (hisp.services.batches). Lingering for ten
# minutes pins the ids in the listener's memory, where the two ways it can stop find them.
LINGER_LONG = {"HISP_INGRESS_LINGER_MS": "600000", "HISP_INGRESS_BATCH": "1000"}


def test_listener_killed_while_ids_wait_for_their_batch_loses_nothing(live_world, tmp_path):
    world = live_world
    queue = processes.queue_name()
    env = processes.environment(_broker(14), queue, **FAST_SWEEP, **LINGER_LONG)
    port = free_port()
    batch = _messages(world, 5, "killed-listener")
    smtp = processes.smtp(env, tmp_path, port)
    worker = None
    try:
        _send(port, batch, world.alice.address)  # every one answered 250
        assert _stored(len(batch))
        smtp.kill()  # the ids die with it, unpublished
        worker = processes.worker(env, tmp_path, queue)  # its beat runs the sweeper
        processes.wait_for(lambda: _settled(len(batch)), timeout=120,
                           what=f"the sweeper to queue the stored mail\n{worker.tail()}")
    finally:
        if worker is not None:
            worker.stop()
        smtp.stop()
    _delivered_once(batch)


def test_listener_stopping_hands_over_the_ids_still_waiting(live_world, tmp_path):
    world = live_world
    queue = processes.queue_name()
    # No sweeper help within the test: only the listener's own hand-over can queue them.
    env = processes.environment(_broker(15), queue, **LINGER_LONG, HISP_QUEUE_GRACE="1h")
    port = free_port()
    batch = _messages(world, 3, "stopped-listener")
    smtp = processes.smtp(env, tmp_path, port)
    worker = processes.worker(env, tmp_path, queue)
    try:
        _send(port, batch, world.alice.address)
        assert _stored(len(batch))  # still waiting: the linger has minutes to go
        smtp.stop()  # SIGTERM: close the listeners, then publish what waits
        processes.wait_for(lambda: _settled(len(batch)), timeout=120,
                           what=f"the handed-over batch to be processed\n{worker.tail()}")
    finally:
        worker.stop()
        smtp.stop()
    _delivered_once(batch)
