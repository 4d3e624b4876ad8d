"""kombu's Redis transport, with one redis-py client per channel instead of one per command.

kombu's Redis channel builds a new ``redis.Redis`` object for every publish and every ack
(``Channel.conn_or_acquire``), and redis-py fills a table of some 170 response callbacks in each
one's constructor: a quarter of the CPU a publish costs (measured: about 0.17 ms of 0.68 ms per
``task.delay``), paid by the SMTP listener for every message and by the worker for every ack.
The client is a thin wrapper over the channel's connection pool, which does the real work and is
thread-safe, so one per channel serves as well. Asynchronous clients (the worker's BRPOP) are
left as kombu makes them. Registered for ``redis://`` and ``rediss://`` URLs by hisp.celery.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        if self._sync_client is None:
            self._sync_client = super()._create_client()
        return self._sync_client

    def close(self) -> None:
        self._sync_client = None
        super().close()


class Transport(kombu_redis.Transport):
    Channel = Channel


def register() -> None:
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
