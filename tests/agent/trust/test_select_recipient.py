from __future__ import annotations

from datetime import timedelta

import pytest

from agent.errors import AgentError, Code
from agent.trust import select_recipient_certificates
from agent.types import Binding, Candidates
from tests.agent.trust.pki import (
    NOW,
    Responder,
    StaticResolver,
    authority,
    closed_port_url,
    crl,
    issue,
)

BOB = "bob@receiver.example"
SENDER_DOMAIN = "sender.example"


def address_cert(keys, issuer, *, key=None, email=BOB, **kw):
    return issue("Bob", key=key or keys.leaf, issuer=issuer, emails=[email], **kw)


def domain_cert(keys, issuer, *, dns="receiver.example", **kw):
    return issue(dns, key=keys.other, issuer=issuer, dns=[dns], **kw)


def levels(*pairs, source="dns"):
    return [Candidates(source=source, binding=b, certificates=tuple(c)) for b, c in pairs]


def select(make_env, root, resolver):
    env = make_env(outgoing={SENDER_DOMAIN: [root.certificate]}, resolver=resolver)
    return select_recipient_certificates(BOB, sender_domain=SENDER_DOMAIN, env=env, at=NOW)


def rejects(code, make_env, root, resolver):
    with pytest.raises(AgentError) as info:
        select(make_env, root, resolver)
    assert info.value.code is code, info.value.detail
    return info.value


def test_select_prefers_address_bound_level_over_domain_bound(keys, root, make_env):
    mine, ours = address_cert(keys, root), domain_cert(keys, root)
    resolver = StaticResolver({BOB: levels((Binding.ADDRESS, [mine]), (Binding.DOMAIN, [ours]))})
    assert select(make_env, root, resolver) == ((mine,), root.certificate)
    assert resolver.asked == ["dns"]  # the domain level was never looked up


def test_select_returns_every_usable_certificate_of_the_winning_level(keys, root, make_env):
    old = address_cert(keys, root, not_before=NOW - timedelta(days=300))
    new = address_cert(keys, root, key=keys.other)
    resolver = StaticResolver({BOB: levels((Binding.ADDRESS, [old, new]))})
    assert select(make_env, root, resolver) == ((old, new), root.certificate)


def test_select_falls_back_to_domain_level_when_address_certificates_are_unusable(
    keys, root, make_env
):
    expired = address_cert(
        keys, root, not_before=NOW - timedelta(days=9), not_after=NOW - timedelta(days=1)
    )
    ours = domain_cert(keys, root)
    resolver = StaticResolver({BOB: levels((Binding.ADDRESS, [expired]), (Binding.DOMAIN, [ours]))})
    assert select(make_env, root, resolver) == ((ours,), root.certificate)


def test_select_accepts_certificate_through_intermediate_from_aia(keys, root, server, make_env):
    from cryptography.hazmat.primitives import serialization

    inter = authority("Recipient Intermediate", key=keys.intermediate, issuer=root)
    url = server.serve(
        "/aia/recipient-int.cer", inter.certificate.public_bytes(serialization.Encoding.DER)
    )
    mine = address_cert(keys, inter, ca_issuers_url=url)
    resolver = StaticResolver({BOB: levels((Binding.ADDRESS, [mine]))})
    assert select(make_env, root, resolver) == ((mine,), root.certificate)


def test_select_rejects_recipient_with_no_certificate(root, make_env):
    resolver = StaticResolver({BOB: levels((Binding.ADDRESS, []), (Binding.DOMAIN, []))})
    err = rejects(Code.NO_RECIPIENT_CERTIFICATE, make_env, root, resolver)
    assert "none found" in err.detail


def test_select_reports_failed_lookups(root, make_env):
    failed = Candidates(source="ldap", binding=Binding.ADDRESS, error="timed out")
    err = rejects(Code.NO_RECIPIENT_CERTIFICATE, make_env, root, StaticResolver({BOB: [failed]}))
    assert "ldap: lookup failed (timed out)" in err.detail


def test_select_rejects_expired_certificate(keys, root, make_env):
    expired = address_cert(
        keys, root, not_before=NOW - timedelta(days=9), not_after=NOW - timedelta(days=1)
    )
    err = rejects(
        Code.NO_RECIPIENT_CERTIFICATE,
        make_env,
        root,
        StaticResolver({BOB: levels((Binding.ADDRESS, [expired]))}),
    )
    assert "signer-expired" in err.detail or "expired" in err.detail


def test_select_rejects_revoked_certificate(keys, root, server, make_env):
    mine = address_cert(keys, root, ocsp_url=server.url("/ocsp/recipient-revoked"))
    server.routes["/ocsp/recipient-revoked"] = lambda body: (
        200,
        Responder(root, revoked={mine.serial_number}).answer(body),
    )
    err = rejects(
        Code.NO_RECIPIENT_CERTIFICATE,
        make_env,
        root,
        StaticResolver({BOB: levels((Binding.ADDRESS, [mine]))}),
    )
    assert "revoked" in err.detail


def test_select_rejects_certificate_bound_to_another_address(keys, root, make_env):
    other = address_cert(keys, root, email="carol@receiver.example")
    err = rejects(
        Code.NO_RECIPIENT_CERTIFICATE,
        make_env,
        root,
        StaticResolver({BOB: levels((Binding.ADDRESS, [other]))}),
    )
    assert "not bound" in err.detail


def test_select_rejects_domain_certificate_offered_as_address_bound(keys, root, make_env):
    ours = domain_cert(keys, root)
    rejects(
        Code.NO_RECIPIENT_CERTIFICATE,
        make_env,
        root,
        StaticResolver({BOB: levels((Binding.ADDRESS, [ours]))}),
    )


def test_select_rejects_wildcard_domain_certificate(keys, root, make_env):
    wild = domain_cert(keys, root, dns="*.example")
    star = issue("star", key=keys.other, issuer=root, dns=["*.receiver.example", "*"])
    resolver = StaticResolver({BOB: levels((Binding.DOMAIN, [wild, star]))})
    rejects(Code.NO_RECIPIENT_CERTIFICATE, make_env, root, resolver)


def test_select_rejects_certificate_without_key_encipherment(keys, root, make_env):
    signing_only = address_cert(keys, root, key_usage="sign")
    err = rejects(
        Code.NO_RECIPIENT_CERTIFICATE,
        make_env,
        root,
        StaticResolver({BOB: levels((Binding.ADDRESS, [signing_only]))}),
    )
    assert "keyEncipherment" in err.detail


def test_select_rejects_1024_bit_certificate(keys, root, make_env):
    weak = address_cert(keys, root, key=keys.weak)
    err = rejects(
        Code.NO_RECIPIENT_CERTIFICATE,
        make_env,
        root,
        StaticResolver({BOB: levels((Binding.ADDRESS, [weak]))}),
    )
    assert "weak-key" in err.detail


def test_select_rejects_valid_certificate_outside_outgoing_anchors(keys, root, make_env):
    stranger = authority("Stranger Root", key=keys.other)
    mine = address_cert(keys, stranger)
    err = rejects(
        Code.UNTRUSTED_RECIPIENT,
        make_env,
        root,
        StaticResolver({BOB: levels((Binding.ADDRESS, [mine]))}),
    )
    assert "no certification path" in err.detail


def test_select_uses_outgoing_not_incoming_anchors(keys, root, make_env):
    mine = address_cert(keys, root)
    env = make_env(
        incoming={SENDER_DOMAIN: [root.certificate]},
        resolver=StaticResolver({BOB: levels((Binding.ADDRESS, [mine]))}),
    )
    with pytest.raises(AgentError) as info:
        select_recipient_certificates(BOB, sender_domain=SENDER_DOMAIN, env=env, at=NOW)
    assert info.value.code is Code.UNTRUSTED_RECIPIENT


def test_select_reports_unreachable_revocation_as_transient(keys, root, make_env):
    mine = address_cert(keys, root, crl_url=closed_port_url("/recipient.crl"))
    err = rejects(
        Code.REVOCATION_UNAVAILABLE,
        make_env,
        root,
        StaticResolver({BOB: levels((Binding.ADDRESS, [mine]))}),
    )
    assert err.permanent is False


def test_select_skips_revoked_certificate_and_keeps_its_valid_sibling(keys, root, server, make_env):
    url = server.url("/crl/rollover.crl")
    revoked = address_cert(keys, root, crl_url=url)
    fine = address_cert(keys, root, key=keys.other, crl_url=url)
    server.serve("/crl/rollover.crl", crl(root, revoked=[revoked]))
    resolver = StaticResolver({BOB: levels((Binding.ADDRESS, [revoked, fine]))})
    assert select(make_env, root, resolver) == ((fine,), root.certificate)


def test_select_rejects_non_rsa_certificate(root, make_env):
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_key = ec.generate_private_key(ec.SECP256R1())
    mine = issue("Bob", key=ec_key, issuer=root, emails=[BOB])
    err = rejects(
        Code.NO_RECIPIENT_CERTIFICATE,
        make_env,
        root,
        StaticResolver({BOB: levels((Binding.ADDRESS, [mine]))}),
    )
    assert "not an RSA key" in err.detail


def test_select_uses_intermediates_returned_by_the_same_lookup(keys, root, make_env):
    inter = authority("Directory Intermediate", key=keys.intermediate, issuer=root)
    mine = address_cert(keys, inter)
    resolver = StaticResolver({BOB: levels((Binding.ADDRESS, [mine, inter.certificate]))})
    assert select(make_env, root, resolver) == ((mine,), root.certificate)


def test_select_rejects_malformed_certificate_with_a_typed_error(keys, root, make_env):
    from tests.agent.trust.pki import with_duplicate_extension

    broken = with_duplicate_extension(address_cert(keys, root), root.key)
    err = rejects(
        Code.NO_RECIPIENT_CERTIFICATE,
        make_env,
        root,
        StaticResolver({BOB: levels((Binding.ADDRESS, [broken]))}),
    )
    assert "malformed" in err.detail
