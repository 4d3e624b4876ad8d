"""Certificate hold (RFC 5280 reason certificateHold) on a hosted certificate of an outside CA: a
suspension, not a revocation. While held it is neither published nor used to sign; once its CA
releases the hold (entry gone, removeFromCRL, or OCSP good) it is restored, and only a hold is
ever undone. Real CRLs and OCSP over loopback HTTP, as in test_outside_revocation."""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from hisp.agent_env import PKI_VERSION_KEY, DatabaseKeyStore
from hisp.certificates import fingerprint
from hisp.dns.records import published_certificates
from hisp.models import Address, AuditEvent, Certificate
from hisp.services import outside_revocation as outside
from hisp.services import pki
from tests.agent.trust.pki import Authority, Server, closed_port_url
from tests.hisp.pki import test_outside_revocation as base
from tests.hisp.pki.test_outside_revocation import (
    BOB,
    LATER,
    bobs_certificate,
    crl_listing,
    fingerprints,
    import_pem,
    legacy_row,
    serve_ocsp,
    staff_client,
)

# The loopback server, the outside CA and Bob's key, as the base tests have them.
server, ca_key, leaf_key, outside_ca = base.server, base.ca_key, base.leaf_key, base.outside_ca
_loopback = base._loopback

HOLD = x509.ReasonFlags.certificate_hold
DOMAINS = ["hospital.example.org"]


def in_use(cert: x509.Certificate) -> set[bool]:
    """Where the certificate is used: published, chosen to sign, current for Bob."""
    fp = fingerprint(cert)
    return {
        fp in fingerprints(published_certificates(DOMAINS)),
        fp in {fingerprint(i.certificate) for i in DatabaseKeyStore().signing_identities(BOB)},
        fp in fingerprints(pki.current_certificates(BOB)),
    }


def held_row(
    server: Server, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, path: str
) -> tuple[x509.Certificate, Certificate, datetime]:
    """Bob's certificate, put on hold by its CA's CRL at the first check."""
    cert = bobs_certificate(outside_ca, leaf_key, crl_url=server.url(path))
    server.serve(path, crl_listing(outside_ca, [cert], reason=HOLD))
    row = legacy_row(cert, leaf_key, outside_ca)
    start = timezone.now()
    assert outside.check_due(at=start + LATER) == {"revoked": 1}
    row.refresh_from_db()
    assert row.revoked_at is not None
    assert row.revocation_reason == Certificate.RevocationReason.CERTIFICATE_HOLD
    assert in_use(cert) == {False}
    return cert, row, start


def test_a_released_hold_restores_the_certificate_and_is_audited(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server
) -> None:
    cert, row, start = held_row(server, outside_ca, leaf_key, "/hold/crl")
    # Still held at the next due check: asked again (not dropped from the schedule), kept held.
    assert outside.check_due(at=start + 2 * LATER) == {"revoked": 1}
    row.refresh_from_db()
    assert row.revocation_reason == Certificate.RevocationReason.CERTIFICATE_HOLD
    assert in_use(cert) == {False}

    server.serve("/hold/crl", crl_listing(outside_ca, []))  # the CA released the hold
    version = cache.get(PKI_VERSION_KEY)
    assert outside.check_due(at=start + 3 * LATER) == {"good": 1}
    row.refresh_from_db()
    assert (row.revoked_at, row.revocation_reason) == (None, "")
    assert cache.get(PKI_VERSION_KEY) != version  # workers take it back into use
    released = AuditEvent.objects.get(action=outside.HOLD_RELEASED, object_id=str(row.pk))
    assert released.detail["source"] == "issuer CRL"
    assert released.detail["url"] == server.url("/hold/crl")
    assert in_use(cert) == {True}
    state = outside.check_state(row)
    assert state is not None and state.result is outside.Result.GOOD


def test_remove_from_crl_releases_a_hold(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server
) -> None:
    cert, row, start = held_row(server, outside_ca, leaf_key, "/hold/remove.crl")
    server.serve("/hold/remove.crl", crl_listing(
        outside_ca, [cert], reason=x509.ReasonFlags.remove_from_crl))
    assert outside.check_due(at=start + 2 * LATER) == {"good": 1}
    row.refresh_from_db()
    assert row.revoked_at is None
    assert in_use(cert) == {True}


def test_an_ocsp_good_answer_releases_a_hold(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server
) -> None:
    responder = serve_ocsp(server, "/hold/ocsp", outside_ca)
    cert = bobs_certificate(outside_ca, leaf_key, ocsp_url=server.url("/hold/ocsp"))
    row = import_pem(cert, outside_ca, leaf_key)
    responder.revoked.add(cert.serial_number)
    responder.reasons[cert.serial_number] = HOLD
    start = timezone.now()
    assert outside.check_due(at=start + LATER) == {"revoked": 1}
    row.refresh_from_db()
    assert row.revocation_reason == Certificate.RevocationReason.CERTIFICATE_HOLD
    responder.revoked.discard(cert.serial_number)
    assert outside.check_due(at=start + 2 * LATER) == {"good": 1}
    row.refresh_from_db()
    assert row.revoked_at is None
    assert AuditEvent.objects.filter(action=outside.HOLD_RELEASED,
                                     object_id=str(row.pk)).count() == 1


def test_a_hold_turned_into_a_revocation_is_final(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server
) -> None:
    cert, row, start = held_row(server, outside_ca, leaf_key, "/hold/final.crl")
    server.serve("/hold/final.crl", crl_listing(outside_ca, [cert]))  # now key_compromise
    assert outside.check_due(at=start + 2 * LATER) == {"revoked": 1}
    row.refresh_from_db()
    assert row.revocation_reason == Certificate.RevocationReason.KEY_COMPROMISE
    reasons = list(AuditEvent.objects.filter(
        action=outside.REVOKED_BY_ISSUER, object_id=str(row.pk)
    ).order_by("id").values_list("detail__reason", flat=True))
    assert reasons == ["certificate_hold", "key_compromise"]
    # A CRL that no longer lists it does not bring it back: no longer a candidate at all.
    server.serve("/hold/final.crl", crl_listing(outside_ca, []))
    assert outside.check_due(at=start + 3 * LATER) == {}
    row.refresh_from_db()
    assert row.revoked_at is not None and in_use(cert) == {False}


def test_only_a_hold_is_undone_even_when_a_good_answer_is_recorded(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server
) -> None:
    # A final revocation, then (say, a CA's mistake or a stale mirror) a good answer: the
    # row stays revoked whatever reaches record().
    cert = bobs_certificate(outside_ca, leaf_key, crl_url=server.url("/hold/kc.crl"))
    server.serve("/hold/kc.crl", crl_listing(outside_ca, [cert]))
    row = legacy_row(cert, leaf_key, outside_ca)
    assert outside.check_due(at=timezone.now() + LATER) == {"revoked": 1}
    server.serve("/hold/kc.crl", crl_listing(outside_ca, []))
    finding = outside.check(cert)
    assert finding.result is outside.Result.GOOD
    outside.record(row, finding)
    row.refresh_from_db()
    assert row.revoked_at is not None
    assert row.revocation_reason == Certificate.RevocationReason.KEY_COMPROMISE
    assert not AuditEvent.objects.filter(action=outside.HOLD_RELEASED).exists()


def test_an_unreachable_issuer_keeps_the_hold(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server
) -> None:
    cert, row, start = held_row(server, outside_ca, leaf_key, "/hold/flaky.crl")
    server.serve("/hold/flaky.crl", b"", status=503)
    assert outside.check_due(at=start + 2 * LATER) == {"unavailable": 1}
    row.refresh_from_db()
    assert row.revocation_reason == Certificate.RevocationReason.CERTIFICATE_HOLD
    assert in_use(cert) == {False}
    state = outside.check_state(row)
    assert state is not None and state.failures == 1


def test_the_certificate_page_says_on_hold_not_revoked_for_good(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server
) -> None:
    _cert, row, start = held_row(server, outside_ca, leaf_key, "/hold/page.crl")
    client = staff_client()
    url = reverse("adminconsole:certificate-detail", args=[row.pk])
    text = client.get(url).content.decode()  # type: ignore[attr-defined]
    assert "on hold" in text and "restored automatically" in text
    assert "Import a new certificate" not in text
    # Still held at the next check (a CHECKED event, not the first REVOKED_BY_ISSUER one).
    outside.check_due(at=start + 2 * LATER)
    text = client.get(url).content.decode()  # type: ignore[attr-defined]
    assert "on hold" in text and "Import a new certificate" not in text


def test_a_final_revocation_still_reads_as_final_on_the_page(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey
) -> None:
    # Guard for the page change above: not every revoked certificate reads "on hold".
    cert = bobs_certificate(outside_ca, leaf_key, crl_url=closed_port_url("/hold/x.crl"))
    row = legacy_row(cert, leaf_key, outside_ca)
    outside.record(row, outside.Finding(outside.Result.REVOKED, source="OCSP", url="http://x",
                                        reason="key_compromise",
                                        issuer_revoked_at=timezone.now() - timedelta(hours=1)))
    text = staff_client().get(  # type: ignore[attr-defined]
        reverse("adminconsole:certificate-detail", args=[row.pk])).content.decode()
    assert "Import a new certificate" in text and "on hold" not in text
