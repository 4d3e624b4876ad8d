"""The listener's batching of received message ids (hisp.services.batches): what is cut when,
what happens when publishing fails, at shutdown and across fork. The end-to-end effects
(a killed or stopped listener loses nothing) are in test_worker.py."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from hisp.services.batches import BatchPublisher


class Recorder:
    def __init__(self, fail_first: int = 0) -> None:
        self.batches: list[list[int]] = []
        self.times: list[float] = []
        self.fail_first = fail_first
        self.calls = 0
        self.arrived = threading.Event()

    def __call__(self, batch: list[int]) -> None:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise ConnectionError("broker down")
        self.batches.append(batch)
        self.times.append(time.monotonic())
        self.arrived.set()

    def ids(self) -> list[int]:
        return [pk for batch in self.batches for pk in batch]


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_full_batch_goes_at_once_without_waiting_out_the_linger():
    sent = Recorder()
    publisher = BatchPublisher(sent, size=4, linger=60)
    began = time.monotonic()
    for pk in range(1, 10):
        publisher.add(pk)
    wait_until(lambda: len(sent.ids()) >= 8)
    assert sent.batches[:2] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert sent.times[1] - began < 5  # nowhere near the 60 s linger
    assert publisher.close(timeout=5)
    assert sent.ids() == list(range(1, 10))  # the ninth handed over at close


def test_a_lone_id_waits_the_linger_and_gathers_what_arrives_meanwhile():
    sent = Recorder()
    publisher = BatchPublisher(sent, size=100, linger=0.3)
    began = time.monotonic()
    publisher.add(1)
    time.sleep(0.05)
    publisher.add(2)
    assert sent.arrived.wait(5)
    assert sent.batches == [[1, 2]]
    assert sent.times[0] - began >= 0.29
    publisher.close()


def test_publishing_failure_is_logged_and_later_batches_still_go(caplog):
    sent = Recorder(fail_first=1)
    publisher = BatchPublisher(sent, size=2, linger=0.01)
    with caplog.at_level(logging.ERROR, logger="hisp.services.batches"):
        publisher.add(1)
        publisher.add(2)
        wait_until(lambda: sent.calls >= 1)
        publisher.add(3)
        publisher.add(4)
        wait_until(lambda: sent.ids() == [3, 4])
    # Ids 1 and 2 are committed rows the sweeper re-queues; the log says so, by count.
    assert "publishing 2 received message id(s) failed; the sweeper will queue them" in (
        caplog.text
    )
    assert publisher.close()


def test_close_hands_over_what_waits_and_refuses_more():
    sent = Recorder()
    publisher = BatchPublisher(sent, size=100, linger=600)
    publisher.add(7)
    publisher.add(8)
    assert publisher.close(timeout=5)
    assert sent.batches == [[7, 8]]
    with pytest.raises(RuntimeError):
        publisher.add(9)


def test_close_reports_a_publish_that_does_not_return_in_time():
    release = threading.Event()
    publisher = BatchPublisher(lambda batch: release.wait(10), size=1, linger=0)
    publisher.add(1)
    assert publisher.close(timeout=0.2) is False
    release.set()


def _reap(child: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(child, 9)
    os.waitpid(child, 0)
    raise AssertionError("the forked child hung (a lock inherited from the parent?)")


def test_a_forked_child_never_publishes_its_parents_ids(tmp_path):
    sent_path = tmp_path / "sent-by-children"
    in_parent = Recorder()
    parent = os.getpid()

    def publish(batch: list[int]) -> None:
        if os.getpid() == parent:
            in_parent(batch)
        else:
            with open(sent_path, "a") as out:
                out.write(f"{batch}\n")

    publisher = BatchPublisher(publish, size=1000, linger=600)
    # Fork right after add(), while the parent's thread is waking up with the lock held:
    # the moment an inherited lock would hang the child. Many times, to meet that moment.
    for i in range(1, 31):
        publisher.add(i)
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                publisher.add(1000 + i)
                code = 0 if publisher.close(timeout=5) else 1
            finally:
                os._exit(code)
        assert _reap(child, timeout=10) == 0
    assert sent_path.read_text().splitlines() == [f"[{1000 + i}]" for i in range(1, 31)]
    assert publisher.close(timeout=5)
    assert in_parent.batches == [list(range(1, 31))]


@pytest.mark.parametrize("size, linger", [(0, 1.0), (1, -1.0)])
def test_nonsense_settings_are_refused(size, linger):
    with pytest.raises(ValueError):
        BatchPublisher(print, size=size, linger=linger)
