"""Certificate discovery on the Django side: configuration, the shared cache, flush, reports.

The lookups themselves live in ``agent.discovery`` (DNS CERT, then LDAP via SRV). Here they get
their settings (``HISP_DNS_SERVERS``, ``HISP_DISCOVERY_TIMEOUT``, ``HISP_LDAP_CACHE_TTL``) and a
cache shared by every worker: Redis when ``REDIS_URL`` is set, with an in-process near cache in
front of it (``hisp.discovery_redis``: flushes reach every process within a quarter second),
Django's cache (a file cache in the data folder) otherwise. Hosted addresses never reach DNS:
``resolver()`` answers them from the database (``hisp.agent_env.DatabaseCertificateResolver``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from cryptography import x509
from django.conf import settings
from django.core.cache import caches

from agent.discovery import Cache, CachePolicy, DiscoveryCache, DiscoveryResolver
from agent.discovery.names import AddressError, Target, target_for
from agent.errors import AgentError
from agent.types import Candidates, CertificateResolver
from hisp.certificates import fingerprint
from hisp.discovery_redis import REDIS_SOCKET_TIMEOUT as REDIS_SOCKET_TIMEOUT
from hisp.discovery_redis import STORE_PREFIX, DiscoveryError, RedisStore, redis_cache
from hisp.models import Domain
from hisp.services.identity import (
    ADDRESS_REFUSED,
    IdentityError,
    normalise_address,
    normalise_domain,
)

logger = logging.getLogger(__name__)


# --- Cache stores ------------------------------------------------------------------------------


class DjangoCacheStore:
    """``agent.discovery.Cache`` over Django's default cache (the file cache of the quick start,
    or whatever ``CACHES`` says)."""

    def __init__(self, *, prefix: str = STORE_PREFIX) -> None:
        self.prefix = prefix

    def get(self, key: str) -> bytes | None:
        value = caches["default"].get(self.prefix + key)
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes, ttl: float) -> None:
        # Django's timeouts are whole seconds; round up so a short TTL is not "never expires"
        # (0 would mean "do not cache" and None "forever").
        caches["default"].set(self.prefix + key, value, timeout=max(1, int(ttl + 0.999)))

    def delete(self, key: str) -> None:
        caches["default"].delete(self.prefix + key)


def cache_store(*, strict: bool = False) -> Cache:
    """Redis when ``REDIS_URL`` is set (shared by every worker), Django's cache otherwise."""
    return _store(settings.REDIS_URL, strict=strict)


def _store(redis_url: str, *, strict: bool) -> Cache:
    return RedisStore(redis_url, strict=strict) if redis_url else DjangoCacheStore()


def cache_policy() -> CachePolicy:
    return _policy(settings.HISP_LDAP_CACHE_TTL.total_seconds())


def _policy(ldap_ttl: float) -> CachePolicy:
    return CachePolicy(ldap_ttl=ldap_ttl)


def _cache(redis_url: str, policy: CachePolicy, *, strict: bool) -> DiscoveryCache:
    if redis_url:
        return redis_cache(redis_url, policy=policy, strict=strict)
    # Django's cache is a local file or whatever CACHES names; no near cache in front of it,
    # since nothing would tell this process about a flush made by another.
    return DiscoveryCache(store=DjangoCacheStore(), policy=policy)


# --- Resolvers -----------------------------------------------------------------------------------


def remote_resolver() -> DiscoveryResolver:
    """DNS CERT then LDAP for addresses we do not host, cached in the shared store.

    One per process and configuration: the resolver keeps decoded cache entries, which is most
    of what makes a cache hit cheap.
    """
    timeout = settings.HISP_DISCOVERY_TIMEOUT.total_seconds()
    return _remote_resolver(
        tuple(settings.HISP_DNS_SERVERS),
        timeout,
        settings.HISP_LDAP_CACHE_TTL.total_seconds(),
        settings.REDIS_URL,
        bool(settings.HISP_FETCH_ALLOW_PRIVATE_NETWORKS),
    )


@lru_cache(maxsize=8)
def _remote_resolver(
    servers: tuple[str, ...],
    timeout: float,
    ldap_ttl: float,
    redis_url: str,
    allow_private_networks: bool,
) -> DiscoveryResolver:
    return DiscoveryResolver.build(
        nameservers=list(servers) or None,
        timeout=timeout,
        # A dead LDAP server gives way to the next SRV target well within the level's time.
        connect_timeout=min(3.0, timeout / 2),
        cache=_cache(redis_url, _policy(ldap_ttl), strict=False),
        allow_private_networks=allow_private_networks,
        # A partner's SRV record must not aim our LDAP connections inside our network either.
        ldap_allow_private_networks=allow_private_networks,
    )


def resolver() -> CertificateResolver:
    """Every level for any address: hosted ones from the database (no DNS), imported
    certificates, then discovery. The same resolver the agent gets from ``build_environment``."""
    # Imported here: hisp.agent_env plugs this module in, so importing it at the top would
    # make the two modules import each other.
    from hisp.agent_env import DatabaseCertificateResolver

    return DatabaseCertificateResolver(discovery=remote_resolver())


# --- Flush -------------------------------------------------------------------------------------


def flush(entry: str) -> str:
    """Forget cached discovery results for an address or a whole domain; the entry as flushed.

    Goes through a strict store: if the cache cannot be reached the operator hears so. This
    process's near cache is dropped at once, every other process's within
    ``hisp.discovery_redis.NEAR_CHECK_EVERY``.
    """
    value = entry.strip()
    if "@" in value:
        value = _target(value).address
    else:
        try:
            value = normalise_domain(value)
        except IdentityError as exc:
            raise DiscoveryError(f"not an address or domain: {exc}") from None
    _cache(settings.REDIS_URL, cache_policy(), strict=True).flush(value)
    return value


# --- Lookup report (admin console, `manage.py discovery lookup`) ---------------------------------


@dataclass(frozen=True)
class CertificateSummary:
    subject: str
    issuer: str
    serial: str
    not_before: datetime
    not_after: datetime
    fingerprint_sha256: str
    emails: tuple[str, ...]
    dns_names: tuple[str, ...]
    current: bool  # inside its validity period now (binding and trust are the agent's call)


@dataclass(frozen=True)
class LevelReport:
    source: str  # hosted, imported, dns, ldap
    binding: str  # address or domain
    certificates: tuple[CertificateSummary, ...]
    error: str | None
    notes: tuple[str, ...]
    seconds: float  # time the level took (0 when it came from the cache or the database)


@dataclass(frozen=True)
class LookupReport:
    address: str
    hosted: bool
    levels: tuple[LevelReport, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lookup_report(address: str, *, at: datetime | None = None) -> LookupReport:
    """Every discovery level for ``address`` (not only up to the first usable one, as the agent
    stops), with what each found, its error and notes: what an operator needs to see why mail
    to a partner does or does not go out."""
    target = _target(address)
    now = at or datetime.now(UTC)
    levels: list[LevelReport] = []
    candidates: Iterator[Candidates] = iter(resolver().candidates(target.address))
    while True:
        started = time.monotonic()
        try:
            level = next(candidates, None)
        except AgentError:
            break  # some level failed: the agent would retry; each level says why already
        if level is None:
            break
        levels.append(
            LevelReport(
                source=level.source,
                binding=str(level.binding.value),
                certificates=tuple(_summary(cert, now) for cert in level.certificates),
                error=level.error,
                notes=tuple(level.notes),
                seconds=round(time.monotonic() - started, 4),
            )
        )
    return LookupReport(
        address=target.address,
        hosted=Domain.objects.filter(name=target.domain).exists(),
        levels=tuple(levels),
    )


def _target(address: str) -> Target:
    """``address`` split for discovery, once it is one Direct address: the agent's split takes
    what is after the last ``@``, so ``a@b@c.org`` or ``Dr A <a@x.org>`` would be looked up as
    some other name in a partner's DNS instead of being refused."""
    try:
        target = target_for(address)
    except AddressError as exc:
        raise DiscoveryError(str(exc)) from None
    try:
        normalise_address(address)
    except IdentityError as exc:
        raise DiscoveryError(
            "not an address: " + str(exc).removeprefix(ADDRESS_REFUSED + ": ")
        ) from None
    return target


def _summary(certificate: x509.Certificate, now: datetime) -> CertificateSummary:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        emails = tuple(san.get_values_for_type(x509.RFC822Name))
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
    except (x509.ExtensionNotFound, ValueError):
        emails, dns_names = (), ()
    return CertificateSummary(
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        serial=format(certificate.serial_number, "x"),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        fingerprint_sha256=fingerprint(certificate),
        emails=emails,
        dns_names=dns_names,
        current=certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc,
    )
