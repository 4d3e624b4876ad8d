"""The discovery cache over Redis: the store every worker shares, the epoch that carries flushes
to every worker's near cache, and the two put together as production runs them.

No Django here (``hisp.bench.discovery`` measures exactly this composition without a project).

Why an in-process layer at all: a lookup through Redis alone costs two round trips (the domain's
generation token, then the value), which caps one process at a few thousand cached lookups a
second; the agent needs far more headroom than that. ``agent.discovery.cache.NearCache`` answers
hits from memory and checks the epoch at most every ``NEAR_CHECK_EVERY`` seconds, so a flush
reaches every process within that time plus one round trip (bounded by ``REDIS_SOCKET_TIMEOUT``).
"""

from __future__ import annotations

import logging
import secrets
import time
from functools import lru_cache

import redis

from agent.discovery.cache import CachePolicy, DiscoveryCache, NearCache

logger = logging.getLogger(__name__)

STORE_PREFIX = "hisp:"
# A cache that does not answer must not cost every lookup a long wait (the lookup goes on
# without it); one round trip on a local network is well under this.
REDIS_SOCKET_TIMEOUT = 0.5
# After a failed call, lookups skip Redis for this long instead of each paying the time-out
# again: an outage costs mail its cache, never its latency.
REDIS_RETRY_AFTER = 2.0
# How stale a process's near cache may be after a flush elsewhere. A flush is an operator
# action (a partner fixed its DNS or directory); a quarter of a second is below anything a
# person can notice between "flush" and "send again", and costs each busy process four reads
# of one key a second.
NEAR_CHECK_EVERY = 0.25
NEAR_MAX_ENTRIES = 4096  # partners' addresses and domains: a few MB of certificates at most


class DiscoveryError(ValueError):
    """Bad input for a discovery operation (not an address or domain), or the cache is down."""


class RedisStore:
    """``agent.discovery.Cache`` over redis-py, holding the raw bytes.

    Not Django's Redis cache: that one unpickles what it reads, and a cache shared by every
    worker must not be able to run code in them (the values are JSON holding DER).

    ``strict=False`` (lookups): Redis errors are logged and read as misses, so mail keeps
    flowing without the cache, and for ``REDIS_RETRY_AFTER`` seconds afterwards Redis is not
    asked at all. ``strict=True`` (flush): every call goes to Redis and errors become
    ``DiscoveryError``, so an operator is never told an entry was dropped when it was not.

    Fork-safe: redis-py's connection pool notices a new process id and opens its own
    connections in the child.
    """

    def __init__(self, url: str, *, prefix: str = STORE_PREFIX, strict: bool = False) -> None:
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=REDIS_SOCKET_TIMEOUT,
            socket_connect_timeout=REDIS_SOCKET_TIMEOUT,
        )
        self.prefix = prefix
        self.strict = strict
        self._down_until = float("-inf")

    def get(self, key: str) -> bytes | None:
        if self.resting():
            return None
        try:
            value = self.client.get(self.prefix + key)
        except redis.RedisError as exc:
            self.failed("read", exc)
            return None
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes, ttl: float) -> None:
        if self.resting():
            return
        try:
            # PX: milliseconds, so sub-second TTLs (never 0) are kept as asked.
            self.client.set(self.prefix + key, value, px=max(1, int(ttl * 1000)))
        except redis.RedisError as exc:
            self.failed("write", exc)

    def delete(self, key: str) -> None:
        if self.resting():
            return
        try:
            self.client.delete(self.prefix + key)
        except redis.RedisError as exc:
            self.failed("delete", exc)

    def resting(self) -> bool:
        """True while a lenient store skips Redis after a failure."""
        return not self.strict and time.monotonic() < self._down_until

    def failed(self, action: str, exc: redis.RedisError) -> None:
        if self.strict:
            raise DiscoveryError(f"discovery cache unavailable ({action}): {exc}") from None
        self._down_until = time.monotonic() + REDIS_RETRY_AFTER
        logger.warning("discovery cache %s failed: %s", action, type(exc).__name__)


class RedisEpoch:
    """``agent.discovery.cache.Epoch`` as one Redis key holding a random token.

    A state rather than pub/sub messages on purpose: a worker that was disconnected, blocked or
    not yet forked when a flush happened still sees the changed token, with no listener thread
    to start after a fork or to restart after a reconnect. The key never expires; if it is lost
    (Redis restarted empty, FLUSHDB) every process reads a change and drops its near entries,
    which is the safe direction.
    """

    def __init__(self, store: RedisStore, *, key: str) -> None:
        self.store = store
        self.key = key

    def read(self) -> str | None:
        if self.store.resting():
            return None
        try:
            value = self.store.client.get(self.store.prefix + self.key)
        except redis.RedisError as exc:
            self.store.failed("epoch read", exc)
            return None
        return value.decode("ascii", "replace") if isinstance(value, bytes) else ""

    def advance(self) -> None:
        # Always strict: a flush that did not reach the other workers must not be reported done.
        try:
            self.store.client.set(self.store.prefix + self.key, secrets.token_hex(8))
        except redis.RedisError as exc:
            raise DiscoveryError(f"discovery cache unavailable (epoch): {exc}") from None


@lru_cache(maxsize=8)
def _lenient_store(url: str, prefix: str) -> RedisStore:
    # One per process and Redis: the near cache's epoch reads and the lookups share one
    # connection pool and one rest period, so an outage costs a lookup one time-out, not two.
    return RedisStore(url, prefix=prefix)


@lru_cache(maxsize=8)
def near_cache(url: str, *, policy: CachePolicy, prefix: str = STORE_PREFIX) -> NearCache:
    """This process's near cache for one Redis and policy, shared by its resolver and its
    flushes (so a flush made here is seen here at once, not after ``NEAR_CHECK_EVERY``)."""
    return NearCache(
        epoch=RedisEpoch(_lenient_store(url, prefix), key=f"{policy.prefix}epoch"),
        max_entries=NEAR_MAX_ENTRIES,
        check_every=NEAR_CHECK_EVERY,
    )


def redis_cache(
    url: str, *, policy: CachePolicy, strict: bool = False, prefix: str = STORE_PREFIX
) -> DiscoveryCache:
    """The production discovery cache: this process's near cache in front of Redis."""
    return DiscoveryCache(
        store=RedisStore(url, prefix=prefix, strict=True) if strict else _lenient_store(url, prefix),
        policy=policy,
        near=near_cache(url, policy=policy, prefix=prefix),
    )
