"""kombu's Redis transport, with one redis-py client per channel instead of one per command.

kombu's Redis channel builds a new ``redis.Redis`` object for every publish and every ack
(``Channel.conn_or_acquire``), and redis-py fills a table of some 170 response callbacks in each
one's constructor: a quarter of the CPU a publish costs (measured: about 0.17 ms of 0.68 ms per
``task.delay``), paid by the SMTP listener for every message and by the worker for every ack.
The client is a thin wrapper over the channel's connection pool, which does the real work and is
thread-safe, so one per channel serves as well. Asynchronous clients (the worker's BRPOP) are
left as kombu makes them. Registered for ``redis://`` and ``rediss://`` URLs by hisp.celery.

Every socket operation is bounded (:data:`SOCKET_TIMEOUT`): kombu's default is to wait for ever,
and a Redis that stops answering without closing its connections (paused, failing over, behind
a firewall that drops packets) then held every publish for ever. A publish runs after the commit
and before the SMTP reply (submission; the backbone too when it publishes without batches), so
the client that was owed its 250 got nothing, sent the message again, and it was stored twice;
the web and the workers hung the same way. Bounded, the publish fails, the commit stands, and the
sweeper queues the work once Redis is back (services.mail.enqueue).
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

# Seconds. Well above the worker's BRPOP wait (kombu's brpop_timeout, 1 s), which a socket
# timeout must not cut short; what kombu's publish retries (3 by Celery's default policy) add up
# to stays far below the 10 minutes an SMTP client waits for the DATA reply (RFC 5321 4.5.3.2.6).
# CELERY_BROKER_TRANSPORT_OPTIONS may set either (``socket_timeout``, ``socket_connect_timeout``).
SOCKET_TIMEOUT = 5.0


class Channel(kombu_redis.Channel):
    _sync_client: Any = None
    socket_timeout = SOCKET_TIMEOUT
    socket_connect_timeout = SOCKET_TIMEOUT

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
