"""Hosted certificates issued by an outside CA: their CA is asked whether it revoked them, at
import and then periodically, over real loopback HTTP (CRL and OCSP) with the agent's checker."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from adminconsole.roles import Role, role_groups
from hisp.agent_env import DatabaseKeyStore
from hisp.certificates import fingerprint, row_fields
from hisp.dns.records import published_certificates
from hisp.keystore import wrap_private_key
from hisp.models import Address, AuditEvent, Certificate
from hisp.services import outside_revocation as outside
from hisp.services import pki
from hisp.tasks.pki import check_outside_revocation
from tests.adminconsole.sessions import verified_client
from tests.agent.trust.pki import (
    EMAIL,
    NOW,
    Authority,
    Responder,
    Server,
    authority,
    closed_port_url,
    issue,
)

BOB = "bob@hospital.example.org"
LATER = timedelta(hours=7)  # past CHECK_INTERVAL


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    httpd = Server()
    yield httpd
    httpd.close()


@pytest.fixture(scope="module")
def ca_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def leaf_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def outside_ca(ca_key: rsa.RSAPrivateKey) -> Authority:
    return authority("Outside Health CA", key=ca_key)


@pytest.fixture(autouse=True)
def _loopback(settings: pytest.FixtureRequest) -> Iterator[None]:
    # The loopback server stands in for the outside CA's web server.
    settings.HISP_FETCH_ALLOW_PRIVATE_NETWORKS = True  # type: ignore[attr-defined]
    cache.clear()
    yield
    cache.clear()


def crl_listing(
    ca: Authority, revoked: list[x509.Certificate],
    reason: x509.ReasonFlags | None = x509.ReasonFlags.key_compromise,
) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(NOW - timedelta(hours=1))
        .next_update(NOW + timedelta(days=2))
    )
    for cert in revoked:
        entry = (x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
                 .revocation_date(NOW - timedelta(minutes=30)))
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def bobs_certificate(ca: Authority, key: rsa.RSAPrivateKey, **kw: object) -> x509.Certificate:
    return issue("Bob Brown", key=key, issuer=ca, emails=[BOB], eku=[EMAIL], **kw)  # type: ignore[arg-type]


def pem_file(cert: x509.Certificate, ca: Authority) -> bytes:
    return (cert.public_bytes(serialization.Encoding.PEM)
            + ca.certificate.public_bytes(serialization.Encoding.PEM))


def bobs_pkcs12(cert: x509.Certificate, key: rsa.RSAPrivateKey, ca: Authority) -> bytes:
    """As an organisation exports it: the key, the certificate and its CA, under a password."""
    return pkcs12.serialize_key_and_certificates(
        b"bob", key, cert, [ca.certificate],
        serialization.BestAvailableEncryption(b"a long passphrase"),
    )


def serve_ocsp(server: Server, path: str, ca: Authority) -> Responder:
    """An OCSP responder for ``ca`` at ``path`` on the loopback server; tests set its answers."""
    responder = Responder(ca)
    server.routes[path] = lambda body: (200, responder.answer(body))
    return responder


def refuse_pkcs12_import(p12: bytes, cert: x509.Certificate, match: str) -> None:
    """The PKCS#12 import is refused with ``match`` and stores nothing."""
    with pytest.raises(pki.PkiError, match=match):
        pki.import_certificate(p12, password="a long passphrase")
    assert not Certificate.objects.filter(fingerprint_sha256=fingerprint(cert)).exists()


def key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def import_pem(cert: x509.Certificate, ca: Authority, key: rsa.RSAPrivateKey) -> Certificate:
    return pki.import_certificate(pem_file(cert, ca), key_data=key_pem(key))


def legacy_row(
    cert: x509.Certificate, key: rsa.RSAPrivateKey, ca: Authority | None = None
) -> Certificate:
    """A row as import_certificate wrote it before this check existed: never asked about.
    With ``ca``, its CA is stored as an import now stores it."""
    if ca is not None:
        outside.remember_issuer(ca.certificate)
    address = Address.objects.get(address=BOB)
    return Certificate.objects.create(
        **row_fields(cert), binding=Certificate.Binding.ADDRESS, bound_name=BOB,
        source=Certificate.Source.IMPORTED, address=address, domain=address.domain,
        private_key=wrap_private_key(key),
    )


def fingerprints(rows: object) -> set[str]:
    return {row.fingerprint_sha256 for row in rows}  # type: ignore[attr-defined]


# --- At import --------------------------------------------------------------------------------


def test_import_refuses_a_certificate_its_issuer_already_revoked(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server
) -> None:
    url = server.url("/imp/revoked.crl")
    cert = bobs_certificate(outside_ca, leaf_key, crl_url=url)
    server.serve("/imp/revoked.crl", crl_listing(outside_ca, [cert]))
    with pytest.raises(pki.PkiError) as raised:
        import_pem(cert, outside_ca, leaf_key)
    message = str(raised.value)
    assert "revoked by its issuer" in message
    assert "issuer CRL" in message and url in message and "key_compromise" in message
    assert "PRIVATE KEY" not in message
    assert not Certificate.objects.filter(fingerprint_sha256=fingerprint(cert)).exists()


def test_import_of_a_pkcs12_finds_the_issuer_by_aia_and_refuses_when_ocsp_says_revoked(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server
) -> None:
    # PKCS#12 as an organisation exports it; the outside CA is neither stored here nor (after
    # opening) kept from the file, so it is fetched from the caIssuers URL as path validation does.
    responder = serve_ocsp(server, "/imp/ocsp", outside_ca)
    ca_url = server.serve("/imp/ca.der",
                          outside_ca.certificate.public_bytes(serialization.Encoding.DER))
    cert = bobs_certificate(outside_ca, leaf_key, ocsp_url=server.url("/imp/ocsp"),
                            ca_issuers_url=ca_url)
    responder.revoked.add(cert.serial_number)
    p12 = bobs_pkcs12(cert, leaf_key, outside_ca)
    refuse_pkcs12_import(p12, cert, "revoked by its issuer .*OCSP")


def test_import_when_the_crl_is_unreachable_imports_and_records_the_failure(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey
) -> None:
    dead = closed_port_url("/imp/dead.crl")
    cert = bobs_certificate(outside_ca, leaf_key, crl_url=dead)
    row = import_pem(cert, outside_ca, leaf_key)
    row.refresh_from_db()
    assert row.revoked_at is None
    state = outside.check_state(row)
    assert state is not None
    assert (state.result, state.failures, state.at_import, state.warn) == (
        outside.Result.UNAVAILABLE, 1, True, False)
    assert dead in state.problem
    assert fingerprint(cert) in fingerprints(pki.current_certificates(BOB))


def test_import_when_the_issuer_answers_good_records_a_good_check(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server
) -> None:
    url = server.url("/imp/good.crl")
    cert = bobs_certificate(outside_ca, leaf_key, crl_url=url)
    server.serve("/imp/good.crl", crl_listing(outside_ca, []))
    row = import_pem(cert, outside_ca, leaf_key)
    event = AuditEvent.objects.get(action=outside.CHECKED, object_id=str(row.pk))
    assert event.detail["result"] == "good"
    assert event.detail["source"] == "issuer CRL" and event.detail["url"] == url


# --- Periodic check ---------------------------------------------------------------------------


def test_periodic_check_marks_a_revoked_certificate_and_stops_publishing_and_signing_it(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = server.url("/per/revoked.crl")
    # Imported before the check existed: its CA was not kept, its caIssuers URL finds it.
    ca_url = server.serve("/per/ca.pem",
                          outside_ca.certificate.public_bytes(serialization.Encoding.PEM))
    cert = bobs_certificate(outside_ca, leaf_key, crl_url=url, ca_issuers_url=ca_url)
    server.serve("/per/revoked.crl", crl_listing(outside_ca, []))
    row = legacy_row(cert, leaf_key)
    domains = ["hospital.example.org"]
    assert fingerprint(cert) in fingerprints(published_certificates(domains))
    assert fingerprint(cert) in {
        fingerprint(i.certificate) for i in DatabaseKeyStore().signing_identities(BOB)}

    assert check_outside_revocation() == {"good": 1}
    row.refresh_from_db()
    assert row.revoked_at is None

    # The outside CA revokes it; the next due run finds it.
    server.serve("/per/revoked.crl", crl_listing(outside_ca, [cert]))
    with caplog.at_level(logging.INFO, logger="hisp.services.outside_revocation"):
        assert outside.check_due(at=timezone.now() + LATER) == {"revoked": 1}
    row.refresh_from_db()
    assert row.revoked_at is not None
    assert row.revocation_reason == Certificate.RevocationReason.KEY_COMPROMISE
    event = AuditEvent.objects.get(action=outside.REVOKED_BY_ISSUER, object_id=str(row.pk))
    assert event.detail["source"] == "issuer CRL" and event.detail["url"] == url
    assert event.detail["reason"] == "key_compromise"
    assert event.detail["issuer_revoked_at"].startswith(
        (NOW - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M"))
    assert fingerprint(cert) not in fingerprints(published_certificates(domains))
    assert fingerprint(cert) not in fingerprints(pki.current_certificates(BOB))
    assert fingerprint(cert) not in {
        fingerprint(i.certificate) for i in DatabaseKeyStore().signing_identities(BOB)}
    logged = [r for r in caplog.records if "revoked by its issuer" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING
    assert BOB not in logged[0].getMessage() and str(row.pk) in logged[0].getMessage()
    # Nothing is left to check: a revoked row is no longer a candidate.
    assert outside.check_due(at=timezone.now() + 2 * LATER) == {}


def test_periodic_check_reads_ocsp_and_names_it(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server
) -> None:
    responder = serve_ocsp(server, "/per/ocsp", outside_ca)
    cert = bobs_certificate(outside_ca, leaf_key, ocsp_url=server.url("/per/ocsp"))
    row = import_pem(cert, outside_ca, leaf_key)
    responder.revoked.add(cert.serial_number)
    responder.reasons[cert.serial_number] = x509.ReasonFlags.cessation_of_operation
    assert outside.check_due(at=timezone.now() + LATER) == {"revoked": 1}
    event = AuditEvent.objects.get(action=outside.REVOKED_BY_ISSUER, object_id=str(row.pk))
    assert event.detail["source"] == "OCSP" and event.detail["url"] == server.url("/per/ocsp")
    assert event.detail["reason"] == "cessation_of_operation"
    row.refresh_from_db()
    assert row.revocation_reason == Certificate.RevocationReason.CESSATION_OF_OPERATION


def test_unreachable_crl_is_not_revocation_and_warns_after_repeated_failures(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cert = bobs_certificate(outside_ca, leaf_key, crl_url=closed_port_url("/per/dead.crl"))
    row = legacy_row(cert, leaf_key, outside_ca)
    start = timezone.now()
    with caplog.at_level(logging.INFO, logger="hisp.services.outside_revocation"):
        for run in range(1, outside.WARN_AFTER_FAILURES + 1):
            assert outside.check_due(at=start + run * LATER) == {"unavailable": 1}
            state = outside.check_state(row)
            assert state is not None and state.failures == run
            assert state.warn is (run >= outside.WARN_AFTER_FAILURES)
    row.refresh_from_db()
    assert row.revoked_at is None
    assert fingerprint(cert) in fingerprints(published_certificates(["hospital.example.org"]))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "failed 4 times in a row" in warnings[0].getMessage()


def test_a_good_answer_resets_the_failure_count(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server
) -> None:
    url = server.url("/per/flaky.crl")
    cert = bobs_certificate(outside_ca, leaf_key, crl_url=url)
    row = legacy_row(cert, leaf_key, outside_ca)
    start = timezone.now()
    server.serve("/per/flaky.crl", b"", status=503)
    outside.check_due(at=start + LATER)
    outside.check_due(at=start + 2 * LATER)
    assert outside.check_state(row).failures == 2  # type: ignore[union-attr]
    server.serve("/per/flaky.crl", crl_listing(outside_ca, []))
    assert outside.check_due(at=start + 3 * LATER) == {"good": 1}
    assert outside.check_state(row).failures == 0  # type: ignore[union-attr]


def test_the_agents_ssrf_guard_applies_a_private_address_is_not_fetched(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server,
    settings: pytest.FixtureRequest,
) -> None:
    url = server.url("/per/internal.crl")
    cert = bobs_certificate(outside_ca, leaf_key, crl_url=url)
    server.serve("/per/internal.crl", crl_listing(outside_ca, [cert]))
    row = legacy_row(cert, leaf_key, outside_ca)
    settings.HISP_FETCH_ALLOW_PRIVATE_NETWORKS = False  # type: ignore[attr-defined]
    hits = server.hits.get("/per/internal.crl", 0)
    assert outside.check_due() == {"unavailable": 1}
    assert server.hits.get("/per/internal.crl", 0) == hits
    row.refresh_from_db()
    assert row.revoked_at is None


def test_check_is_idempotent_and_skips_a_certificate_another_worker_holds(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server
) -> None:
    url = server.url("/per/once.crl")
    cert = bobs_certificate(outside_ca, leaf_key, crl_url=url)
    server.serve("/per/once.crl", crl_listing(outside_ca, []))
    row = legacy_row(cert, leaf_key, outside_ca)
    # Another worker is checking it right now: this one leaves it alone.
    cache.add(f"hisp:outside-revocation:{row.pk}", "other-worker", timeout=60)
    assert outside.check_due() == {"skipped": 1}
    assert not AuditEvent.objects.filter(action=outside.CHECKED).exists()
    cache.delete(f"hisp:outside-revocation:{row.pk}")
    # Run twice (a redelivered task, a second beat): the issuer is asked once.
    hits = server.hits.get("/per/once.crl", 0)
    assert check_outside_revocation() == {"good": 1}
    assert check_outside_revocation() == {}
    assert outside.check_one(row) is None
    assert server.hits["/per/once.crl"] == hits + 1
    assert AuditEvent.objects.filter(action=outside.CHECKED).count() == 1


def test_revocation_is_recorded_once_when_two_workers_both_found_it(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server
) -> None:
    url = server.url("/per/twice.crl")
    cert = bobs_certificate(outside_ca, leaf_key, crl_url=url)
    server.serve("/per/twice.crl", crl_listing(outside_ca, [cert]))
    row = legacy_row(cert, leaf_key, outside_ca)
    finding = outside.check(cert)
    assert finding.result is outside.Result.REVOKED
    outside.record(row, finding)
    outside.record(row, finding)
    assert AuditEvent.objects.filter(action=outside.REVOKED_BY_ISSUER).count() == 1


def test_our_own_certificates_are_not_asked_about(bob: Address, alice: Address) -> None:
    ours = Certificate.objects.filter(issued_by__isnull=False,
                                      binding__in=["address", "domain"])
    assert ours.exists()
    assert not outside.candidates().exists()
    assert check_outside_revocation() == {}


def test_a_certificate_naming_no_source_is_reported_not_counted_as_failure(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey
) -> None:
    cert = bobs_certificate(outside_ca, leaf_key)
    row = import_pem(cert, outside_ca, leaf_key)
    state = outside.check_state(row)
    assert state is not None and state.result is outside.Result.NOT_CHECKABLE
    assert state.failures == 0 and "names no CRL" in state.problem


def test_an_issuer_that_cannot_be_found_is_a_failure_not_revocation(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server
) -> None:
    url = server.url("/per/orphan.crl")
    cert = bobs_certificate(outside_ca, leaf_key, crl_url=url)
    server.serve("/per/orphan.crl", crl_listing(outside_ca, [cert]))
    row = legacy_row(cert, leaf_key)  # the CA is not stored and names no caIssuers URL
    assert outside.check_due() == {"issuer-unknown": 1}
    row.refresh_from_db()
    assert row.revoked_at is None
    assert "Outside Health CA" in outside.check_state(row).problem  # type: ignore[union-attr]


# --- What staff see ---------------------------------------------------------------------------


def test_certificate_page_shows_the_warning_after_repeated_failures(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey
) -> None:
    client = staff_client()
    dead = closed_port_url("/page/dead.crl")
    row = import_pem(bobs_certificate(outside_ca, leaf_key, crl_url=dead), outside_ca, leaf_key)
    page = client.get(reverse("adminconsole:certificate-detail", args=[row.pk]))  # type: ignore[attr-defined]
    assert page.status_code == 200
    assert b"could not be asked at import" in page.content
    start = timezone.now()
    for run in range(1, outside.WARN_AFTER_FAILURES):
        outside.check_due(at=start + run * LATER)
    page = client.get(reverse("adminconsole:certificate-detail", args=[row.pk]))  # type: ignore[attr-defined]
    text = page.content.decode()
    assert "Warning: the issuer could not be asked 4 times in a row" in text
    assert dead in text
    assert "PRIVATE KEY" not in text


def staff_client() -> object:
    staff = get_user_model().objects.create_user(username="sam", password="x" * 20,
                                                 is_staff=True)
    staff.groups.set(role_groups(tuple(Role)))
    return verified_client(staff)


def test_console_import_of_a_revoked_certificate_is_refused_with_the_reason(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server
) -> None:
    url = server.url("/ui/revoked.crl")
    cert = bobs_certificate(outside_ca, leaf_key, crl_url=url)
    server.serve("/ui/revoked.crl", crl_listing(outside_ca, [cert]))
    client = staff_client()
    page = client.post(reverse("adminconsole:certificate-import"), {  # type: ignore[attr-defined]
        "certificate": SimpleUploadedFile("bob.pem", pem_file(cert, outside_ca)),
        "key": SimpleUploadedFile("bob.key", key_pem(leaf_key)),
    })
    assert page.status_code == 400
    text = page.content.decode()
    assert "revoked by its issuer" in text and "key_compromise" in text
    assert "PRIVATE KEY" not in text
    assert not Certificate.objects.filter(fingerprint_sha256=fingerprint(cert)).exists()


def test_cli_import_of_a_revoked_certificate_is_a_one_line_error(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server,
    tmp_path: Path,
) -> None:
    url = server.url("/cli/revoked.crl")
    cert = bobs_certificate(outside_ca, leaf_key, crl_url=url)
    server.serve("/cli/revoked.crl", crl_listing(outside_ca, [cert]))
    (tmp_path / "bob.pem").write_bytes(pem_file(cert, outside_ca))
    (tmp_path / "bob.key").write_bytes(key_pem(leaf_key))
    with pytest.raises(CommandError, match="cannot be imported: revoked by its issuer"):
        call_command("cert", "import", str(tmp_path / "bob.pem"),
                     "--key", str(tmp_path / "bob.key"))


def test_a_hostile_source_url_is_recorded_without_control_characters(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server
) -> None:
    # The URL is the certificate holder's choice; PostgreSQL refuses a NUL in the audit JSON and
    # a line end would forge a log or page line.
    url = server.url("/per/a\x00b\r\nX-Forged: 1.crl")
    cert = bobs_certificate(outside_ca, leaf_key, crl_url=url)
    row = import_pem(cert, outside_ca, leaf_key)
    state = outside.check_state(row)
    assert state is not None and state.result is outside.Result.UNAVAILABLE
    assert "\x00" not in state.problem and "\n" not in state.problem
    assert "X-Forged" in state.problem


def test_cli_import_with_an_unreachable_issuer_warns_the_operator(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cert = bobs_certificate(outside_ca, leaf_key, crl_url=closed_port_url("/down.crl"))
    (tmp_path / "bob.pem").write_bytes(pem_file(cert, outside_ca))
    (tmp_path / "bob.key").write_bytes(key_pem(leaf_key))
    call_command("cert", "import", str(tmp_path / "bob.pem"), "--key", str(tmp_path / "bob.key"))
    out, err = capsys.readouterr()
    assert "imported address-bound certificate" in out
    assert err.startswith("warning: revocation not confirmed: no revocation source")
    assert "PRIVATE" not in err


def test_the_dashboard_lists_what_staff_must_act_on(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server
) -> None:
    # One certificate its issuer revoked, one whose CRL has been unreachable for a day, and
    # one whose check failed only once (not yet worth a warning).
    revoked = bobs_certificate(outside_ca, leaf_key, crl_url=server.url("/dash/list.crl"))
    server.serve("/dash/list.crl", crl_listing(outside_ca, [revoked]))
    revoked_row = legacy_row(revoked, leaf_key, outside_ca)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    dead = bobs_certificate(outside_ca, other_key, crl_url=closed_port_url("/dash/dead.crl"))
    dead_row = legacy_row(dead, other_key, outside_ca)
    start = timezone.now()
    for run in range(1, outside.WARN_AFTER_FAILURES + 1):
        outside.check_due(at=start + run * LATER)
    revoked_row.refresh_from_db()
    assert revoked_row.revoked_at is not None
    # Revoked at start + LATER (the clock of the check); the dashboard looks from that day.
    assert outside.needing_attention(at=start + LATER) == [revoked_row, dead_row]
    page = staff_client().get(reverse("adminconsole:dashboard"))  # type: ignore[attr-defined]
    text = page.content.decode()
    assert "Certificates from other CAs" in text
    assert f'href="{reverse("adminconsole:certificate-detail", args=[dead_row.pk])}"' in text
    assert "revocation not confirmed" in text and "revoked by its issuer" in text


def test_the_dashboard_says_nothing_of_certificates_that_need_nothing(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey
) -> None:
    dead = bobs_certificate(outside_ca, leaf_key, crl_url=closed_port_url("/dash/once.crl"))
    legacy_row(dead, leaf_key, outside_ca)
    outside.check_due(at=timezone.now() + LATER)  # one failure: not yet a warning
    assert outside.needing_attention() == []
    page = staff_client().get(reverse("adminconsole:dashboard"))  # type: ignore[attr-defined]
    assert "Certificates from other CAs" not in page.content.decode()


# --- Follow-ups: PKCS#12 chains, the console's import message -----------------------------------


def test_a_pkcs12_import_asks_the_ca_certificate_that_came_in_the_file(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server
) -> None:
    # No AIA caIssuers URL and the CA not stored here: the file's own CA certificate is the
    # only way to ask. It is remembered as an untrusted imported CA, not anchored.
    url = server.url("/p12/good.crl")
    cert = bobs_certificate(outside_ca, leaf_key, crl_url=url)
    server.serve("/p12/good.crl", crl_listing(outside_ca, []))
    p12 = bobs_pkcs12(cert, leaf_key, outside_ca)
    row = pki.import_certificate(p12, password="a long passphrase")
    state = outside.check_state(row)
    assert state is not None and state.result is outside.Result.GOOD, state
    ca_row = Certificate.objects.get(fingerprint_sha256=fingerprint(outside_ca.certificate))
    assert (ca_row.binding, ca_row.source) == (Certificate.Binding.CA,
                                               Certificate.Source.IMPORTED)
    assert not ca_row.anchorings.exists()


def test_a_pkcs12_whose_own_ca_lists_it_revoked_is_refused(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server
) -> None:
    cert = bobs_certificate(outside_ca, leaf_key, crl_url=server.url("/p12/revoked.crl"))
    server.serve("/p12/revoked.crl", crl_listing(outside_ca, [cert]))
    p12 = bobs_pkcs12(cert, leaf_key, outside_ca)
    refuse_pkcs12_import(p12, cert, "revoked by its issuer")


def test_console_import_with_an_unreachable_issuer_says_revocation_not_confirmed(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey
) -> None:
    dead = closed_port_url("/ui/dead.crl")
    cert = bobs_certificate(outside_ca, leaf_key, crl_url=dead)
    page = staff_client().post(reverse("adminconsole:certificate-import"), {  # type: ignore[attr-defined]
        "certificate": SimpleUploadedFile("bob.pem", pem_file(cert, outside_ca)),
        "key": SimpleUploadedFile("bob.key", key_pem(leaf_key)),
    }, follow=True)
    assert page.status_code == 200
    text = page.content.decode()
    assert "Imported the certificate for" in text
    assert '<li class="msg-warning"><span role="status">Revocation not confirmed' in text
    assert dead in text and "PRIVATE KEY" not in text


def test_console_import_of_a_good_certificate_adds_no_warning(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey, server: Server
) -> None:
    cert = bobs_certificate(outside_ca, leaf_key, crl_url=server.url("/ui/good.crl"))
    server.serve("/ui/good.crl", crl_listing(outside_ca, []))
    page = staff_client().post(reverse("adminconsole:certificate-import"), {  # type: ignore[attr-defined]
        "certificate": SimpleUploadedFile("bob.pem", pem_file(cert, outside_ca)),
        "key": SimpleUploadedFile("bob.key", key_pem(leaf_key)),
    }, follow=True)
    text = page.content.decode()
    assert "Imported the certificate for" in text and "Revocation not confirmed" not in text


def test_the_dashboard_asks_the_database_a_fixed_number_of_times(
    bob: Address, outside_ca: Authority, leaf_key: rsa.RSAPrivateKey,
    django_assert_max_num_queries: Any,
) -> None:
    # Once per certificate would make the dashboard of a HISP with thousands of imported
    # certificates slow; the last check of each is read in the same query.
    for n in range(6):
        legacy_row(bobs_certificate(outside_ca, leaf_key, crl_url=f"http://192.0.2.1/{n}.crl"),
                   leaf_key, outside_ca)
    with django_assert_max_num_queries(3):
        assert outside.needing_attention() == []
