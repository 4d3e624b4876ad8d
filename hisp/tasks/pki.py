"""Scheduled PKI work: renew certificates, keep CRLs fresh, refresh trust bundles.

Each task is idempotent (a renewal marks its predecessor superseded with a conditional update, a
CRL is only regenerated when due, an unchanged bundle changes nothing, an outside CA's certificate
is checked once per interval under a per-certificate lock and marked revoked with a conditional
update), so a task that runs twice or on two workers at once does no harm.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.signals import worker_init

from hisp.ca import crl as crls
from hisp.keystore import KeystoreError, verify_configured_kek
from hisp.services import outside_revocation, pki, trust

log = logging.getLogger(__name__)


@worker_init.connect
def _check_kek_at_start(**_kwargs: Any) -> None:
    # A worker given the wrong key-encryption key must not start and fail message by message.
    # Celery logs and swallows exceptions from signal handlers, so stop the process explicitly.
    try:
        verify_configured_kek()
    except KeystoreError as exc:
        raise SystemExit(f"refusing to start: {exc}") from None


@shared_task(name="hisp.pki.renew_certificates")
def renew_certificates() -> int:
    renewed = pki.renew_due()
    for row in renewed:
        log.info("renewed certificate %s", row.pk)
    return len(renewed)


@shared_task(name="hisp.pki.regenerate_crls")
def regenerate_crls() -> int:
    return crls.refresh_due()


@shared_task(name="hisp.pki.refresh_bundles")
def refresh_bundles() -> int:
    """Refresh every bundle whose interval (default ``HISP_BUNDLE_REFRESH_INTERVAL``) is up."""
    outcomes = trust.refresh_all(due_only=True)
    return sum(1 for outcome in outcomes if not outcome.failed)


@shared_task(name="hisp.pki.check_outside_revocation")
def check_outside_revocation() -> dict[str, int]:
    """Ask outside CAs whether they revoked the hosted certificates they issued (those due:
    ``outside_revocation.CHECK_INTERVAL``); a revoked one stops being published and used."""
    counts = outside_revocation.check_due()
    if counts:
        log.info("outside revocation checks: %s", counts)
    return counts
