"""A small expiring byte cache behind a Protocol, shared by discovery and trust.

A Protocol so the Django side can back it with Redis (shared by every worker); ``MemoryCache``
keeps entries in this process. Values are bytes and keys are short strings, which any store can
hold: never pickles, since a shared store must not be able to run code in the worker.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol


class ByteCache(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl: float) -> None:
        """Keep ``value`` for ``ttl`` seconds (a non-positive ttl stores nothing)."""
        ...


class Cache(ByteCache, Protocol):
    """A ``ByteCache`` that can also forget one key (discovery flushes need it)."""

    def delete(self, key: str) -> None: ...


class MemoryCache:
    """Thread-safe, size-bounded (least recently used goes first), expiring in-process cache."""

    def __init__(
        self, *, max_entries: int = 4096, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, value = entry
            if expires <= self._clock():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value

    def set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0:
            return
        with self._lock:
            self._entries[key] = (self._clock() + ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def delete(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)
