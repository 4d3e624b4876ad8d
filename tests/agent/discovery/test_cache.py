"""Caching discovery results: TTLs, negative answers, failures, flushes, and a Redis store."""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from agent.discovery import CachePolicy, DiscoveryCache, DiscoveryResolver, MemoryCache
from agent.discovery.found import Found, Outcome
from tests.agent.discovery.conftest import SUFFIX, Pki
from tests.agent.discovery.hostile import silent_udp_port
from tests.support.bind import BindServer, Record, cert_record, srv_record
from tests.support.services import redis_url
from tests.support.slapd import SlapdServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cached_resolver(
    named_address: str, clock: Clock, policy: CachePolicy | None = None
) -> DiscoveryResolver:
    cache = DiscoveryCache(store=MemoryCache(clock=clock), policy=policy)
    return DiscoveryResolver.build(nameservers=[named_address], timeout=3, cache=cache, ldap=False)


def first(resolver: DiscoveryResolver, address: str):  # type: ignore[no-untyped-def]
    return next(iter(resolver.candidates(address)))


def test_memory_cache_expires_entries_after_their_ttl() -> None:
    clock = Clock()
    cache = MemoryCache(clock=clock)
    cache.set("k", b"v", 10)
    clock.now += 9.9
    assert cache.get("k") == b"v"
    clock.now += 0.2
    assert cache.get("k") is None


def test_memory_cache_is_bounded() -> None:
    cache = MemoryCache(max_entries=3)
    for i in range(5):
        cache.set(str(i), b"x", 60)
    assert [cache.get(str(i)) for i in range(5)] == [None, None, b"x", b"x", b"x"]


@pytest.mark.services
def test_dns_answer_is_kept_for_its_ttl_then_looked_up_again(named: BindServer, pki: Pki) -> None:
    old, new = pki.leaf(address="bob@ttl.test"), pki.leaf(address="bob@ttl.test")
    named.serve_zone("ttl.test", [cert_record("bob", old.public_bytes(Encoding.DER), ttl=120)])
    clock = Clock()
    resolver = cached_resolver(named.address, clock)
    assert first(resolver, "bob@ttl.test").certificates == (old,)
    named.serve_zone("ttl.test", [cert_record("bob", new.public_bytes(Encoding.DER), ttl=120)])
    clock.now += 119
    assert first(resolver, "bob@ttl.test").certificates == (old,)  # still within the TTL
    clock.now += 2
    assert first(resolver, "bob@ttl.test").certificates == (new,)


@pytest.mark.services
def test_negative_answers_are_kept_only_briefly(named: BindServer, pki: Pki) -> None:
    named.serve_zone("neg.test", [])
    clock = Clock()
    resolver = cached_resolver(named.address, clock, CachePolicy(negative_ttl=30))
    assert first(resolver, "bob@neg.test").certificates == ()
    cert = pki.leaf(address="bob@neg.test")
    named.serve_zone("neg.test", [cert_record("bob", cert.public_bytes(Encoding.DER))])
    clock.now += 29  # the zone's SOA minimum is 60; our cap of 30 applies
    assert first(resolver, "bob@neg.test").certificates == ()
    clock.now += 2
    assert first(resolver, "bob@neg.test").certificates == (cert,)


@pytest.mark.services
def test_flush_of_an_address_and_of_a_domain(named: BindServer, pki: Pki) -> None:
    old, new = pki.leaf(address="bob@flush.test"), pki.leaf(address="bob@flush.test")
    named.serve_zone("flush.test", [cert_record("bob", old.public_bytes(Encoding.DER))])
    clock = Clock()
    resolver = cached_resolver(named.address, clock)
    assert first(resolver, "bob@flush.test").certificates == (old,)
    named.serve_zone("flush.test", [cert_record("bob", new.public_bytes(Encoding.DER))])
    resolver.flush("someone-else@flush.test")
    assert first(resolver, "bob@flush.test").certificates == (old,)
    resolver.flush("bob@flush.test")
    assert first(resolver, "bob@flush.test").certificates == (new,)
    named.serve_zone("flush.test", [cert_record("bob", old.public_bytes(Encoding.DER))])
    assert first(resolver, "bob@flush.test").certificates == (new,)
    resolver.flush("FLUSH.test")  # a domain flush drops its addresses too
    assert first(resolver, "bob@flush.test").certificates == (old,)


def test_failures_are_cached_for_the_failure_ttl_only() -> None:
    clock = Clock()
    with silent_udp_port() as port:
        cache = DiscoveryCache(store=MemoryCache(clock=clock), policy=CachePolicy(failure_ttl=5))
        resolver = DiscoveryResolver.build(
            nameservers=f"127.0.0.1:{port}", timeout=0.3, cache=cache, ldap=False
        )
        assert first(resolver, "bob@down.test").error is not None
    key_found = cache.get(domain="down.test", kind="dns", name="bob.down.test.")
    assert key_found is not None and key_found.outcome is Outcome.FAILED
    clock.now += 6
    assert cache.get(domain="down.test", kind="dns", name="bob.down.test.") is None


def test_failures_are_not_cached_when_failure_ttl_is_zero() -> None:
    cache = DiscoveryCache(store=MemoryCache(), policy=CachePolicy(failure_ttl=0))
    cache.put(domain="d.test", kind="dns", name="x", found=Found.failed("timed out"))
    assert cache.get(domain="d.test", kind="dns", name="x") is None


def test_an_unreadable_cache_entry_is_a_miss() -> None:
    store = MemoryCache()
    cache = DiscoveryCache(store=store)
    cache.put(domain="d.test", kind="ldap", name="x", found=Found(Outcome.NOTHING))
    key = next(iter(store._entries))
    store.set(key, b"{not json", 60)
    assert cache.get(domain="d.test", kind="ldap", name="x") is None


class RedisStore:
    """The Cache Protocol over redis-py, as the Django side backs it."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)

    def get(self, key: str) -> bytes | None:
        value = self.client.get(key)
        return bytes(value) if value is not None else None

    def set(self, key: str, value: bytes, ttl: float) -> None:
        self.client.set(key, value, px=max(1, int(ttl * 1000)))

    def delete(self, key: str) -> None:
        self.client.delete(key)


@pytest.mark.services
def test_results_round_trip_through_a_redis_store(named: BindServer, pki: Pki) -> None:
    cert = pki.leaf(address="bob@redis.test")
    named.serve_zone("redis.test", [cert_record("bob", cert.public_bytes(Encoding.DER))])
    store = RedisStore(redis_url())
    policy = CachePolicy(prefix=f"test-discovery-{uuid.uuid4().hex}:")
    resolver = DiscoveryResolver.build(
        nameservers=[named.address], cache=DiscoveryCache(store=store, policy=policy), ldap=False
    )
    assert first(resolver, "bob@redis.test").certificates == (cert,)
    named.serve_zone("redis.test", [])
    assert first(resolver, "bob@redis.test").certificates == (cert,)  # from Redis
    resolver.flush("redis.test")
    try:
        assert first(resolver, "bob@redis.test").certificates == ()
    finally:
        for key in store.client.scan_iter(match=policy.prefix + "*"):
            store.client.delete(key)


@pytest.mark.services
def test_ldap_results_are_kept_for_the_configured_time(
    named: BindServer, pki: Pki, ldap_servers: tuple[SlapdServer, ...]
) -> None:
    address, domain = "bob@ldapcache.test", "ldapcache.test"
    old, new = pki.leaf(address=address), pki.leaf(address=address)
    ldap = ldap_servers[0]
    dn = ldap.add_person(SUFFIX, mail=address, binary=[old])
    named.serve_zone(
        domain, [srv_record("_ldap._tcp", "ldap1", ldap.port), Record("ldap1", "A", "127.0.0.1")]
    )
    clock = Clock()
    cache = DiscoveryCache(store=MemoryCache(clock=clock), policy=CachePolicy(ldap_ttl=600))
    resolver = DiscoveryResolver.build(nameservers=[named.address], timeout=3, cache=cache)
    assert list(resolver.candidates(address))[2].certificates == (old,)
    ldap.replace(SUFFIX, dn, "userCertificate;binary", [new.public_bytes(Encoding.DER)])
    clock.now += 599
    assert list(resolver.candidates(address))[2].certificates == (old,)
    clock.now += 2
    assert list(resolver.candidates(address))[2].certificates == (new,)
