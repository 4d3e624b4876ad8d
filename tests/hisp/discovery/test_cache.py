"""The shared discovery cache: real Redis when REDIS_URL is set, Django's cache otherwise."""

from __future__ import annotations

import secrets
import time

import dns.name
import pytest
import redis
from django.core.management import call_command
from django.core.management.base import CommandError

from agent.discovery import DiscoveryCache
from agent.discovery.found import Found, Outcome
from hisp import discovery
from tests.hisp.discovery.conftest import Partner
from tests.support.bind import BindServer, cert_record
from tests.support.services import free_port, redis_url

pytestmark = [pytest.mark.django_db, pytest.mark.services]


@pytest.fixture
def real_redis(settings: pytest.FixtureRequest) -> str:
    url = redis_url()
    settings.REDIS_URL = url  # type: ignore[attr-defined]
    return url


def test_redis_store_keeps_raw_json_for_its_ttl(real_redis: str) -> None:
    store = discovery.cache_store()
    assert isinstance(store, discovery.RedisStore)
    key = f"test:{secrets.token_hex(8)}"
    store.set(key, b'{"o":"nothing"}', 0.3)
    assert store.get(key) == b'{"o":"nothing"}'
    # Stored as the bytes given (JSON, never a pickle a reader would execute).
    assert redis.Redis.from_url(real_redis).get(discovery.STORE_PREFIX + key) == b'{"o":"nothing"}'
    time.sleep(0.4)
    assert store.get(key) is None
    store.set(key, b"x", 60)
    store.delete(key)
    assert store.get(key) is None


def test_workers_share_results_and_a_flush_reaches_all_of_them(
    real_redis: str, partner: Partner, named: BindServer, settings: pytest.FixtureRequest
) -> None:
    settings.HISP_DNS_SERVERS = [named.address]  # type: ignore[attr-defined]
    # Two caches over the same Redis, as two Celery workers have.
    one = DiscoveryCache(store=discovery.cache_store(), policy=discovery.cache_policy())
    two = DiscoveryCache(store=discovery.cache_store(), policy=discovery.cache_policy())
    found = Found(Outcome.FOUND, (partner.address_cert,), ttl=300)
    name = f"bob.{partner.domain}."
    one.put(domain=partner.domain, kind="dns", name=name, found=found)
    assert two.get(domain=partner.domain, kind="dns", name=name) == found

    call_command("discovery", "flush", partner.domain)
    assert two.get(domain=partner.domain, kind="dns", name=name) is None
    assert one.get(domain=partner.domain, kind="dns", name=name) is None


def test_resolver_fills_redis_and_flush_by_address_empties_it(
    real_redis: str, partner: Partner, named: BindServer, settings: pytest.FixtureRequest
) -> None:
    settings.HISP_DNS_SERVERS = [named.address]  # type: ignore[attr-defined]
    level = next(iter(discovery.resolver().candidates(partner.address)))
    assert level.certificates == (partner.address_cert,)
    named.serve_zone(partner.domain, [])
    cache = DiscoveryCache(store=discovery.cache_store(), policy=discovery.cache_policy())
    key = dict(domain=partner.domain, kind="dns", name=f"bob.{partner.domain}.")
    assert cache.get(**key) is not None  # type: ignore[arg-type]
    discovery.flush(partner.address)
    assert cache.get(**key) is None  # type: ignore[arg-type]
    assert next(iter(discovery.resolver().candidates(partner.address))).certificates == ()


def test_redis_down_lookups_go_on_but_flush_says_so(
    partner: Partner, named: BindServer, settings: pytest.FixtureRequest
) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # type: ignore[attr-defined]
    settings.HISP_DNS_SERVERS = [named.address]  # type: ignore[attr-defined]
    level = next(iter(discovery.resolver().candidates(partner.address)))
    assert level.certificates == (partner.address_cert,)  # found without the cache
    with pytest.raises(CommandError, match="discovery cache unavailable"):
        call_command("discovery", "flush", partner.address)


def test_without_redis_the_django_cache_is_used(partner: Partner, named: BindServer,
                                                settings: pytest.FixtureRequest) -> None:
    settings.HISP_DNS_SERVERS = [named.address]  # type: ignore[attr-defined]
    store = discovery.cache_store()
    assert isinstance(store, discovery.DjangoCacheStore)
    key = f"test:{secrets.token_hex(8)}"
    store.set(key, b"value", 0.2)  # rounded up to Django's whole second, never "forever"
    assert store.get(key) == b"value"
    time.sleep(1.1)
    assert store.get(key) is None


def test_flushing_an_idn_domain_drops_what_was_looked_up_in_either_spelling(
    real_redis: str, named: BindServer, partner: Partner, settings: pytest.FixtureRequest
) -> None:
    settings.HISP_DNS_SERVERS = [named.address]  # type: ignore[attr-defined]
    unicode = f"bücher-{secrets.token_hex(3)}.partner.test"
    zone = dns.name.from_text(unicode).to_text(omit_final_dot=True)  # xn--bcher-...
    named.serve_zone(zone, [cert_record("bob", partner.der(partner.address_cert))])
    found = next(iter(discovery.resolver().candidates(f"bob@{unicode}")))
    assert found.certificates == (partner.address_cert,)
    named.serve_zone(zone, [])
    call_command("discovery", "flush", unicode)  # stored and flushed as xn--bcher-...
    assert next(iter(discovery.resolver().candidates(f"bob@{unicode}"))).certificates == ()
    assert next(iter(discovery.resolver().candidates(f"bob@{zone}"))).certificates == ()
