"""Adapters that give the agent (a pure library) what it needs from the database.

- ``DatabaseKeyStore``: hosted signing and decryption identities. Private keys are unwrapped only
  when the agent calls ``Identity.private_key()`` (i.e. when it actually signs or decrypts).
- ``DatabaseTrustStore``: anchors per hosted domain and direction.
- ``DatabaseCertificateResolver``: recipient certificates. Hosted addresses come from our own
  rows (address-bound level, then domain-bound); other addresses from certificates imported out
  of band, then from discovery (DNS CERT / LDAP), plugged in by ``discovery_resolver()``.
- ``HostedFirstRevocationChecker``: our own certificates are checked against the database
  directly; everyone else's through the agent's HTTP checker (OCSP, then CRL).

What is remembered in this process, and why it is safe (every worker handles one message after
another, so re-reading and re-parsing the same few rows was most of the per-message cost):

- Parsed certificates, by SHA-256 fingerprint. A fingerprint names exactly one DER encoding, so
  an entry can never be stale; the rows that say *which* certificates apply (current, revoked,
  superseded, trusted) are re-read whenever the shared stamp below moves.
- Unwrapped private keys, by their certificate's fingerprint, for at most ``KEY_TTL`` seconds
  (a bounded ``_Expiring`` map, purged by a background thread so that an idle worker drops
  them too). Trade-off: a clear key then stays in this worker's memory for up to a minute
  after its last use instead of only for one operation, against one database read, an AES key
  unwrap, an AES-GCM decryption and a DER parse per message. The key never leaves the process
  (not logged, not pickled, not in the shared cache), it only serves identities whose rows are
  still selected as current, and the entries are dropped when they expire or the cache is full.
  Set ``KEY_TTL`` to 0 to unwrap on every use.
- Issuers that are not CAs of ours, by fingerprint, for ``FOREIGN_ISSUER_TTL`` (the revocation of
  our own certificates is always read from the database).
- Which rows apply: the signing and decryption identity rows per address, the anchors per
  (domain, direction), the recipient-certificate rows per address, and (through
  ``cached_rows``, for the mail flow) hosted addresses, hosted domains and static routes, for as
  long as the shared stamp ``hisp:pki-version`` (Django's cache: Redis in production) is
  unchanged. Every writer that creates, revokes, renews or supersedes a certificate, changes an
  anchor or bundle, adds, changes or removes an address, domain or route bumps it
  (``bump_pki_version``, also wired to the models' save/delete signals; a queryset ``update()``
  sends no signal, so its caller bumps). Readers compare the
  stamp at most every ``PKI_VERSION_CHECK`` seconds, so such a change reaches every worker
  within that bound (docs/pki.md); each entry is also dropped after ``PKI_ROWS_MAX_AGE`` seconds
  whatever the stamp says. Validity periods are checked on every call against the parsed
  certificates, never cached. Without a readable stamp nothing is cached.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from django.conf import settings
from django.core.cache import cache as django_cache
from django.db import connection, transaction
from django.db.models import Model, Q
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from agent.trust import HttpIssuerFetcher, HttpRevocationChecker
from agent.trust.validation_cache import ValidationCache
from agent.types import (
    Binding,
    Candidates,
    CertificateResolver,
    Direction,
    Environment,
    Identity,
    RevocationChecker,
    RevocationStatus,
)
from hisp.certificates import fingerprint, lenient_serials
from hisp.keystore import unwrap_private_key
from hisp.models import (
    Address,
    Certificate,
    Domain,
    PrivateKey,
    Route,
    TrustAnchor,
    TrustBundle,
)

_SIGNING = (Certificate.Usage.DUAL, Certificate.Usage.SIGNING)
_ENCRYPTION = (Certificate.Usage.DUAL, Certificate.Usage.ENCRYPTION)
_WITH_KEY = (Certificate.Source.HOSTED, Certificate.Source.IMPORTED)

KEY_TTL = 60.0  # seconds a clear private key may stay in a worker's memory after it was unwrapped
FOREIGN_ISSUER_TTL = 600.0
PKI_VERSION_KEY = "hisp:pki-version"
PKI_VERSION_CHECK = 1.0  # seconds: the bound for a revocation or anchor removal to reach a worker
PKI_ROWS_MAX_AGE = 60.0  # seconds: an entry is refetched after this whatever the stamp says

V = TypeVar("V")


class _Expiring(Generic[V]):
    """A small thread-safe map whose entries expire and whose least recently used entries go
    first when full. ``repr`` shows only its size: values may be private keys."""

    def __init__(self, *, ttl: float, max_entries: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {len(self._entries)} entries>"

    def get(self, key: str) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)  # least recently used goes first when full
            return entry[1]

    def put(self, key: str, value: V) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._entries[key] = (self._clock() + self.ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        if math.isfinite(self.ttl):
            self.purge()

    def purge(self) -> None:
        """Drop every expired entry."""
        with self._lock:
            now = self._clock()
            for key in [k for k, (expires, _) in self._entries.items() if expires <= now]:
                del self._entries[key]


# Process-wide: build_environment() is called once per task, these outlive it.
_certificates: _Expiring[x509.Certificate] = _Expiring(ttl=float("inf"), max_entries=4096)
_keys: _Expiring[RSAPrivateKey] = _Expiring(ttl=KEY_TTL, max_entries=256)
_foreign_issuers: _Expiring[bool] = _Expiring(ttl=FOREIGN_ISSUER_TTL, max_entries=4096)


_JANITOR_INTERVAL = 5.0
_janitor_pid: int | None = None


def _expire_keys_in_background() -> None:
    """Expired keys must leave memory even when no further message comes (an idle worker): a
    daemon thread purges them every few seconds. Started in the process that caches keys (a
    forked Celery child does not inherit its parent's threads)."""
    global _janitor_pid
    if _janitor_pid == os.getpid():
        return
    _janitor_pid = os.getpid()

    def purge_forever() -> None:
        while True:
            time.sleep(_JANITOR_INTERVAL)
            _keys.purge()

    threading.Thread(target=purge_forever, name="hisp-key-expiry", daemon=True).start()


def _read_version() -> int | None:
    """The shared stamp, created when missing (a random start, so that a stamp lost with the
    cache never comes back with a value a worker already holds). None when unreadable."""
    try:
        version = django_cache.get(PKI_VERSION_KEY)
        if version is None:
            django_cache.add(PKI_VERSION_KEY, time.time_ns(), timeout=None)
            version = django_cache.get(PKI_VERSION_KEY)
    except Exception:  # noqa: BLE001 (an unreachable cache only disables caching)
        return None
    return version if isinstance(version, int) else None


def _bump_now() -> None:
    _rows_cache.clear()  # this process sees its own write at once
    try:
        try:
            django_cache.incr(PKI_VERSION_KEY)
        except ValueError:  # missing: start it (or step it if another process just did)
            if not django_cache.add(PKI_VERSION_KEY, time.time_ns(), timeout=None):
                django_cache.incr(PKI_VERSION_KEY)
    except Exception:  # noqa: BLE001 (readers then find no stamp and cache nothing)
        try:
            django_cache.delete(PKI_VERSION_KEY)
        except Exception:  # noqa: BLE001, S110 (unreachable: readers cannot read it either)
            pass


def bump_pki_version() -> None:
    """Tell every worker that certificates, anchors, addresses or domains changed: now, and
    again once the current transaction commits (a reader between the two may have fetched the
    rows as they were before the commit)."""
    _bump_now()
    transaction.on_commit(_bump_now)


class _VersionedRows:
    """Per-process rows keyed by lookup, valid while the shared stamp is unchanged."""

    def __init__(self, *, max_entries: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._max = max_entries
        self._entries: dict[tuple[object, ...], tuple[float, object]] = {}
        self._version: int | None = None
        self._checked_at = -math.inf
        self._generation = 0
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._generation += 1
            self._checked_at = -math.inf

    def get(self, key: tuple[object, ...], load: Callable[[], V]) -> V:
        now = self._clock()
        with self._lock:
            if now - self._checked_at >= PKI_VERSION_CHECK:
                version = _read_version()
                self._checked_at = now
                if version is None or version != self._version:
                    self._entries.clear()
                    self._generation += 1
                    self._version = version
            if self._version is not None:
                entry = self._entries.get(key)
                if entry is not None and now - entry[0] < PKI_ROWS_MAX_AGE:
                    return entry[1]  # type: ignore[return-value]
            generation, cacheable = self._generation, self._version is not None
        value = load()
        with self._lock:
            # Not when the stamp moved while loading: the rows may predate the change.
            if cacheable and generation == self._generation:
                if len(self._entries) >= self._max:
                    self._entries.clear()
                self._entries[key] = (now, value)
        return value


    def peek(self, key: tuple[object, ...]) -> object:
        """The remembered value without any I/O, or ``MISSING`` when the stamp is due for a
        check or nothing is remembered (callers on an event loop then go to a thread)."""
        now = self._clock()
        with self._lock:
            if self._version is None or now - self._checked_at >= PKI_VERSION_CHECK:
                return MISSING
            entry = self._entries.get(key)
            if entry is None or now - entry[0] >= PKI_ROWS_MAX_AGE:
                return MISSING
            return entry[1]


MISSING = object()
_rows_cache = _VersionedRows()


def cached_rows(key: tuple[object, ...], load: Callable[[], V]) -> V:
    """What ``load`` reads from the database, remembered in this process while the shared stamp
    is unchanged (at most ``PKI_VERSION_CHECK`` seconds behind a write, see the module doc).
    ``key`` names the lookup; its first item says what kind of row it is. The value is shared by
    every caller in this process: treat it as read-only."""
    return _rows_cache.get(key, load)


def peek_cached_rows(key: tuple[object, ...]) -> object:
    """What ``cached_rows(key, ...)`` would return from memory alone, else ``MISSING``."""
    return _rows_cache.peek(key)


def forget_cached_rows() -> None:
    """Drop what ``cached_rows`` remembers in this process (tests: their database rolls back)."""
    _rows_cache.clear()


def _bump_on_change(**_: object) -> None:
    bump_pki_version()


for _model in (Certificate, TrustAnchor, TrustBundle, Address, Domain, Route):
    post_save.connect(_bump_on_change, sender=_model, dispatch_uid=f"pki-version-save-{_model}")
    post_delete.connect(_bump_on_change, sender=_model,
                        dispatch_uid=f"pki-version-delete-{_model}")


def parsed(fingerprints: Iterable[str]) -> dict[str, x509.Certificate]:
    """The certificates with these fingerprints: from this process when parsed before, else one
    query for the DER of all the others."""
    wanted = list(dict.fromkeys(fingerprints))
    found: dict[str, x509.Certificate] = {}
    missing: list[str] = []
    for fp in wanted:
        certificate = _certificates.get(fp)
        if certificate is None:
            missing.append(fp)
        else:
            found[fp] = certificate
    if missing:
        rows = Certificate.objects.filter(fingerprint_sha256__in=missing).values_list(
            "fingerprint_sha256", "der"
        )
        with lenient_serials():
            for fp, der in rows:
                certificate = x509.load_der_x509_certificate(bytes(der))
                _certificates.put(fp, certificate)
                found[fp] = certificate
    return found


def certificate_id(fingerprint: str) -> int | None:
    """The stored certificate with this fingerprint (a trust anchor, say), remembered while the
    shared stamp is unchanged: deleting the row bumps the stamp, so no stale key is handed out."""
    def load() -> int | None:
        found = _rows(
            f'SELECT "id" FROM {_table(Certificate)} WHERE "fingerprint_sha256" = %s',  # noqa: S608
            [fingerprint],
        )
        return found[0][0] if found else None

    return cached_rows(("certificate-id", fingerprint), load)


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(str(model._meta.db_table))


def _rows(sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
    """Run one of the lookups below. They are written in SQL (PostgreSQL and SQLite alike) rather
    than built with the ORM because they run several times for every message, and composing
    and compiling these querysets cost more CPU than everything else the worker does for the
    message except the RSA operations. Only quoted model identifiers are formatted into the
    text; every value is a parameter."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def _at(moment: datetime) -> object:
    return connection.ops.adapt_datetimefield_value(moment)


def _split(address: str) -> tuple[str, str]:
    local, _, domain = address.strip().rpartition("@")
    return f"{local}@{domain.lower()}", domain.lower()


def _key_loader(private_key_id: int, certificate_fingerprint: str) -> Callable[[], RSAPrivateKey]:
    # Keyed by the certificate's fingerprint, not the row id: a fingerprint names one public key
    # and so exactly one private key, whatever happens to the rows.
    def unwrap() -> RSAPrivateKey:
        key = _keys.get(certificate_fingerprint)
        if key is None:
            key = unwrap_private_key(PrivateKey.objects.get(pk=private_key_id))
            if _keys.ttl > 0:
                _keys.put(certificate_fingerprint, key)
                _expire_keys_in_background()
        return key

    return unwrap


_IDENTITY_COLUMNS = (
    'c."fingerprint_sha256", c."binding", c."private_key_id", '
    'i."fingerprint_sha256", i."subject", i."issuer"'
)


@dataclass(frozen=True)
class _IdentityRow:
    fingerprint: str
    binding: str
    private_key_id: int
    issuer_fingerprint: str | None
    issuer_is_root: bool


def _identity_rows(where: str, params: Sequence[object], order: str) -> list[_IdentityRow]:
    """Hosted certificates with a key (and their issuers) matching ``where``."""
    cert = _table(Certificate)
    sql = (
        f"SELECT {_IDENTITY_COLUMNS} FROM {cert} c "  # noqa: S608 (identifiers only)
        f'LEFT JOIN {cert} i ON i."id" = c."issued_by_id" '
        f'WHERE c."private_key_id" IS NOT NULL AND c."source" IN (%s, %s) AND ({where}) '
        f"ORDER BY {order}"
    )
    return [
        _IdentityRow(fp, binding, key_id, issuer_fp, issuer_fp is not None and subj == iss)
        for fp, binding, key_id, issuer_fp, subj, iss in _rows(sql, [*_WITH_KEY, *params])
    ]


def _identities(rows: list[_IdentityRow]) -> list[Identity]:
    # Intermediates to embed: the issuer unless it is a self-signed root (anchors are never
    # sent, RFC 8551 2.5.2 leaves it to the receiver's anchors).
    certificates = parsed(
        [r.fingerprint for r in rows]
        + [r.issuer_fingerprint for r in rows if r.issuer_fingerprint and not r.issuer_is_root]
    )
    return [
        Identity(
            certificate=certificates[r.fingerprint],
            private_key=_key_loader(r.private_key_id, r.fingerprint),
            chain=(
                (certificates[r.issuer_fingerprint],)
                if r.issuer_fingerprint in certificates and not r.issuer_is_root
                else ()
            ),
            binding=Binding.ADDRESS if r.binding == Certificate.Binding.ADDRESS else Binding.DOMAIN,
        )
        for r in rows
        if r.fingerprint in certificates  # a row deleted since the first query is gone
    ]


class DatabaseKeyStore:
    """The agent's ``PrivateKeyStore`` over hosted certificates and wrapped keys."""

    def __init__(self, *, clock: Callable[[], datetime] = timezone.now) -> None:
        self._clock = clock

    def signing_identities(self, address: str) -> Sequence[Identity]:
        """Current signing certificates of a hosted address: address-bound first, then
        domain-bound, newest first within each (one query)."""
        value, domain = _split(address)
        found = _rows_cache.get(("signing", value), lambda: _identity_rows(
            'c."usage" IN (%s, %s) AND c."revoked_at" IS NULL AND c."superseded_by_id" IS NULL '  # noqa: S608
            'AND ((c."binding" = %s AND c."bound_name" = %s) '
            'OR (c."binding" = %s AND c."bound_name" = %s)) '
            f'AND EXISTS (SELECT 1 FROM {_table(Address)} a WHERE a."address" = %s)',
            [*_SIGNING, Certificate.Binding.ADDRESS, value,
             Certificate.Binding.DOMAIN, domain, value],
            'c."not_before" DESC, c."id" DESC',
        ))
        ordered = [r for r in found if r.binding == Certificate.Binding.ADDRESS] + [
            r for r in found if r.binding == Certificate.Binding.DOMAIN
        ]
        # The validity period is checked here, on every call, so cached rows never sign with a
        # certificate that has expired (or is not yet valid).
        now = self._clock()
        return [
            identity for identity in _identities(ordered)
            if identity.certificate.not_valid_before_utc <= now
            < identity.certificate.not_valid_after_utc
        ]

    def decryption_identities(self, addresses: Sequence[str]) -> Sequence[Identity]:
        """Every key that may open mail to these addresses, superseded and expired ones
        included: mail encrypted to a certificate just before its renewal is still in flight."""
        values = list(dict.fromkeys(_split(a)[0] for a in addresses))
        if not values:
            return []
        return _identities(_rows_cache.get(("decryption", *values),
                                           lambda: self._decryption_rows(values)))

    @staticmethod
    def _decryption_rows(values: list[str]) -> list[_IdentityRow]:
        marks = ", ".join(["%s"] * len(values))
        address, domain = _table(Address), _table(Domain)
        return _identity_rows(
            'c."usage" IN (%s, %s) AND ('  # noqa: S608
            f'(c."binding" = %s AND c."bound_name" IN '
            f'(SELECT a."address" FROM {address} a WHERE a."address" IN ({marks}))) '
            f'OR (c."binding" = %s AND c."bound_name" IN (SELECT d."name" FROM {address} a '
            f'JOIN {domain} d ON d."id" = a."domain_id" WHERE a."address" IN ({marks}))))',
            [*_ENCRYPTION, Certificate.Binding.ADDRESS, *values,
             Certificate.Binding.DOMAIN, *values],
            # Current certificates first, so the usual case needs one try; "address" sorts
            # before "domain".
            '(c."superseded_by_id" IS NOT NULL), (c."revoked_at" IS NOT NULL), '
            'c."not_before" DESC, c."binding", c."id" DESC',
        )


class DatabaseTrustStore:
    """The agent's ``TrustStore``: the anchors each hosted domain trusts, per direction. The
    list is remembered while the PKI stamp is unchanged (an anchor removed by staff stops
    counting within ``PKI_VERSION_CHECK`` seconds)."""

    def anchors(self, domain: str, direction: Direction) -> Sequence[x509.Certificate]:
        fingerprints = _rows_cache.get(
            ("anchors", domain.lower(), direction.value),
            lambda: self._fingerprints(domain, direction),
        )
        certificates = parsed(fingerprints)
        return [certificates[fp] for fp in dict.fromkeys(fingerprints) if fp in certificates]

    @staticmethod
    def _fingerprints(domain: str, direction: Direction) -> list[str]:
        flag = '"incoming"' if direction == Direction.INCOMING else '"outgoing"'
        return [
            fp
            for (fp,) in _rows(
                f'SELECT c."fingerprint_sha256" FROM {_table(TrustAnchor)} t '  # noqa: S608
                f'JOIN {_table(Domain)} d ON d."id" = t."domain_id" '
                f'JOIN {_table(Certificate)} c ON c."id" = t."certificate_id" '
                f'WHERE d."name" = %s AND t.{flag} = %s ORDER BY t."id"',
                [domain.lower(), True],
            )
        ]


_CandidateRow = tuple[str, str, datetime, datetime, bool]


def _candidate_rows(value: str, domain: str) -> tuple[bool, tuple[_CandidateRow, ...]]:
    """Whether ``domain`` is hosted, and the encryption certificate rows bound to ``value`` (an
    address) or to ``domain``: ours (with a key) for a hosted domain, else those imported out
    of band. Newest first; ``dead`` when revoked or superseded."""
    hosted = Domain.objects.filter(name=domain).exists()
    # The local part ignoring case, as compose (one delivery per mailbox) and delivery tracking
    # treat it: a certificate staff imported for doc@ is the one for Doc@ (index 0009). The
    # domain too, for rows imported before import_certificate wrote it in lower case.
    rows = Certificate.objects.filter(
        Q(binding=Certificate.Binding.ADDRESS, bound_name__iexact=value)
        | Q(binding=Certificate.Binding.DOMAIN, bound_name__iexact=domain),
        usage__in=_ENCRYPTION,
    )
    if hosted:
        rows = rows.filter(source__in=_WITH_KEY, private_key__isnull=False)
    else:
        rows = rows.filter(source=Certificate.Source.IMPORTED, private_key__isnull=True)
    found = rows.order_by("-not_before", "-id").values_list(
        "fingerprint_sha256", "binding", "not_before", "not_after", "revoked_at",
        "superseded_by_id",
    )
    return hosted, tuple(
        (fp, binding, not_before, not_after, revoked is not None or superseded is not None)
        for fp, binding, not_before, not_after, revoked, superseded in found
    )


class DatabaseCertificateResolver:
    """The agent's ``CertificateResolver``.

    Hosted recipient: our own certificates (address-bound level, then domain-bound). Anyone else:
    certificates imported out of band (same two levels), then discovery.
    """

    def __init__(
        self,
        *,
        discovery: CertificateResolver | None = None,
        clock: Callable[[], datetime] = timezone.now,
    ) -> None:
        self._discovery = discovery
        self._clock = clock

    def candidates(self, address: str) -> Iterator[Candidates]:
        value, domain = _split(address)
        now = self._clock()
        hosted, found = cached_rows(
            ("candidates", value, domain), lambda: _candidate_rows(value, domain)
        )
        # Validity is judged now, on every call; only the rows themselves are remembered.
        current = [
            (fp, binding)
            for fp, binding, not_before, not_after, dead in found
            if not dead and not_before <= now < not_after
        ]
        certificates = parsed(fp for fp, _ in current)
        source = "hosted" if hosted else "imported"
        for binding, level in (
            (Certificate.Binding.ADDRESS, Binding.ADDRESS),
            (Certificate.Binding.DOMAIN, Binding.DOMAIN),
        ):
            # A hosted domain always answers both levels; an imported level counts when any
            # certificate was imported for it, even if none is current any more.
            if hosted or any(row[1] == binding for row in found):
                yield Candidates(
                    source=source,
                    binding=level,
                    certificates=tuple(certificates[fp] for fp, b in current if b == binding),
                )
        if not hosted and self._discovery is not None:
            yield from self._discovery.candidates(address)


class DjangoByteCache:
    """The agent's ``ByteCache`` over Django's cache (Redis in production: shared by workers)."""

    prefix = "agent:"

    def _key(self, key: str) -> str:
        # Keys may hold URLs; hashing keeps them short and safe for every cache backend.
        return self.prefix + hashlib.sha256(key.encode()).hexdigest()

    def get(self, key: str) -> bytes | None:
        value = django_cache.get(self._key(key))
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0:
            return
        django_cache.set(self._key(key), value, timeout=max(1, int(ttl)))


class HostedFirstRevocationChecker:
    """Our own certificates: the database is the authority, read at once (one query, no fetch,
    no cache). Everyone else's: ``fallback`` (OCSP then CRL over HTTP)."""

    def __init__(self, *, fallback: RevocationChecker) -> None:
        self._fallback = fallback

    def status(
        self, certificate: x509.Certificate, issuer: x509.Certificate, at: datetime
    ) -> RevocationStatus:
        issuer_fp = fingerprint(issuer)
        if _foreign_issuers.get(issuer_fp):
            return self._fallback.status(certificate, issuer, at)
        ours = Certificate.objects.filter(binding=Certificate.Binding.CA,
                                          source=Certificate.Source.HOSTED)
        found = list(
            Certificate.objects.filter(
                fingerprint_sha256=fingerprint(certificate),
                issued_by__in=ours.filter(fingerprint_sha256=issuer_fp),
            ).values_list("revoked_at", flat=True)[:1]
        )
        if found:
            revoked_at = found[0]
            if revoked_at is not None and revoked_at <= at:
                return RevocationStatus.REVOKED
            return RevocationStatus.GOOD
        # Not a certificate we issued. If the issuer is not one of our CAs at all, remember that
        # (a CA of ours can never later take a fingerprint we have already seen elsewhere).
        # If it is ours but we never issued this certificate, the fallback finds it unknown/bad.
        if not ours.filter(fingerprint_sha256=issuer_fp).exists():
            _foreign_issuers.put(issuer_fp, True)
        return self._fallback.status(certificate, issuer, at)


def discovery_resolver() -> CertificateResolver | None:
    """THE place where discovery of non-hosted recipients' certificates (DNS CERT, LDAP) plugs
    in: ``hisp.discovery`` (settings, shared Redis cache)."""
    # Discovery plug-in (issue 4). Imported here because hisp.discovery builds on this module.
    from hisp.discovery import remote_resolver

    return remote_resolver()


def build_environment(*, discovery: CertificateResolver | None = None) -> Environment:
    """The agent's ``Environment`` for this HISP, built from the database and settings."""
    shared_cache = DjangoByteCache()
    allow_private = settings.HISP_FETCH_ALLOW_PRIVATE_NETWORKS
    return Environment(
        keys=DatabaseKeyStore(),
        certificates=DatabaseCertificateResolver(
            discovery=discovery if discovery is not None else discovery_resolver()
        ),
        anchors=DatabaseTrustStore(),
        revocation=HostedFirstRevocationChecker(
            fallback=HttpRevocationChecker(
                cache=shared_cache, allow_private_networks=allow_private
            )
        ),
        issuers=HttpIssuerFetcher(cache=shared_cache, allow_private_networks=allow_private),
        validation_cache=_VALIDATION_CACHE,
    )


# Successful path validations, per process. Safe to share: entries are keyed on the exact
# certificates, anchors and policy, never outlive the path's validity, and revocation is asked
# again on every hit (agent/trust/validation_cache.py).
_VALIDATION_CACHE = ValidationCache()
