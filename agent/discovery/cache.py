"""Caching discovery results behind a small key-value Protocol (in memory here, Redis on the
Django side).

What is kept, and for how long: DNS answers for their own TTL (RFC 1035 3.2.1, capped), LDAP
results for a configured time (LDAP carries no TTL), negative answers briefly (RFC 2308 section
5: min(SOA TTL, SOA MINIMUM), capped lower still), and failed lookups only for a short while so
a dead server does not cost every message its full time-out. Values are JSON holding DER, never
pickles: the store may be shared and must not be able to run code in the worker.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from agent.discovery.found import Found, Outcome
from agent.discovery.names import AddressError, target_for

_DECODED_ENTRIES = 1024


class Cache(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds (``ttl`` is always > 0)."""
        ...

    def delete(self, key: str) -> None: ...


class MemoryCache:
    """A bounded, thread-safe in-process ``Cache`` (least recently stored goes first)."""

    def __init__(
        self, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._entries.get(key)
            if item is None:
                return None
            expires, value = item
            if expires <= self._clock():
                del self._entries[key]
                return None
            return value

    def set(self, key: str, value: bytes, ttl: float) -> None:
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = (self._clock() + ttl, value)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def delete(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)


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
                return min(self.ldap_ttl, self.negative_ttl)
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
    """

    def __init__(self, *, store: Cache, policy: CachePolicy | None = None) -> None:
        self.store = store
        self.policy = policy or CachePolicy()
        # Decoded values by their exact bytes: parsing JSON and DER again for every message to
        # a busy partner is most of the cost of a hit. Same bytes, same immutable result.
        self._decoded: dict[bytes, Found] = {}
        self._lock = threading.Lock()

    def get(self, *, domain: str, kind: str, name: str) -> Found | None:
        raw = self.store.get(self._key(domain, kind, name))
        if raw is None:
            return None
        found = self._decoded.get(raw)
        if found is not None:
            return found
        try:
            found = _decode(raw)
        except (ValueError, KeyError, TypeError):
            return None  # an entry we cannot read is a miss, never an error
        with self._lock:
            if len(self._decoded) >= _DECODED_ENTRIES:
                self._decoded.clear()
            self._decoded[raw] = found
        return found

    def put(self, *, domain: str, kind: str, name: str, found: Found) -> None:
        ttl = self.policy.ttl_for(kind, found)
        if ttl > 0:
            self.store.set(self._key(domain, kind, name), _encode(found), ttl)

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
            return
        domain = value.rstrip(".").lower()
        # Outlives every entry written under the old token, so no old entry survives it.
        self.store.set(
            self._generation_key(domain),
            secrets.token_hex(8).encode("ascii"),
            self.policy.longest * 2 + 60,
        )

    def _key(self, domain: str, kind: str, name: str) -> str:
        generation = self.store.get(self._generation_key(domain))
        token = generation.decode("ascii", "replace") if generation else "0"
        return f"{self.policy.prefix}{token}:{kind}:{name.lower()}"

    def _generation_key(self, domain: str) -> str:
        return f"{self.policy.prefix}generation:{domain}"


def _encode(found: Found) -> bytes:
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
        },
        separators=(",", ":"),
    ).encode("utf-8")


def _decode(raw: bytes) -> Found:
    data = json.loads(raw)
    return Found(
        Outcome(data["o"]),
        tuple(x509.load_der_x509_certificate(base64.b64decode(item)) for item in data["c"]),
        error=data["e"],
        notes=tuple(str(note) for note in data["n"]),
        ttl=float(data["t"]),
    )
