"""Name constraints and revocation answers an attacker shapes: a subject emailAddress hidden
behind a SAN of URIs, an exclude-everything dNSName constraint, and an old OCSP "good" without
nextUpdate replayed after the revocation."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509 import ocsp

from agent.cache import MemoryCache
from agent.errors import AgentError, Code
from agent.trust import HttpRevocationChecker, validate_signer
from agent.trust.path import MAX_ISSUER_FETCHES
from agent.types import AlgorithmPolicy, RevocationStatus
from tests.agent.trust.pki import NOW, Authority, Server, authority, issue

SENDER = "toby@redmond.example"
DOMAIN = "receiver.example"
LEGACY = AlgorithmPolicy(allow_subject_email_binding=True)


def _rejects(code, env, signer, *, sender=SENDER):
    with pytest.raises(AgentError) as info:
        validate_signer(signer, [], sender=sender, recipient_domain=DOMAIN, env=env, at=NOW)
    assert info.value.code is code, info.value.detail
    return info.value


def test_legacy_subject_email_binding_obeys_name_constraints_when_the_san_has_only_uris(
    keys, make_env
):
    # The legacy binding reads the subject emailAddress whenever the SAN names no mailbox or
    # domain, so the constraints must read it then too (RFC 5280 4.2.1.10).
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.RFC822Name("other.example")], excluded_subtrees=None
    )
    root = authority("Constrained Root", key=keys.root, name_constraints=constraints)
    uri_only = x509.SubjectAlternativeName([x509.UniformResourceIdentifier("https://x.example")])
    leaf = issue(
        "Toby",
        key=keys.leaf,
        issuer=root,
        subject_emails=[SENDER],
        extra_extensions=[(uri_only, False)],
    )
    env = make_env(incoming={DOMAIN: [root.certificate]}, policy=LEGACY)
    assert "permitted" in _rejects(Code.UNTRUSTED_SIGNER, env, leaf).detail


def test_an_empty_excluded_dns_name_constraint_excludes_every_domain_bound_signer(keys, make_env):
    # RFC 5280 4.2.1.10: a name plus any labels on its left is within it, so the empty name
    # covers all: a CA that may issue mailbox certificates only says so this way.
    constraints = x509.NameConstraints(
        permitted_subtrees=None, excluded_subtrees=[x509.DNSName("")]
    )
    root = authority("Mailbox-only Root", key=keys.root, name_constraints=constraints)
    env = make_env(incoming={DOMAIN: [root.certificate]})
    domain_bound = issue("redmond", key=keys.leaf, issuer=root, dns=["redmond.example"])
    assert "excluded" in _rejects(Code.UNTRUSTED_SIGNER, env, domain_bound).detail
    mailbox = issue("Toby", key=keys.leaf, issuer=root, emails=[SENDER])
    anchor, _path = validate_signer(
        mailbox, [], sender=SENDER, recipient_domain=DOMAIN, env=env, at=NOW
    )
    assert anchor == root.certificate


def _serve_ocsp_without_next_update(server: Server, path: str, issuer: Authority, this_update):
    def answer(body: bytes) -> tuple[int, bytes]:
        request = ocsp.load_der_ocsp_request(body)
        response = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                request.issuer_name_hash,
                request.issuer_key_hash,
                request.serial_number,
                request.hash_algorithm,
                ocsp.OCSPCertStatus.GOOD,
                this_update,
                None,  # no nextUpdate: "newer information is always available" (RFC 6960)
                None,
                None,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer.certificate)
            .sign(issuer.key, hashes.SHA256())
        )
        return 200, response.public_bytes(serialization.Encoding.DER)

    server.routes[path] = answer
    return server.url(path)


def _checker() -> HttpRevocationChecker:
    return HttpRevocationChecker(allow_private_networks=True, timeout=2.0, failure_ttl=0)


def test_revocation_refuses_an_old_ocsp_answer_without_next_update(keys, root, server):
    # Captured before the revocation and replayed over plain HTTP, it would say "good" for ever.
    url = _serve_ocsp_without_next_update(server, "/ocsp/old", root, NOW - timedelta(days=30))
    cert = issue("Leaf", key=keys.leaf, issuer=root, emails=["a@b.example"], ocsp_url=url)
    assert _checker().status(cert, root.certificate, NOW) is RevocationStatus.UNAVAILABLE


def test_revocation_accepts_a_fresh_ocsp_answer_without_next_update(keys, root, server):
    url = _serve_ocsp_without_next_update(server, "/ocsp/fresh", root, NOW - timedelta(minutes=1))
    cert = issue("Leaf", key=keys.leaf, issuer=root, emails=["a@b.example"], ocsp_url=url)
    assert _checker().status(cert, root.certificate, NOW) is RevocationStatus.GOOD


def test_an_answer_without_next_update_is_kept_only_for_what_is_left_of_its_freshness(
    keys, root, server
):
    # Issued 50 minutes ago, it counts for 10 minutes more: not for a whole hour from now.
    url = _serve_ocsp_without_next_update(server, "/ocsp/aged", root, NOW - timedelta(minutes=50))
    cert = issue("Leaf", key=keys.leaf, issuer=root, emails=["a@b.example"], ocsp_url=url)
    kept: list[float] = []

    class Recording(MemoryCache):
        def set(self, key: str, value: bytes, ttl: float) -> None:
            kept.append(ttl)
            super().set(key, value, ttl)

    checker = HttpRevocationChecker(allow_private_networks=True, timeout=2.0, failure_ttl=0,
                                    cache=Recording(), clock=lambda: NOW)
    assert checker.status(cert, root.certificate, NOW) is RevocationStatus.GOOD
    assert kept and max(kept) <= 10 * 60


def test_validate_signer_reads_a_bounded_number_of_ca_issuers_for_a_chain_of_its_own_making(
    keys, root, server, make_env
):
    # The sender's own CA (anchored nowhere) answers the signer's caIssuers URL with a dozen
    # look-alikes of itself, each naming a caIssuers URL of its own that answers slowly.
    attacker_root = authority("Attacker Root", key=keys.other)

    def slow(_body: bytes) -> tuple[int, bytes]:
        time.sleep(0.1)
        return 404, b""

    look_alikes = []
    for index in range(12):
        path = f"/aia/fan/{index}.cer"
        server.routes[path] = slow
        look_alikes.append(
            issue(
                "Attacker CA",
                key=keys.intermediate,
                issuer=attacker_root,
                ca=True,
                ca_issuers_url=server.url(path),
            )
        )
    bundle = pkcs7.serialize_certificates(look_alikes, serialization.Encoding.DER)
    attacker_ca = Authority(look_alikes[0], keys.intermediate)
    leaf = issue(
        "Toby",
        key=keys.leaf,
        issuer=attacker_ca,
        emails=[SENDER],
        ca_issuers_url=server.serve("/aia/fan.p7c", bundle),
    )
    env = make_env(incoming={DOMAIN: [root.certificate]})
    _rejects(Code.UNTRUSTED_SIGNER, env, leaf)
    # Counted, not timed: each look-alike's URL answers in 0.1 s, but may be allowed 5.
    fetched = sum(server.hits.get(f"/aia/fan/{index}.cer", 0) for index in range(12))
    assert 1 + fetched <= MAX_ISSUER_FETCHES
