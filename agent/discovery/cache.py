"""Caching discovery results behind a small key-value Protocol (in memory here, Redis on the
Django side).

What is kept, and for how long: DNS answers for their own TTL (RFC 1035 3.2.1, capped), LDAP
results for a configured time (LDAP carries no TTL), negative answers briefly (RFC 2308 section
5: min(SOA TTL, SOA MINIMUM), capped lower still), and failed lookups only for a short while so
a dead server does not cost every message its full time-out. Values are JSON holding DER, never
pickles: the store may be shared and must not be able to run code in the worker.

A shared store costs a network round trip or two per lookup. ``NearCache`` is the optional
in-process layer in front of it: decoded results, each kept no longer than the time its stored
value has left, and all dropped when the store's shared ``Epoch`` changes (every flush changes
it), which each process checks at most every ``check_every`` seconds.
"""

from __future__ import annotations

import base64
import json
import math
import os
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from agent.cache import Cache as Cache
from agent.cache import MemoryCache as _MemoryCache
from agent.discovery.found import Found, Outcome
from agent.discovery.names import AddressError, canonical_domain, target_for

_DECODED_ENTRIES = 1024


class MemoryCache(_MemoryCache):
    """The in-process ``Cache`` for discovery: room for more entries than the trust default
    (each is one small lookup result, and a busy HISP talks to many partners)."""

    def __init__(
        self, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(max_entries=max_entries, clock=clock)


class Epoch(Protocol):
    """A value shared by every process over one store, changed by every flush.

    How a process's ``NearCache`` learns that a flush happened elsewhere: it is a state, not a
    message, so a process that was disconnected or busy when the flush happened still sees it.
    """

    def read(self) -> str | None:
        """The current value ("" when none was ever set); ``None`` when it cannot be read."""
        ...

    def advance(self) -> None:
        """Replace the value (after a flush); raises when that could not be done."""
        ...


class NearCache:
    """A bounded, thread-safe in-process layer of decoded results in front of a shared store.

    Correctness rules, in order of importance:

    - An entry never outlives its stored value: its deadline is the expiry written with the
      value (DNS TTL, LDAP cache time, negative or failure TTL), never extended by a read.
    - Every flush anywhere is seen within ``check_every`` seconds (plus one store round trip):
      the first lookup after that interval reads the shared ``Epoch``; a changed value drops
      every entry.
    - When the epoch cannot be read (store down, connection lost) every entry is dropped and
      the layer serves nothing until a read succeeds again: flushes made while this process
      could not hear about them can never be served around.
    - After ``os.fork`` (Celery prefork) the child starts empty with a fresh lock.
    """

    def __init__(
        self,
        *,
        epoch: Epoch,
        max_entries: int = 4096,
        check_every: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1 or check_every < 0:
            raise ValueError("max_entries must be >= 1 and check_every >= 0")
        self.epoch = epoch
        self.max_entries = max_entries
        self.check_every = check_every
        self.clock = clock
        self.wall_clock = wall_clock
        self._reset()
        _NEAR_CACHES.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, Found]] = OrderedDict()
        self._seen: str | None = None  # the epoch value the entries belong to
        self._usable = False  # False until the epoch has been read successfully
        self._next_check = float("-inf")
        self._era = 0  # bumped on every drop, so a fill that raced a drop is refused

    def get(self, key: str) -> Found | None:
        now = self.clock()
        if now >= self._next_check:
            self._check(now)
        with self._lock:
            item = self._entries.get(key)
            if item is None:
                return None
            deadline, found = item
            if deadline <= now:
                del self._entries[key]
                return None
            return found

    def mark(self) -> int:
        """Taken before reading the shared store; ``put`` refuses the value if entries were
        dropped meanwhile (the value read may be from before the flush that dropped them)."""
        return self._era

    def put(self, key: str, found: Found, *, expires_at: float, mark: int) -> None:
        """Keep ``found`` until the wall-clock time ``expires_at`` (when its stored copy ends)."""
        now = self.clock()
        deadline = now + (expires_at - self.wall_clock())
        with self._lock:
            if not self._usable or mark != self._era or deadline <= now:
                return
            self._entries.pop(key, None)
            self._entries[key] = (deadline, found)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def invalidate(self) -> None:
        """After a flush made here: drop this process's entries, then tell every other one."""
        self._drop(usable=self._usable)
        self.epoch.advance()
        self._next_check = float("-inf")  # adopt the new value at the next lookup

    def __len__(self) -> int:
        return len(self._entries)

    def _check(self, now: float) -> None:
        with self._lock:
            if now < self._next_check:
                return  # another thread checked meanwhile
            # Set before the read, so one thread checks while the others go on serving.
            self._next_check = now + self.check_every
        value = self.epoch.read()
        with self._lock:
            if value is None:
                self._drop_locked(usable=False)
                self._seen = None
            elif value != self._seen or not self._usable:
                if value != self._seen:
                    self._drop_locked(usable=True)
                self._seen = value
                self._usable = True

    def _drop(self, *, usable: bool) -> None:
        with self._lock:
            self._drop_locked(usable=usable)

    def _drop_locked(self, *, usable: bool) -> None:
        self._entries.clear()
        self._era += 1
        self._usable = usable


# Every live NearCache, reset in a forked child: the parent's lock may have been held by one of
# its threads at the fork (the child would wait on it forever), and the child should not trust
# entries it did not check itself.
_NEAR_CACHES: weakref.WeakSet[NearCache] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for near in list(_NEAR_CACHES):
        near._reset()


os.register_at_fork(after_in_child=_reset_after_fork)


@dataclass(frozen=True)
class CachePolicy:
    max_dns_ttl: float = 86_400.0  # a day, whatever TTL a publisher asks for
    ldap_ttl: float = 3_600.0  # LDAP has no TTL of its own
    negative_ttl: float = 300.0  # upper bound for "nothing there" answers
    failure_ttl: float = 30.0  # time-outs and unreachable servers (0: never cached)
    prefix: str = "discovery:"

    def ttl_for(self, kind: str, found: Found) -> float:
        if found.outcome is Outcome.FAILED:
            return self.failure_ttl
        if kind == "ldap":
            if found.outcome is Outcome.NOTHING:
                negative = min(self.ldap_ttl, self.negative_ttl)
                # "No SRV record" is a DNS negative answer with its own TTL (RFC 2308 5): a
                # directory the partner announces must not stay unseen past it.
                return min(negative, found.ttl) if found.ttl > 0 else negative
            return self.ldap_ttl
        cap = self.negative_ttl if found.outcome is Outcome.NOTHING else self.max_dns_ttl
        return min(found.ttl, cap)

    @property
    def longest(self) -> float:
        return max(self.max_dns_ttl, self.ldap_ttl, self.negative_ttl, self.failure_ttl)


class DiscoveryCache:
    """Discovery results per (kind, name), with a per-domain generation for domain flushes.

    Every key carries its domain's generation token; ``flush(domain)`` replaces the token, so
    every address of the domain is dropped at once without listing keys (which a plain
    get/set/delete store cannot do). The token is random, never a counter, so an expired token
    can never bring old entries back.

    With ``near`` (a shared store such as Redis), hits are served from the process's
    ``NearCache`` without touching the store; a flush also advances the shared epoch so every
    other process drops its near entries.
    """

    def __init__(
        self, *, store: Cache, policy: CachePolicy | None = None, near: NearCache | None = None
    ) -> None:
        self.store = store
        self.policy = policy or CachePolicy()
        self.near = near
        # Decoded values by their exact bytes: parsing JSON and DER again for every message to
        # a busy partner is most of the cost of a hit. Same bytes, same immutable result.
        self._decoded: dict[bytes, tuple[Found, float | None]] = {}
        self._lock = threading.Lock()

    def get(self, *, domain: str, kind: str, name: str) -> Found | None:
        near = self.near
        if near is None:
            item = self._read(domain, kind, name)
            return item[0] if item is not None else None
        near_key = f"{kind}:{name.lower()}"
        found = near.get(near_key)
        if found is not None:
            return found
        mark = near.mark()
        item = self._read(domain, kind, name)
        if item is None:
            return None
        found, expires_at = item
        if expires_at is not None:  # entries written before expiries were stamped stay out
            near.put(near_key, found, expires_at=expires_at, mark=mark)
        return found

    def put(self, *, domain: str, kind: str, name: str, found: Found) -> None:
        ttl = self.policy.ttl_for(kind, found)
        if ttl <= 0:
            return
        expires_at = self._wall_clock() + ttl
        near = self.near
        mark = near.mark() if near is not None else 0
        self.store.set(self._key(domain, kind, name), _encode(found, expires_at), ttl)
        if near is not None:
            near.put(f"{kind}:{name.lower()}", found, expires_at=expires_at, mark=mark)

    def flush(self, address_or_domain: str) -> None:
        """Forget what was found for an address (``local@domain``) or a whole domain."""
        value = address_or_domain.strip()
        if "@" in value:
            try:
                target = target_for(value)
            except AddressError:
                return
            self.store.delete(self._key(target.domain, "dns", target.address_owner))
            self.store.delete(self._key(target.domain, "ldap", target.address))
        else:
            try:
                domain = canonical_domain(value)
            except AddressError:
                return
            # Outlives every entry written under the old token, so no old entry survives it.
            self.store.set(
                self._generation_key(domain),
                secrets.token_hex(8).encode("ascii"),
                self.policy.longest * 2 + 60,
            )
        # After the store, never before: a process that sees the new epoch and re-reads the
        # store must find the flushed state there.
        if self.near is not None:
            self.near.invalidate()

    def _read(self, domain: str, kind: str, name: str) -> tuple[Found, float | None] | None:
        raw = self.store.get(self._key(domain, kind, name))
        if raw is None:
            return None
        item = self._decoded.get(raw)
        if item is None:
            try:
                item = _decode(raw)
            except (ValueError, KeyError, TypeError):
                return None  # an entry we cannot read is a miss, never an error
            with self._lock:
                if len(self._decoded) >= _DECODED_ENTRIES:
                    self._decoded.clear()
                self._decoded[raw] = item
        expires_at = item[1]
        if expires_at is not None and expires_at <= self._wall_clock():
            return None  # the store kept it a little longer than asked (clock granularity)
        return item

    def _wall_clock(self) -> float:
        return self.near.wall_clock() if self.near is not None else time.time()

    def _key(self, domain: str, kind: str, name: str) -> str:
        generation = self.store.get(self._generation_key(domain))
        token = generation.decode("ascii", "replace") if generation else "0"
        return f"{self.policy.prefix}{token}:{kind}:{name.lower()}"

    def _generation_key(self, domain: str) -> str:
        return f"{self.policy.prefix}generation:{domain}"


def _encode(found: Found, expires_at: float) -> bytes:
    return json.dumps(
        {
            "o": found.outcome.value,
            "c": [
                base64.b64encode(cert.public_bytes(Encoding.DER)).decode("ascii")
                for cert in found.certificates
            ],
            "e": found.error,
            "n": list(found.notes),
            "t": found.ttl,
            # When the stored copy ends (Unix time): another process's near cache must not keep
            # it longer, and the store does not say how long a value it returns has left.
            "x": math.floor(expires_at * 1000) / 1000,  # never later than asked
        },
        separators=(",", ":"),
    ).encode("utf-8")


def _decode(raw: bytes) -> tuple[Found, float | None]:
    data = json.loads(raw)
    found = Found(
        Outcome(data["o"]),
        tuple(x509.load_der_x509_certificate(base64.b64decode(item)) for item in data["c"]),
        error=data["e"],
        notes=tuple(str(note) for note in data["n"]),
        ttl=float(data["t"]),
    )
    expires_at = data.get("x")
    return found, float(expires_at) if expires_at is not None else None
