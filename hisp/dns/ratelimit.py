"""Response-rate limiting for UDP answers (after BIND's RRL), so the responder cannot be used
as a reflection amplifier.

Over UDP the source address is not proven: anyone can send small queries "from" a victim and
have us send the victim our answers, and CERT answers are large (a 1232-byte reply to a 50-byte
query). Answers are therefore counted per client network, /24 for IPv4 and /56 for IPv6 (what
one site or one customer typically holds, so an attacker cannot spread a flood over many
addresses of the victim), in a token bucket: ``rate`` answers per second with bursts of
``burst``. Beyond that, answers are dropped, except that every ``slip``-th dropped one is sent
as an empty truncated answer (TC=1, no records, about the size of the query, so no
amplification): a real resolver behind a busy network then retries over TCP, which the limit
does not touch because its handshake proves the address.

The defaults are far above what resolvers send an authoritative server for a few hosted
zones (they cache our answers for RECORD_TTL), so only floods are limited. They are the
defaults of the HISP_DNS_RATE_... settings, which ``hisp.dns.server.configured_rate_limiter``
reads (README, Configuration).
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

IPV4_PREFIX = 24
IPV6_PREFIX = 56
DEFAULT_RATE = 100.0  # answers per second per network
DEFAULT_BURST = 200  # answers a network may get at once before the rate applies
DEFAULT_SLIP = 2  # every second dropped answer goes out truncated (BIND's default)
log = logging.getLogger(__name__)

# Forged sources can name any number of networks: the table is bounded, least recently seen
# first out. A victim under attack stays in it, since its network is the one being queried for.
MAX_NETWORKS = 16_384


class Verdict(enum.Enum):
    ANSWER = "answer"
    TRUNCATE = "truncate"  # send TC=1 without records: a real client retries over TCP
    DROP = "drop"


@dataclass
class _Bucket:
    tokens: float
    updated: float
    dropped: int = 0
    # Over the limit since the last time the bucket was full: one warning when an episode
    # begins and one line when it ends, so an operator sees limiting without a line per query.
    limited: bool = False
    truncated: int = 0


class ResponseRateLimiter:
    """Decides, per UDP query, whether its client network may have an answer now."""

    def __init__(
        self,
        *,
        rate: float = DEFAULT_RATE,
        burst: int = DEFAULT_BURST,
        slip: int = DEFAULT_SLIP,
        max_networks: int = MAX_NETWORKS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate > 0 or burst < 1 or slip < 0 or max_networks < 1:
            raise ValueError(
                "rate, burst and max_networks must be positive, slip not negative"
            )
        self.rate = rate
        self.burst = burst
        self.slip = slip  # 0: drop every answer over the limit, never truncate
        self.max_networks = max_networks
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.dropped = 0
        self.truncated = 0

    def check(self, address: str) -> Verdict:
        network = client_network(address)
        now = self._clock()
        bucket = self._buckets.get(network)
        if bucket is None:
            bucket = self._buckets[network] = _Bucket(tokens=float(self.burst), updated=now)
            if len(self._buckets) > self.max_networks:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(network)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            if bucket.limited and bucket.tokens >= self.burst:
                self._ended(network, bucket)
            bucket.tokens -= 1.0
            return Verdict.ANSWER
        if not bucket.limited:
            bucket.limited = True
            log.warning("DNS answers to %s limited: over %g a second (burst %d); the rest are "
                        "dropped or sent truncated until it slows down", network, self.rate,
                        self.burst)
        bucket.dropped += 1
        if self.slip and bucket.dropped % self.slip == 0:
            self.truncated += 1
            bucket.truncated += 1
            return Verdict.TRUNCATE
        self.dropped += 1
        return Verdict.DROP

    @staticmethod
    def _ended(network: str, bucket: _Bucket) -> None:
        log.info("DNS answers to %s no longer limited: %d over the limit (%d sent truncated)",
                 network, bucket.dropped, bucket.truncated)
        bucket.limited = False
        bucket.dropped = bucket.truncated = 0


def client_network(address: str) -> str:
    """The /24 (IPv4) or /56 (IPv6) holding ``address``; an IPv4-mapped IPv6 address counts
    as the IPv4 one, so a dual-stack socket does not give a network two buckets."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address  # not an IP address (cannot happen for UDP/IP): its own bucket
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = IPV4_PREFIX if ip.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
