"""The one in-process byte cache behind discovery's ``Cache`` and trust's ``ByteCache``."""

from __future__ import annotations

from agent import cache as shared
from agent.discovery.cache import MemoryCache as DiscoveryMemoryCache
from agent.trust.cache import MemoryCache as TrustMemoryCache


def test_memory_cache_evicts_the_least_recently_used_entry() -> None:
    cache = shared.MemoryCache(max_entries=2)
    cache.set("a", b"1", 10)
    cache.set("b", b"2", 10)
    assert cache.get("a") == b"1"  # a is now more recent than b
    cache.set("c", b"3", 10)
    assert [cache.get(k) for k in "abc"] == [b"1", None, b"3"]


def test_memory_cache_non_positive_ttl_stores_nothing_and_keeps_the_old_value() -> None:
    cache = shared.MemoryCache()
    cache.set("k", b"old", 10)
    cache.set("k", b"new", 0)
    cache.set("n", b"x", -1)
    assert cache.get("k") == b"old"
    assert cache.get("n") is None


def test_memory_cache_delete_forgets_one_key() -> None:
    cache = shared.MemoryCache()
    cache.set("a", b"1", 10)
    cache.set("b", b"2", 10)
    cache.delete("a")
    cache.delete("missing")
    assert (cache.get("a"), cache.get("b")) == (None, b"2")


def test_each_package_keeps_its_default_bound() -> None:
    discovery, trust = DiscoveryMemoryCache(), TrustMemoryCache()
    for i in range(10_001):
        discovery.set(str(i), b"x", 60)
        trust.set(str(i), b"x", 60)
    assert discovery.get("0") is None and discovery.get("1") == b"x"
    assert trust.get(str(10_000 - 4096)) is None and trust.get(str(10_001 - 4096)) == b"x"
    assert TrustMemoryCache is shared.MemoryCache
