"""Caching discovery results: TTLs, negative answers, failures, flushes, and a Redis store."""

from __future__ import annotations

import os
import uuid

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from agent.discovery import CachePolicy, DiscoveryCache, DiscoveryResolver, MemoryCache
from agent.discovery.cache import NearCache
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


@pytest.mark.services
def test_negative_answers_keep_the_zones_own_shorter_ttl(named: BindServer, pki: Pki) -> None:
    named.serve_zone("negsoa.test", [])  # SOA minimum 60, under our cap of 300
    clock = Clock()
    resolver = cached_resolver(named.address, clock)
    assert first(resolver, "bob@negsoa.test").certificates == ()
    cert = pki.leaf(address="bob@negsoa.test")
    named.serve_zone("negsoa.test", [cert_record("bob", cert.public_bytes(Encoding.DER))])
    clock.now += 59
    assert first(resolver, "bob@negsoa.test").certificates == ()
    clock.now += 2
    assert first(resolver, "bob@negsoa.test").certificates == (cert,)


@pytest.mark.services
def test_a_positive_ttl_longer_than_the_cap_is_cut_to_it(named: BindServer, pki: Pki) -> None:
    old, new = pki.leaf(address="bob@longttl.test"), pki.leaf(address="bob@longttl.test")
    day = 86400
    named.serve_zone("longttl.test", [cert_record("bob", old.public_bytes(Encoding.DER), ttl=day)])
    clock = Clock()
    resolver = cached_resolver(named.address, clock, CachePolicy(max_dns_ttl=100))
    assert first(resolver, "bob@longttl.test").certificates == (old,)
    named.serve_zone("longttl.test", [cert_record("bob", new.public_bytes(Encoding.DER), ttl=day)])
    clock.now += 101
    assert first(resolver, "bob@longttl.test").certificates == (new,)


@pytest.mark.services
def test_no_srv_record_is_kept_no_longer_than_its_negative_ttl(
    named: BindServer, pki: Pki, ldap_servers: tuple[SlapdServer, ...]
) -> None:
    address, domain = "bob@srvlater.test", "srvlater.test"
    named.serve_zone(domain, [])  # no _ldap._tcp yet; SOA minimum 60
    clock = Clock()
    cache = DiscoveryCache(store=MemoryCache(clock=clock))
    resolver = DiscoveryResolver.build(
        nameservers=[named.address], timeout=3, cache=cache, ldap_allow_private_networks=True
    )  # slapd is on loopback
    level = list(resolver.candidates(address))[2]
    assert level.certificates == () and any("no SRV records" in n for n in level.notes)
    cert = pki.leaf(address=address)
    ldap = ldap_servers[2]
    ldap.add_person(SUFFIX, mail=address, binary=[cert])
    named.serve_zone(
        domain, [srv_record("_ldap._tcp", "ldap3", ldap.port), Record("ldap3", "A", "127.0.0.1")]
    )
    clock.now += 59
    assert list(resolver.candidates(address))[2].certificates == ()
    clock.now += 2  # past the partner's 60 s, well inside our 300 s negative cap
    assert list(resolver.candidates(address))[2].certificates == (cert,)


@pytest.mark.services
def test_an_idn_domain_is_one_cache_entry_and_one_flush_whatever_its_spelling(
    named: BindServer, pki: Pki
) -> None:
    zone = "xn--bcher-kva.test"  # bücher.test
    old, new = pki.leaf(address=f"bob@{zone}"), pki.leaf(address=f"bob@{zone}")
    named.serve_zone(zone, [cert_record("bob", old.public_bytes(Encoding.DER))])
    clock = Clock()
    resolver = cached_resolver(named.address, clock)
    assert first(resolver, "bob@bücher.test").certificates == (old,)
    named.serve_zone(zone, [cert_record("bob", new.public_bytes(Encoding.DER))])
    assert first(resolver, f"bob@{zone}").certificates == (old,)  # the same cached entry
    resolver.flush(zone)  # the operator types the A-label form
    assert first(resolver, "bob@bücher.test").certificates == (new,)
    named.serve_zone(zone, [cert_record("bob", old.public_bytes(Encoding.DER))])
    resolver.flush("BÜCHER.test")  # or the Unicode one
    assert first(resolver, f"bob@{zone}").certificates == (old,)


@pytest.mark.services
def test_names_in_any_case_are_one_query_and_one_cache_entry(named: BindServer, pki: Pki) -> None:
    old, new = pki.leaf(address="bob@case.test"), pki.leaf(address="bob@case.test")
    named.serve_zone("case.test", [cert_record("bob", old.public_bytes(Encoding.DER))])
    clock = Clock()
    resolver = cached_resolver(named.address, clock)
    assert first(resolver, "BOB@Case.TEST").certificates == (old,)  # DNS ignores case
    named.serve_zone("case.test", [cert_record("bob", new.public_bytes(Encoding.DER))])
    assert first(resolver, "bob@case.test").certificates == (old,)  # the same entry
    resolver.flush("Bob@CASE.test")
    assert first(resolver, "BOB@case.test").certificates == (new,)


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
    resolver = DiscoveryResolver.build(
        nameservers=[named.address], timeout=3, cache=cache, ldap_allow_private_networks=True
    )  # slapd is on loopback
    assert list(resolver.candidates(address))[2].certificates == (old,)
    ldap.replace(SUFFIX, dn, "userCertificate;binary", [new.public_bytes(Encoding.DER)])
    clock.now += 599
    assert list(resolver.candidates(address))[2].certificates == (old,)
    clock.now += 2
    assert list(resolver.candidates(address))[2].certificates == (new,)


# --- The near cache (an in-process layer in front of a shared store) ---------------------------


class SharedEpoch:
    """``Epoch`` over a value the test controls; ``readable=False`` plays a store that is down."""

    def __init__(self) -> None:
        self.value = ""
        self.readable = True
        self.reads = 0

    def read(self) -> str | None:
        self.reads += 1
        return self.value if self.readable else None

    def advance(self) -> None:
        self.value = uuid.uuid4().hex


def near_cache(clock: Clock, epoch: SharedEpoch, **options: float) -> DiscoveryCache:
    near = NearCache(epoch=epoch, clock=clock, wall_clock=clock, **options)  # type: ignore[arg-type]
    return DiscoveryCache(store=MemoryCache(clock=clock), near=near)


def notes(found: Found | None) -> tuple[str, ...] | None:
    return None if found is None else found.notes


def test_near_cache_never_serves_an_entry_past_its_stored_expiry() -> None:
    clock, epoch = Clock(), SharedEpoch()
    cache = near_cache(clock, epoch)
    assert cache.get(domain="t.test", kind="dns", name="b.t.test.") is None  # a miss, then...
    cache.put(domain="t.test", kind="dns", name="b.t.test.", found=Found(Outcome.NOTHING, ttl=100))
    assert cache.near is not None and len(cache.near) == 1
    cache.store.delete(next(iter(cache.store._entries)))  # type: ignore[attr-defined]
    clock.now += 99.9
    # The store no longer has it: only the near cache can answer, and still may.
    assert cache.get(domain="t.test", kind="dns", name="b.t.test.") is not None
    clock.now += 0.2
    assert cache.get(domain="t.test", kind="dns", name="b.t.test.") is None


def test_near_cache_keeps_a_value_read_from_the_store_only_for_what_it_has_left() -> None:
    clock, epoch = Clock(), SharedEpoch()
    writer, reader = near_cache(clock, epoch), near_cache(clock, epoch)
    reader.store = writer.store  # two processes, one shared store
    found = Found(Outcome.NOTHING, notes=("v1",), ttl=100)
    writer.put(domain="t.test", kind="dns", name="b.t.test.", found=found)
    clock.now += 60
    assert notes(reader.get(domain="t.test", kind="dns", name="b.t.test.")) == ("v1",)
    writer.store.delete(next(iter(writer.store._entries)))  # type: ignore[attr-defined]
    clock.now += 39.9
    assert notes(reader.get(domain="t.test", kind="dns", name="b.t.test.")) == ("v1",)  # near
    clock.now += 0.2  # 100 s after it was written, not 100 s after the reader saw it
    assert reader.get(domain="t.test", kind="dns", name="b.t.test.") is None


def test_near_cache_drops_everything_when_another_process_flushes() -> None:
    clock, epoch = Clock(), SharedEpoch()
    one, two = near_cache(clock, epoch), near_cache(clock, epoch, check_every=0.25)
    two.store = one.store
    one.put(domain="t.test", kind="ldap", name="b@t.test", found=Found(Outcome.NOTHING, ttl=9))
    assert two.get(domain="t.test", kind="ldap", name="b@t.test") is not None
    reads = epoch.reads
    for _ in range(100):  # hits within the interval never read the epoch
        assert two.get(domain="t.test", kind="ldap", name="b@t.test") is not None
    assert epoch.reads == reads
    one.flush("t.test")
    clock.now += 0.2
    assert two.get(domain="t.test", kind="ldap", name="b@t.test") is not None  # within bound
    clock.now += 0.06
    assert two.get(domain="t.test", kind="ldap", name="b@t.test") is None
    assert two.near is not None and len(two.near) == 0


def test_near_cache_serves_nothing_while_the_epoch_cannot_be_read() -> None:
    clock, epoch = Clock(), SharedEpoch()
    cache = near_cache(clock, epoch)
    assert cache.get(domain="t.test", kind="dns", name="b.t.test.") is None
    cache.put(domain="t.test", kind="dns", name="b.t.test.", found=Found(Outcome.NOTHING, ttl=60))
    assert cache.near is not None and len(cache.near) == 1
    cache.store.delete(next(iter(cache.store._entries)))  # type: ignore[attr-defined]
    epoch.readable = False  # the store went away: a flush could happen without us hearing
    clock.now += 1
    assert cache.get(domain="t.test", kind="dns", name="b.t.test.") is None
    cache.put(domain="t.test", kind="dns", name="b.t.test.", found=Found(Outcome.NOTHING, ttl=60))
    assert len(cache.near) == 0  # nothing is kept meanwhile
    epoch.readable = True  # back, with the same epoch: still starts empty
    clock.now += 1
    assert cache.near.get("dns:b.t.test.") is None


def test_near_cache_refuses_a_value_read_before_a_flush_it_raced() -> None:
    clock, epoch = Clock(), SharedEpoch()
    near = NearCache(epoch=epoch, clock=clock, wall_clock=clock)
    near.get("warm-up")  # reads the epoch once
    mark = near.mark()  # a lookup takes its mark, then reads the store (a value from before...)
    epoch.advance()  # ...a flush in another process...
    clock.now += 1
    assert near.get("other") is None  # ...which another thread's lookup notices (entries dropped)
    near.put("dns:b.t.test.", Found(Outcome.NOTHING), expires_at=clock.now + 60, mark=mark)
    assert near.get("dns:b.t.test.") is None  # the value read before the drop is not kept
    near.put("dns:b.t.test.", Found(Outcome.NOTHING), expires_at=clock.now + 60, mark=near.mark())
    assert near.get("dns:b.t.test.") is not None  # a value read after it is


def test_near_cache_is_bounded_and_rejects_bad_settings() -> None:
    clock, epoch = Clock(), SharedEpoch()
    near = NearCache(epoch=epoch, max_entries=2, clock=clock, wall_clock=clock)
    near.get("x")
    for key in ("a", "b", "c"):
        near.put(key, Found(Outcome.NOTHING), expires_at=clock.now + 60, mark=near.mark())
    assert [near.get(key) is not None for key in ("a", "b", "c")] == [False, True, True]
    with pytest.raises(ValueError, match="max_entries"):
        NearCache(epoch=epoch, max_entries=0)
    with pytest.raises(ValueError, match="check_every"):
        NearCache(epoch=epoch, check_every=-1)


def test_a_forked_child_starts_with_an_empty_near_cache() -> None:
    clock, epoch = Clock(), SharedEpoch()
    near = NearCache(epoch=epoch, clock=clock, wall_clock=clock)
    near.get("x")
    near.put("k", Found(Outcome.NOTHING), expires_at=clock.now + 60, mark=near.mark())
    near._lock.acquire()  # as if another thread of the parent held it at the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: must neither hang on the lock nor serve the parent's entries
        os.close(read)
        os.write(write, b"empty" if near.get("k") is None and len(near) == 0 else b"kept")
        os._exit(0)
    near._lock.release()
    os.close(write)
    try:
        with os.fdopen(read, "rb") as pipe:
            assert pipe.read() == b"empty"
    finally:
        os.waitpid(pid, 0)
    assert near.get("k") is not None  # the parent keeps its own
