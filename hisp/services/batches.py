"""Publishing the ids of received messages to the workers a batch at a time.

Every Celery task costs about 2.5 ms of CPU beyond its own work (the publish in the listener,
Redis, the prefork parent's hand-off to a child, the ack), a quarter of what a whole received
message costs. When mail arrives faster than that, the SMTP listener gathers the ids committed
within a few milliseconds of each other into one ``process_incoming_batch`` task: the way Kafka
producers linger and databases group commits.

Nothing is made less durable by waiting: an id is handed over only after its message and
envelope have committed (and the sending HISP has its 250), and an id whose publish never
happens (the process died while it waited, or Redis was down) is re-queued by the sweeper
after ``HISP_QUEUE_GRACE``, exactly like a task Redis lost.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable

log = logging.getLogger(__name__)


class BatchPublisher:
    """Hands ids to ``publish`` in lists of at most ``size``, waiting at most ``linger``
    seconds after the first id of a batch for more to arrive.

    ``add`` never blocks on the broker: publishing happens on one background thread, so the
    SMTP session that committed the message is answered at once. A forked child starts with
    an empty batch, a fresh lock and its own thread: it must not publish its parent's ids a
    second time, nor inherit a lock the parent's thread held at the moment of the fork.
    """

    def __init__(self, publish: Callable[[list[int]], object], *, size: int, linger: float):
        if size < 1 or linger < 0:
            raise ValueError("a batch holds at least one id and lingers for no negative time")
        self._publish = publish
        self.size = size
        self.linger = linger
        self._ready = threading.Condition()
        self._pending: list[int] = []
        self._busy = 0  # ids taken from _pending whose publish has not returned yet
        self._owner = 0  # the pid whose thread serves _pending
        self._closed = False
        _live.add(self)

    def add(self, pk: int) -> None:
        with self._ready:
            if self._closed:
                raise RuntimeError("the publisher is closed")
            if self._owner != os.getpid():
                self._start()
            self._pending.append(pk)
            self._ready.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Publish what is waiting now and wait until it has been handed over (shutdown).
        False when that took longer than ``timeout``: the sweeper will queue the rest."""
        deadline = time.monotonic() + timeout
        with self._ready:
            self._flush_now = True
            self._ready.notify_all()
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0 or self._owner != os.getpid():
                    return not (self._pending or self._busy)
                self._ready.wait(left)
            self._flush_now = False
        return True

    def close(self, timeout: float = 10.0) -> bool:
        flushed = self.flush(timeout)
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        return flushed

    _flush_now = False

    def _after_fork_in_child(self) -> None:
        self._ready = threading.Condition()
        self._pending = []
        self._busy = 0
        self._owner = 0
        self._flush_now = False

    def _start(self) -> None:
        self._pending = []
        self._busy = 0
        self._owner = os.getpid()
        threading.Thread(target=self._serve, name="batch-publisher", daemon=True).start()

    def _serve(self) -> None:
        pid = os.getpid()
        while True:
            with self._ready:
                while not self._pending and not self._closed:
                    self._ready.wait()
                if self._owner != pid or (self._closed and not self._pending):
                    return
                deadline = time.monotonic() + self.linger
                while len(self._pending) < self.size and not self._flush_now:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._ready.wait(left)
                batch, self._pending = self._pending[: self.size], self._pending[self.size :]
                self._busy = len(batch)
            try:
                self._publish(batch)
            except Exception:
                # The rows are committed and untouched: the sweeper queues them after the grace
                # period, as it does for a task the broker lost.
                log.exception("publishing %d received message id(s) failed; the sweeper will "
                              "queue them", len(batch))
            finally:
                with self._ready:
                    self._busy = 0
                    self._ready.notify_all()


_live: weakref.WeakSet[BatchPublisher] = weakref.WeakSet()


def _reset_in_child() -> None:
    for publisher in list(_live):
        publisher._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_in_child)
