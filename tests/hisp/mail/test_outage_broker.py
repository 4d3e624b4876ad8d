"""Redis gone at the moment a DATA commits, with real processes (``manage.py runsmtp``, a Celery
worker with its beat, a private redis-server): the client still gets its 250 for every message
stored, at once, and the sweeper queues the stored mail once Redis is back, each message
delivered exactly once. test_worker.py restarts Redis between bursts; here it is down, or
hung, while the listener commits."""

from __future__ import annotations

import os
import signal
import time

import pytest

from hisp.models import Message
from tests.hisp.mail import processes
from tests.hisp.mail.test_worker import (
    FAST_SWEEP,
    _delivered_once,
    _messages,
    _send,
    _settled,
    _stored,
    live_world,  # noqa: F401 - the fixture
)

pytestmark = pytest.mark.slow


def _timed_send(port: int, batch, rcpt: str) -> float:
    began = time.monotonic()
    _send(port, batch, rcpt)  # raises unless every message got its 250
    return time.monotonic() - began


def _redis_pid(redis: processes.PrivateRedis) -> int:
    assert redis.process is not None and redis.process.proc is not None
    return redis.process.proc.pid


def test_a_hung_broker_still_gets_every_stored_message_its_250_and_the_sweeper_queues_it(
    live_world, tmp_path  # noqa: F811
):
    world = live_world
    redis = processes.PrivateRedis(tmp_path)
    redis.start()
    queue = processes.queue_name()
    # One task per message, published after the commit and before the reply (no batching).
    env = processes.environment(redis.url, queue, **FAST_SWEEP, HISP_INGRESS_BATCH="1")
    port = processes.free_port()
    batch = _messages(world, 2, "hung-broker")
    smtp = processes.smtp(env, tmp_path, port)
    worker = None
    try:
        # Paused, not closed: connections open and take writes, and nothing ever answers, as
        # with a Redis that fails over or sits behind a firewall that drops its packets.
        os.kill(_redis_pid(redis), signal.SIGSTOP)
        took = _timed_send(port, batch, world.alice.address)
        assert took < 30, f"the client waited {took:.1f}s for its replies"
        assert _stored(len(batch))
        os.kill(_redis_pid(redis), signal.SIGCONT)
        back = time.monotonic()
        worker = processes.worker(env, tmp_path, queue)
        processes.wait_for(lambda: _settled(len(batch)), timeout=120,
                           what=f"the sweeper to queue the stored mail\n{worker.tail()}")
        print(f"hung broker: {took:.1f}s for {len(batch)} replies; delivered "
              f"{time.monotonic() - back:.1f}s after Redis came back (worker start included)")
    finally:
        os.kill(_redis_pid(redis), signal.SIGCONT)
        if worker is not None:
            worker.stop()
        smtp.stop()
        redis.stop()
    _delivered_once(batch)


def test_a_broker_that_is_down_while_a_burst_commits_loses_nothing_and_delivers_once(
    live_world, tmp_path  # noqa: F811
):
    world = live_world
    redis = processes.PrivateRedis(tmp_path)
    redis.start()
    queue = processes.queue_name()
    env = processes.environment(redis.url, queue, **FAST_SWEEP)  # batched, as by default
    port = processes.free_port()
    batch = _messages(world, 8, "broker-down")
    smtp = processes.smtp(env, tmp_path, port)
    worker = processes.worker(env, tmp_path, queue)
    try:
        assert redis.process is not None
        redis.process.kill()  # refused from now on: every publish of this burst fails
        took = _timed_send(port, batch, world.alice.address)
        assert took < 30, f"the client waited {took:.1f}s for its replies"
        assert Message.objects.filter(direction=Message.Direction.INBOUND,
                                      peer__startswith="127.0.0.1").count() == len(batch)
        redis.start()  # same port: the listener and the worker reconnect by themselves
        back = time.monotonic()
        processes.wait_for(lambda: _settled(len(batch)), timeout=120,
                           what=f"every message delivered\n{worker.tail()}")
        print(f"broker down: {took:.1f}s for {len(batch)} replies; delivered "
              f"{time.monotonic() - back:.1f}s after Redis came back")
    finally:
        worker.stop()
        smtp.stop()
        redis.stop()
    _delivered_once(batch)
