"""Remembered trust decisions, so steady traffic between two HISPs does not rebuild and re-check
the same certification path for every message.

What is remembered is only a *success* of the deterministic part of a decision (binding, key
usage, algorithms, validity, path building, CA and name-constraint checks), as the path it
found. Everything that can change without the certificates changing is either part of the key
or re-checked on every use:

* the key holds the certificates themselves (compared by their DER encoding, never by a name),
  the extra certificates that came with them in order, the sender or recipient address, the
  domain, every anchor the domain trusts (so adding or removing an anchor misses at once) and
  the whole policy;
* an entry serves only validation times inside the window where every certificate of its path,
  anchor included, is valid (RFC 5280 6.1.3(a)(2)), and only for ``ttl`` seconds of wall time;
* revocation is never remembered here: each use asks the environment's ``RevocationChecker``
  again (which keeps its own answers exactly as long as their nextUpdate allows), and any answer
  other than good or not-checked drops the entry and re-runs the full decision, which may find
  another path or name the precise failure;
* failures are never remembered: some are transient (an unreachable revocation source or AIA
  URL turns into ``revocation-unavailable`` or ``untrusted-signer``), and the permanent ones
  are cheap to reach again.

A cache belongs with one set of collaborators: share it only among environments whose trust
store, issuer fetcher and revocation checker answer alike (one per process is the usual choice).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime

from agent.trust.path import Path


@dataclass(frozen=True)
class _Entry:
    path: Path
    valid_from: datetime
    valid_until: datetime
    expires: float  # on the cache's monotonic clock


class ValidationCache:
    """Thread-safe, size-bounded and expiring. When full, the oldest entry goes first (not the
    least recently used: keeping a use order would hash each key twice per hit, and every
    entry expires after ``ttl`` anyway)."""

    def __init__(
        self,
        *,
        max_entries: int = 4096,
        ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1 or ttl <= 0:
            raise ValueError("max_entries and ttl must be positive")
        self._entries: dict[Hashable, _Entry] = {}  # insertion-ordered: oldest first
        self._max_entries = max_entries
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, key: Hashable, at: datetime) -> Path | None:
        """The remembered path for ``key`` if it may serve validation time ``at``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.expires <= self._clock():
                del self._entries[key]
                return None
            if not entry.valid_from <= at <= entry.valid_until:
                return None  # another validation time: decide afresh, keep the entry
            return entry.path

    def put(self, key: Hashable, path: Path) -> None:
        certificates = (*path.certificates, path.anchor)
        entry = _Entry(
            path=path,
            valid_from=max(c.not_valid_before_utc for c in certificates),
            valid_until=min(c.not_valid_after_utc for c in certificates),
            expires=self._clock() + self._ttl,
        )
        with self._lock:
            self._entries.pop(key, None)  # a replaced entry counts as the newest
            self._entries[key] = entry
            while len(self._entries) > self._max_entries:
                del self._entries[next(iter(self._entries))]

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
