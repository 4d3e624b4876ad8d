"""Revocation of hosted certificates that another CA issued (imported with their key).

We publish such a certificate (DNS CERT, LDAP) and sign with it, but only its CA can revoke it.
Once it has, partners refuse our signatures and senders encrypt to a dead key, so:

- ``check`` asks the issuer through the agent's own checker (``HttpRevocationChecker``: OCSP, then
  the CRL; bounded, SSRF-guarded fetches, signatures and freshness verified there, not here);
- ``check_due`` (the Celery task ``hisp.pki.check_outside_revocation``) runs it for every current
  certificate not issued by our CAs whose last check is older than ``CHECK_INTERVAL``. A
  certificate found revoked gets ``revoked_at`` on its row, which is what publication
  (``hisp.dns.records.published_certificates``), signer selection (``hisp.agent_env``) and
  ``current_certificates`` filter on, plus a ``certificate.revoked_by_issuer`` audit event;
- a certificate hold (RFC 5280 certificateHold) is a suspension, not a revocation: the row gets
  ``revoked_at`` (reason ``certificate_hold``) like a revocation, so it is neither published nor
  used to sign, but it stays a candidate, and a later check that finds it no longer listed (the
  entry gone or removeFromCRL, or OCSP good) clears ``revoked_at`` again
  (``certificate.hold_released``). Only a hold is ever undone; a hold the CA turns into another
  reason becomes that (final) revocation;
- an issuer that cannot be asked (source unreachable, stale or unverifiable answer, issuer
  certificate not found) is NOT a revocation: the certificate stays, the failure is recorded
  (``certificate.revocation_check`` audit event) and after ``WARN_AFTER_FAILURES`` failed checks
  in a row staff see a warning on the certificate's page and the log says so at WARNING;
- ``hisp.services.pki.import_certificate`` asks once before importing: revoked is refused,
  unreachable is imported with the failure recorded (the certificate's page shows it).

The last check is read back from the audit log (the newest of the two events above), so the
schedule, the failure count and the page all come from one append-only record.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cryptography import x509
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import CharField, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from agent.trust import HttpIssuerFetcher, HttpRevocationChecker
from agent.trust.algorithms import issued_by
from agent.trust.revocation import crl_urls, ocsp_urls
from agent.types import RevocationStatus
from hisp.agent_env import DjangoByteCache, bump_pki_version
from hisp.certificates import fingerprint, lenient_serials, load, row_fields
from hisp.mailtext import printable
from hisp.models import AuditEvent, Certificate
from hisp.services import audit

log = logging.getLogger(__name__)

# Each certificate is asked about this often (the task runs hourly and picks the due ones).
CHECK_INTERVAL = timedelta(hours=6)
# Failed checks in a row before staff are warned: a day of an unreachable CRL/OCSP at 6 hours.
WARN_AFTER_FAILURES = 4
# How long one worker holds a certificate's check; longer than the checker's worst case (AIA
# plus OCSP plus CRL, each bounded by the agent's time-outs), shorter than CHECK_INTERVAL.
LOCK_SECONDS = 300

CHECKED = "certificate.revocation_check"
REVOKED_BY_ISSUER = "certificate.revoked_by_issuer"
HOLD_RELEASED = "certificate.hold_released"
# The one reason that is a suspension (RFC 5280 5.3.1): undone when the CA releases it.
HOLD = Certificate.RevocationReason.CERTIFICATE_HOLD
_OBJECT_TYPE = Certificate._meta.label_lower


class Result(StrEnum):
    GOOD = "good"
    REVOKED = "revoked"
    UNAVAILABLE = "unavailable"  # sources named, none gave a verified, current answer
    NO_ISSUER = "issuer-unknown"  # the issuing CA's certificate was not found to ask with
    NOT_CHECKABLE = "not-checkable"  # the certificate names no CRL or OCSP source at all


# Results that are a failure to ask, counted towards the staff warning. NOT_CHECKABLE is a
# property of the certificate, shown on its page every time, not a failure that may pass.
_FAILURES = frozenset({Result.UNAVAILABLE, Result.NO_ISSUER})


@dataclass(frozen=True)
class Finding:
    """What the issuer said about one certificate. ``source`` is "OCSP" or "issuer CRL";
    ``reason`` the RFC 5280 reason name as the issuer gave it."""

    result: Result
    source: str = ""
    url: str = ""
    reason: str = ""
    issuer_revoked_at: datetime | None = None
    problem: str = ""
    # The CA certificate asked about, remembered by ``record`` for the periodic checks: a
    # PKCS#12 or PEM chain is read once, at import, and nothing else stores an outside CA.
    issuer: x509.Certificate | None = field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        if self.result is Result.REVOKED:
            when = (f" on {self.issuer_revoked_at:%Y-%m-%d %H:%M} UTC"
                    if self.issuer_revoked_at else "")
            what = "put on hold" if self.reason == HOLD else "revoked"
            return f"{what} by its issuer{when} ({self.source} {self.url}, reason {self.reason})"
        if self.result is Result.GOOD:
            return f"not revoked ({self.source})"
        return self.problem


@dataclass(frozen=True)
class CheckState:
    """The last check of one certificate, as the console shows it."""

    checked_at: datetime
    result: Result
    problem: str
    failures: int  # failed checks in a row up to and including this one
    at_import: bool

    @property
    def warn(self) -> bool:
        return self.failures >= WARN_AFTER_FAILURES


# --- Asking the issuer ------------------------------------------------------------------------


class _FreshCache:
    """The checker's ``ByteCache``, empty for each check so that the issuer is really asked
    (the shared cache could hold a CRL from a day ago)."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.values.get(key)

    def set(self, key: str, value: bytes, ttl: float) -> None:
        self.values[key] = value


def issuer_of(
    certificate: x509.Certificate, *, chain: Sequence[x509.Certificate] = ()
) -> x509.Certificate | None:
    """The CA certificate that signed ``certificate``: from ``chain`` (the import file), the
    certificates stored here (anchors, bundles, imports), or its AIA caIssuers URL (fetched by
    the agent, as for path validation). By signature, never by name alone."""
    for candidate in chain:
        if issued_by(certificate, candidate):
            return candidate
    with lenient_serials():
        stored = [
            load(row) for row in Certificate.objects.filter(
                subject=certificate.issuer.rfc4514_string()[:1024]
            ).only("der")[:20]
        ]
    for candidate in stored:
        if issued_by(certificate, candidate):
            return candidate
    fetcher = HttpIssuerFetcher(
        cache=DjangoByteCache(),
        allow_private_networks=settings.HISP_FETCH_ALLOW_PRIVATE_NETWORKS,
    )
    for candidate in fetcher.issuers(certificate):
        if issued_by(certificate, candidate):
            return candidate
    return None


def check(
    certificate: x509.Certificate,
    *,
    chain: Sequence[x509.Certificate] = (),
    at: datetime | None = None,
) -> Finding:
    """Ask the issuer of ``certificate`` whether it is revoked now. Never raises for what the
    network or the issuer does: an unreadable answer is ``UNAVAILABLE`` with the reason."""
    now = at or timezone.now()
    ocsp_sources, crl_sources = ocsp_urls(certificate), crl_urls(certificate)
    if not ocsp_sources and not crl_sources:
        return Finding(Result.NOT_CHECKABLE, problem=(
            "the certificate names no CRL distribution point or OCSP responder: its "
            "revocation cannot be checked"))
    issuer = issuer_of(certificate, chain=chain)
    if issuer is None:
        return Finding(Result.NO_ISSUER, problem=_text(
            f"the issuing CA's certificate ({certificate.issuer.rfc4514_string()[:200]}) was not "
            "found (not in the file, not stored here, not at an AIA caIssuers URL): import or "
            "trust it so the revocation can be checked", 500))
    checker = HttpRevocationChecker(
        cache=_FreshCache(),
        allow_private_networks=settings.HISP_FETCH_ALLOW_PRIVATE_NETWORKS,
        failure_ttl=0,
    )
    report = checker.explain(certificate, issuer, now)
    if report.status is RevocationStatus.UNAVAILABLE:
        why = "; ".join(report.problems) or "no source answered"
        return Finding(Result.UNAVAILABLE, issuer=issuer, problem=_text(
            f"no revocation source gave a verified, current answer ({why})", 500))
    url = _text(report.url, 300)
    source = "issuer CRL" if report.source == "CRL" else report.source
    if report.status is not RevocationStatus.REVOKED:
        return Finding(Result.GOOD, source=source, url=url, issuer=issuer)
    return Finding(Result.REVOKED, source=source, url=url, reason=report.reason or "unspecified",
                   issuer_revoked_at=report.revoked_at, issuer=issuer)


def _text(words: str, limit: int) -> str:
    """Words a stranger chose (URLs, names from the certificate) as the audit log, the page and
    an error message may hold them: no control characters (PostgreSQL refuses a NUL in JSON
    text, a line end would forge a log line), bounded."""
    return " ".join(printable(words).split())[:limit]


# --- Hosted certificates ----------------------------------------------------------------------


def applies(row: Certificate) -> bool:
    """Whether ``row`` is a hosted certificate of another CA's (ours are revoked here)."""
    return (row.issued_by_id is None and row.private_key_id is not None
            and row.binding in (Certificate.Binding.ADDRESS, Certificate.Binding.DOMAIN))


def _events(pk: object) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(
        object_type=_OBJECT_TYPE, object_id=str(pk), action__in=[CHECKED, REVOKED_BY_ISSUER]
    ).order_by("-at", "-id")


def candidates(*, at: datetime | None = None) -> QuerySet[Certificate]:
    """Current hosted certificates not issued by our CAs, whose last check is older than
    ``CHECK_INTERVAL`` (or which were never checked). Held ones too: their CA is asked whether
    it released the hold."""
    now = at or timezone.now()
    last = AuditEvent.objects.filter(
        object_type=_OBJECT_TYPE,
        object_id=Cast(OuterRef("pk"), output_field=CharField()),
        action__in=[CHECKED, REVOKED_BY_ISSUER],
    ).order_by("-at", "-id").values("at")[:1]
    return (
        Certificate.objects.filter(
            binding__in=[Certificate.Binding.ADDRESS, Certificate.Binding.DOMAIN],
            issued_by__isnull=True,
            private_key__isnull=False,
            superseded_by__isnull=True,
            not_after__gt=now,
        )
        .filter(Q(revoked_at__isnull=True) | Q(revocation_reason=HOLD))
        .annotate(last_checked=Subquery(last))
        .filter(Q(last_checked__isnull=True) | Q(last_checked__lte=now - CHECK_INTERVAL))
        .order_by("pk")
    )


def check_state(row: Certificate) -> CheckState | None:
    event = _events(row.pk).first()
    if event is None:
        return None
    detail = event.detail
    return CheckState(
        checked_at=event.at,
        result=Result(detail.get("result", Result.REVOKED)),
        problem=str(detail.get("problem", "")),
        failures=int(detail.get("failures", 0)),
        at_import=bool(detail.get("at_import", False)),
    )


def record(row: Certificate, finding: Finding, *, at_import: bool = False,
           at: datetime | None = None) -> None:
    """Write down one check of ``row``: mark it revoked (or held) if its issuer revoked (or
    suspended) it, restore it if its CA released a hold, otherwise keep it as it is and note
    the result (and how many checks in a row failed)."""
    now = at or timezone.now()
    if finding.issuer is not None:
        remember_issuer(finding.issuer)
    if finding.result is Result.REVOKED:
        if not _mark_revoked(row, finding, now) and finding.reason == HOLD:
            # Still on hold: noted like any check, so the schedule moves on and the page says
            # when the CA was last asked.
            audit.record(action=CHECKED, obj=row, fingerprint=row.fingerprint_sha256,
                         result=Result.REVOKED.value, failures=0, at_import=at_import,
                         source=finding.source, url=finding.url, reason=finding.reason)
        return
    if finding.result is Result.GOOD:
        _release_hold(row, finding)
    previous = check_state(row)
    failures = 0
    if finding.result in _FAILURES:
        failures = 1 + (previous.failures if previous is not None else 0)
    detail: dict[str, Any] = {"result": finding.result.value, "failures": failures,
                              "at_import": at_import}
    if finding.source:
        detail.update(source=finding.source, url=finding.url)
    if finding.problem:
        detail.update(problem=finding.problem)
    audit.record(action=CHECKED, obj=row, fingerprint=row.fingerprint_sha256, **detail)
    if failures >= WARN_AFTER_FAILURES:
        log.warning("certificate %s: revocation check failed %d times in a row (%s); kept %s",
                    row.pk, failures, finding.result.value,
                    "on hold" if _held(row) else "in use")
    elif failures:
        log.info("certificate %s: revocation check failed (%s); kept %s", row.pk,
                 finding.result.value, "on hold" if _held(row) else "in use")


def remember_issuer(issuer: x509.Certificate) -> Certificate:
    """Store an outside CA's certificate (public, no key) so ``issuer_of`` finds it at the next
    check. As a CA row of source "imported": not ours (``_our_issuer`` and the OCSP responder
    take only hosted CAs), not trusted (trust is an anchoring, hisp.models.trust)."""
    row, _ = Certificate.objects.get_or_create(
        fingerprint_sha256=fingerprint(issuer),
        defaults={**row_fields(issuer), "binding": Certificate.Binding.CA,
                  "bound_name": issuer.subject.rfc4514_string()[:320],
                  "source": Certificate.Source.IMPORTED},
    )
    return row


def _held(row: Certificate) -> bool:
    return Certificate.objects.filter(pk=row.pk, revoked_at__isnull=False,
                                      revocation_reason=HOLD).exists()


def _mark_revoked(row: Certificate, finding: Finding, now: datetime) -> bool:
    """Mark ``row`` revoked (or held); False if it already was (nothing written)."""
    reason = (finding.reason if finding.reason in Certificate.RevocationReason.values
              else Certificate.RevocationReason.UNSPECIFIED)
    # A hold may become a final revocation (RFC 5280 5.3.1), never the other way round.
    replaceable = Q(revoked_at__isnull=True)
    if reason != HOLD:
        replaceable |= Q(revocation_reason=HOLD)
    with transaction.atomic():
        # Conditional: a second worker, or staff acting meanwhile, must not record it twice.
        # A held row keeps the date it stopped being used.
        changed = Certificate.objects.filter(replaceable, pk=row.pk).update(
            revoked_at=Coalesce("revoked_at", Value(now.replace(microsecond=0))),
            revocation_reason=reason,
        )
        if not changed:
            return False
        bump_pki_version()  # workers stop signing with it within the bound in docs/pki.md
        audit.record(
            action=REVOKED_BY_ISSUER, obj=row, fingerprint=row.fingerprint_sha256,
            result=Result.REVOKED.value, source=finding.source, url=finding.url,
            reason=finding.reason,
            issuer_revoked_at=(finding.issuer_revoked_at.isoformat()
                               if finding.issuer_revoked_at else None),
        )
    log.warning("certificate %s %s by its issuer (%s, reason %s): no longer published or "
                "used to sign", row.pk, "put on hold" if reason == HOLD else "revoked",
                finding.source, finding.reason)
    return True


def _release_hold(row: Certificate, finding: Finding) -> None:
    """Restore ``row`` if it is on hold: its CA answered that it is not (or no longer) listed.
    Only a hold: every other reason is final, whatever a later answer says."""
    with transaction.atomic():
        # Conditional, as _mark_revoked: a final revocation recorded meanwhile stays.
        changed = Certificate.objects.filter(
            pk=row.pk, revoked_at__isnull=False, revocation_reason=HOLD
        ).update(revoked_at=None, revocation_reason="")
        if not changed:
            return
        bump_pki_version()  # workers take it back into use within the bound in docs/pki.md
        audit.record(action=HOLD_RELEASED, obj=row, fingerprint=row.fingerprint_sha256,
                     result=finding.result.value, source=finding.source, url=finding.url)
    log.warning("certificate %s: its issuer released the hold (%s); published and used to sign "
                "again", row.pk, finding.source)


def check_one(row: Certificate, *, at: datetime | None = None) -> Finding | None:
    """Check one hosted certificate unless another worker is checking it or has just done so
    (then None). The lock is the shared cache's atomic add (Redis in production)."""
    lock, token = f"hisp:outside-revocation:{row.pk}", uuid.uuid4().hex
    if not cache.add(lock, token, timeout=LOCK_SECONDS):
        return None
    try:
        now = at or timezone.now()
        # Re-read under the lock: the list was made before another worker may have finished.
        if not candidates(at=now).filter(pk=row.pk).exists():
            return None
        finding = check(load(row), at=now)
        record(row, finding, at=now)
        return finding
    finally:
        if cache.get(lock) == token:
            cache.delete(lock)


def needing_attention(*, at: datetime | None = None, limit: int = 10) -> list[Certificate]:
    """Hosted certificates of outside CAs that staff should look at, for the dashboard: those
    whose issuer revoked them within the last 30 days (a replacement is needed) and current
    ones whose revocation could not be confirmed ``WARN_AFTER_FAILURES`` times in a row."""
    now = at or timezone.now()
    outside = Certificate.objects.filter(
        binding__in=[Certificate.Binding.ADDRESS, Certificate.Binding.DOMAIN],
        issued_by__isnull=True, private_key__isnull=False, superseded_by__isnull=True,
    )
    revoked_ids = AuditEvent.objects.filter(
        object_type=_OBJECT_TYPE, action=REVOKED_BY_ISSUER, at__gte=now - timedelta(days=30),
    ).values_list("object_id", flat=True)
    found = list(outside.filter(pk__in=[int(pk) for pk in revoked_ids if pk.isdigit()],
                                revoked_at__isnull=False).order_by("-revoked_at")[:limit])
    if len(found) >= limit:
        return found
    # The failure count of each certificate's last check, in the one query (the dashboard must
    # not ask once per certificate a HISP imported).
    failures = AuditEvent.objects.filter(
        object_type=_OBJECT_TYPE,
        object_id=Cast(OuterRef("pk"), output_field=CharField()),
        action__in=[CHECKED, REVOKED_BY_ISSUER],
    ).order_by("-at", "-id").annotate(
        failures=Cast(KeyTextTransform("failures", "detail"), output_field=IntegerField())
    ).values("failures")[:1]
    warned = (
        outside.filter(revoked_at__isnull=True, not_after__gt=now)
        .annotate(last_failures=Subquery(failures))
        .filter(last_failures__gte=WARN_AFTER_FAILURES)
        .order_by("pk")
    )
    return found + list(warned[: limit - len(found)])


def check_due(*, at: datetime | None = None) -> dict[str, int]:
    """Check every due certificate; counts by result (skipped: another worker had it)."""
    counts: dict[str, int] = {}
    for row in candidates(at=at).iterator():
        finding = check_one(row, at=at)
        key = finding.result.value if finding is not None else "skipped"
        counts[key] = counts.get(key, 0) + 1
    return counts


__all__ = [
    "CHECK_INTERVAL",
    "HOLD",
    "HOLD_RELEASED",
    "WARN_AFTER_FAILURES",
    "CheckState",
    "Finding",
    "Result",
    "applies",
    "candidates",
    "check",
    "check_due",
    "check_one",
    "check_state",
    "issuer_of",
    "needing_attention",
    "record",
    "remember_issuer",
]
