"""The production discovery cache across processes: a near cache in each process in front of the
real Redis, flushes reaching every process within ``NEAR_CHECK_EVERY``, and Redis going away."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from agent.discovery import CachePolicy
from agent.discovery.found import Found, Outcome
from hisp.discovery_redis import (
    NEAR_CHECK_EVERY,
    REDIS_RETRY_AFTER,
    REDIS_SOCKET_TIMEOUT,
    DiscoveryError,
    redis_cache,
)
from tests.hisp.discovery.near_worker import DOMAIN
from tests.support.services import free_port, port_open, redis_url, require_binary

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[3]
NAME = f"bob.{DOMAIN}."
# A flush is seen by the next lookup after NEAR_CHECK_EVERY; the rest is process start-up noise
# on a loaded machine (two cores shared by every test run).
BOUND = NEAR_CHECK_EVERY + 0.25


class Worker:
    """Another process with the production discovery cache (tests/hisp/discovery/near_worker)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.hisp.discovery.near_worker", url, prefix],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def ask(self, **command: object) -> object:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, "the worker process died"
        return json.loads(line)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of the test's own in the test Redis, deleted afterwards."""
    url = redis_url()
    value = f"test-near-{secrets.token_hex(6)}:"
    yield value
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match=value + "*"):
        client.delete(key)


@pytest.fixture
def workers(prefix: str) -> Iterator[tuple[Worker, Worker]]:
    pair = (Worker(redis_url(), prefix), Worker(redis_url(), prefix))
    yield pair
    for worker in pair:
        worker.close()


def raw_keys(prefix: str) -> list[bytes]:
    client = redis.Redis.from_url(redis_url())
    return [key for key in client.scan_iter(match=prefix + "*") if not key.endswith(b"epoch")]


def delete_values(prefix: str) -> None:
    """Drop the stored values (not the epoch) behind everyone's back: from then on only a near
    cache can answer."""
    client = redis.Redis.from_url(redis_url())
    for key in raw_keys(prefix):
        if b":generation:" not in key:
            client.delete(key)


def seconds_until_gone(worker: Worker, name: str = NAME) -> float:
    started = time.monotonic()
    while worker.ask(op="get", name=name) is not None:
        assert time.monotonic() - started < 5, "the flush never reached the other process"
        time.sleep(0.01)
    return time.monotonic() - started


def test_two_worker_processes_share_a_result_from_redis(workers: tuple[Worker, Worker],
                                                        prefix: str) -> None:
    one, two = workers
    assert two.ask(op="get", name=NAME) is None
    one.ask(op="put", name=NAME, note="v1", ttl=300)
    assert raw_keys(prefix)  # it went through Redis...
    assert two.ask(op="get", name=NAME) == ["v1"]  # ...and the other process found it there
    delete_values(prefix)
    assert two.ask(op="get", name=NAME) == ["v1"]  # now from its near cache, no Redis read


def test_a_domain_flush_in_one_process_reaches_the_other_within_the_bound(
    workers: tuple[Worker, Worker], prefix: str
) -> None:
    one, two = workers
    one.ask(op="put", name=NAME, note="v1", ttl=300)
    assert two.ask(op="get", name=NAME) == ["v1"]
    delete_values(prefix)  # so only the near cache could still answer "v1"
    one.ask(op="flush", entry=DOMAIN)
    assert seconds_until_gone(two) < BOUND
    one.ask(op="put", name=NAME, note="v2", ttl=300)
    assert two.ask(op="get", name=NAME) == ["v2"]


def test_an_address_flush_in_one_process_reaches_the_other_within_the_bound(
    workers: tuple[Worker, Worker],
) -> None:
    one, two = workers
    one.ask(op="put", name=NAME, note="v1", ttl=300)
    assert two.ask(op="get", name=NAME) == ["v1"]
    one.ask(op="flush", entry=f"bob@{DOMAIN}")
    assert seconds_until_gone(two) < BOUND


def test_the_near_cache_never_keeps_a_value_past_its_ttl(
    workers: tuple[Worker, Worker], prefix: str
) -> None:
    one, two = workers
    one.ask(op="put", name=NAME, note="short", ttl=0.6)
    assert two.ask(op="get", name=NAME) == ["short"]
    delete_values(prefix)
    assert two.ask(op="get", name=NAME) == ["short"]  # the near cache holds it...
    time.sleep(0.65)
    assert two.ask(op="get", name=NAME) is None  # ...for the 0.6 s it was stored for, no more


def test_with_redis_unreachable_lookups_go_on_uncached_and_flush_says_so() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    cache = redis_cache(url, policy=CachePolicy(), prefix=f"test-near-{secrets.token_hex(6)}:")
    started = time.monotonic()
    for _ in range(50):
        assert cache.get(domain=DOMAIN, kind="dns", name=NAME) is None
        cache.put(domain=DOMAIN, kind="dns", name=NAME, found=Found(Outcome.NOTHING, ttl=60))
        assert cache.get(domain=DOMAIN, kind="dns", name=NAME) is None  # nothing kept in memory
    assert time.monotonic() - started < 2 * REDIS_SOCKET_TIMEOUT
    strict = redis_cache(url, policy=CachePolicy(), prefix="unused:", strict=True)
    with pytest.raises(DiscoveryError, match="discovery cache unavailable"):
        strict.flush(DOMAIN)


def test_a_redis_that_never_answers_costs_one_time_out_then_nothing() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never replies
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        cache = redis_cache(url, policy=CachePolicy(), prefix="unused:")
        started = time.monotonic()
        assert cache.get(domain=DOMAIN, kind="dns", name=NAME) is None
        first = time.monotonic() - started
        for _ in range(100):
            assert cache.get(domain=DOMAIN, kind="dns", name=NAME) is None
        rest = time.monotonic() - started - first
    # The epoch read and the value read share one rest period: one time-out, not two.
    assert REDIS_SOCKET_TIMEOUT <= first < 2 * REDIS_SOCKET_TIMEOUT
    assert rest < 0.2


class Cuttable:
    """A TCP relay to Redis on loopback that the test can cut and restore: one process losing
    its connection (a network partition) while the others keep theirs."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = True
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.open = False
        with self.lock:
            for sock in self.sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.sockets.clear()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_a_process_cut_off_from_redis_during_a_flush_never_serves_the_flushed_entry(
    prefix: str,
) -> None:
    url = redis_url()
    host_port, _, db = url.split("//", 1)[1].partition("/")
    host, _, port = host_port.rpartition(":")
    relay = Cuttable((host or "127.0.0.1", int(port or 6379)))
    try:
        cut_off = Worker(f"redis://127.0.0.1:{relay.port}/{db or 0}", prefix)
        other = Worker(url, prefix)
        try:
            other.ask(op="put", name=NAME, note="v1", ttl=300)
            assert cut_off.ask(op="get", name=NAME) == ["v1"]
            relay.cut()
            other.ask(op="flush", entry=DOMAIN)  # the cut-off process cannot hear of it
            other.ask(op="put", name=NAME, note="v2", ttl=300)
            time.sleep(NEAR_CHECK_EVERY + 0.05)
            # Its next lookup cannot read the epoch: no cache at all, rather than a stale one.
            assert cut_off.ask(op="get", name=NAME) is None
            relay.restore()
            deadline = time.monotonic() + REDIS_RETRY_AFTER + 3
            answers = []
            while (answer := cut_off.ask(op="get", name=NAME)) != ["v2"]:
                answers.append(answer)
                assert time.monotonic() < deadline, answers
                time.sleep(0.05)
            assert ["v1"] not in answers
        finally:
            cut_off.close()
            other.close()
    finally:
        relay.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of the test's own (no persistence), which the test may stop."""
    binary = require_binary("redis-server")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(tmp_path)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not port_open("127.0.0.1", port, timeout=0.2):
        assert time.monotonic() < deadline and process.poll() is None, "redis-server did not start"
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0", process
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=10)


def test_when_redis_stops_lookups_go_on_uncached_and_start_fresh_when_it_returns(
    private_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, process = private_redis
    cache = redis_cache(url, policy=CachePolicy(), prefix="near:")
    assert cache.get(domain=DOMAIN, kind="dns", name=NAME) is None
    cache.put(domain=DOMAIN, kind="dns", name=NAME, found=Found(Outcome.NOTHING, ttl=300))
    assert cache.get(domain=DOMAIN, kind="dns", name=NAME) is not None
    process.terminate()
    process.wait(timeout=10)
    time.sleep(NEAR_CHECK_EVERY + 0.05)
    started = time.monotonic()
    assert cache.get(domain=DOMAIN, kind="dns", name=NAME) is None
    assert cache.near is not None and len(cache.near) == 0
    for _ in range(100):  # a dead Redis costs no waiting at all while it rests
        assert cache.get(domain=DOMAIN, kind="dns", name=NAME) is None
    assert time.monotonic() - started < REDIS_SOCKET_TIMEOUT * 2
    # Redis comes back empty: whatever this process held before is gone for good.
    port = url.rsplit(":", 1)[1].split("/")[0]
    restarted = subprocess.Popen(
        [require_binary("redis-server"), "--port", port, "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + REDIS_RETRY_AFTER + 5
        while True:
            assert cache.get(domain=DOMAIN, kind="dns", name=NAME) is None
            cache.put(domain=DOMAIN, kind="dns", name="probe.", found=Found(Outcome.NOTHING, ttl=60))
            if cache.get(domain=DOMAIN, kind="dns", name="probe.") is not None:
                break  # cached again
            assert time.monotonic() < deadline, "the cache never came back"
            time.sleep(0.1)
    finally:
        restarted.terminate()
        restarted.wait(timeout=10)
