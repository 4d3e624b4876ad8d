"""``HttpRevocationChecker.explain``: which source answered, with the reason and date of a
revocation, or why none did; asked afresh, never a remembered status."""

from __future__ import annotations

from datetime import timedelta

from cryptography import x509

from agent.trust import MemoryCache, RevocationReport
from agent.types import RevocationStatus
from tests.agent.trust.pki import NOW, Responder, closed_port_url, crl, issue
from tests.agent.trust.test_revocation import checker, leaf


def test_explain_names_the_ocsp_responder_and_its_reason(keys, root, server):
    responder = Responder(root)
    server.routes["/explain/ocsp"] = lambda body: (200, responder.answer(body))
    cert = leaf(keys, root, ocsp_url=server.url("/explain/ocsp"))
    responder.revoked.add(cert.serial_number)
    responder.reasons[cert.serial_number] = x509.ReasonFlags.superseded
    report = checker().explain(cert, root.certificate, NOW)
    assert report == RevocationReport(
        RevocationStatus.REVOKED, source="OCSP", url=server.url("/explain/ocsp"),
        reason="superseded", revoked_at=NOW - timedelta(minutes=30))


def test_explain_names_the_crl_after_a_dead_responder_and_says_why_that_failed(
        keys, root, server):
    url = server.url("/explain/list.crl")
    dead = closed_port_url("/ocsp")
    cert = leaf(keys, root, crl_url=url, ocsp_url=dead)
    server.serve("/explain/list.crl", crl(root, revoked=[cert]))
    report = checker().explain(cert, root.certificate, NOW)
    assert (report.status, report.source, report.url) == (RevocationStatus.REVOKED, "CRL", url)
    assert report.revoked_at == NOW - timedelta(minutes=30) and report.reason == ""
    [problem] = report.problems
    assert problem.startswith(f"OCSP {dead}: ")


def test_explain_lists_every_source_that_gave_no_answer(keys, root, server):
    forged = server.url("/explain/forged.crl")
    cert = leaf(keys, root, crl_url=forged)
    server.serve("/explain/forged.crl", crl(root, signer_key=keys.other))
    report = checker().explain(cert, root.certificate, NOW)
    assert report.status is RevocationStatus.UNAVAILABLE and report.source == ""
    [problem] = report.problems
    assert problem.startswith(f"CRL {forged}: ")


def test_explain_asks_again_where_status_answers_from_its_cache(keys, root, server):
    responder = Responder(root)
    server.routes["/explain/again"] = lambda body: (200, responder.answer(body))
    cert = leaf(keys, root, ocsp_url=server.url("/explain/again"))
    check = checker(cache=MemoryCache())
    assert check.status(cert, root.certificate, NOW) is RevocationStatus.GOOD
    responder.revoked.add(cert.serial_number)
    assert check.status(cert, root.certificate, NOW) is RevocationStatus.GOOD  # remembered
    assert check.explain(cert, root.certificate, NOW).status is RevocationStatus.REVOKED
    assert server.hits["/explain/again"] == 2


def test_explain_without_sources_is_not_checked(keys, root):
    cert = issue("Leaf", key=keys.leaf, issuer=root, emails=["a@b.example"])
    assert checker().explain(cert, root.certificate, NOW) == RevocationReport(
        RevocationStatus.NOT_CHECKED)
