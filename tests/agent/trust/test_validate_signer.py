from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path

import pytest
from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from agent.errors import AgentError, Code
from agent.trust import validate_signer
from agent.types import AlgorithmPolicy
from tests.agent.trust.pki import (
    EMAIL,
    NOW,
    Authority,
    Responder,
    authority,
    closed_port_url,
    crl,
    issue,
)

SENDER = "alice@sender.example"
DOMAIN = "receiver.example"
VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "java-ri"


def signer_cert(keys, issuer, **kw):
    kw.setdefault("emails", [SENDER])
    return issue("Alice", key=keys.leaf, issuer=issuer, **kw)


def validate(env, signer, extra=(), *, sender=SENDER, at=NOW):
    return validate_signer(
        signer, list(extra), sender=sender, recipient_domain=DOMAIN, env=env, at=at
    )


def rejects(code, env, signer, extra=(), **kw):
    with pytest.raises(AgentError) as info:
        validate(env, signer, extra, **kw)
    assert info.value.code is code, info.value.detail
    return info.value


# -- positive paths -------------------------------------------------------------------------


def test_validate_signer_accepts_address_bound_signer_with_intermediate_from_message(
    keys, root, intermediate, make_env
):
    leaf = signer_cert(keys, intermediate, eku=[EMAIL])
    env = make_env(incoming={DOMAIN: [root.certificate]})
    anchor, path = validate(env, leaf, [intermediate.certificate])
    assert anchor == root.certificate
    assert path == (leaf, intermediate.certificate)


def test_validate_signer_accepts_domain_bound_signer_and_any_case_in_address(keys, root, make_env):
    leaf = issue("sender.example", key=keys.leaf, issuer=root, dns=["sender.example"])
    env = make_env(incoming={DOMAIN: [root.certificate]})
    assert validate(env, leaf, sender="Bob@Sender.EXAMPLE")[0] == root.certificate


def test_validate_signer_compares_address_local_part_case_insensitively(keys, root, make_env):
    leaf = signer_cert(keys, root)
    env = make_env(incoming={DOMAIN: [root.certificate]})
    assert validate(env, leaf, sender="ALICE@sender.example")[1] == (leaf,)


def test_validate_signer_accepts_signer_that_is_itself_an_anchor(keys, make_env):
    leaf = issue("Alice", key=keys.leaf, emails=[SENDER])  # self-signed endpoint anchor
    env = make_env(incoming={DOMAIN: [leaf]})
    assert validate(env, leaf) == (leaf, (leaf,))


def test_validate_signer_fetches_intermediate_only_reachable_via_aia(keys, root, server, make_env):
    intermediate = authority("AIA Intermediate", key=keys.intermediate, issuer=root)
    der = intermediate.certificate.public_bytes(serialization.Encoding.DER)
    url = server.serve("/aia/int-only.cer", der)
    leaf = signer_cert(keys, intermediate, ca_issuers_url=url)
    env = make_env(incoming={DOMAIN: [root.certificate]})
    anchor, path = validate(env, leaf)
    assert anchor == root.certificate
    assert path == (leaf, intermediate.certificate)
    assert server.hits["/aia/int-only.cer"] == 1


def test_validate_signer_reads_aia_certs_only_pkcs7(keys, root, server, make_env):
    intermediate = authority("AIA P7 Intermediate", key=keys.intermediate, issuer=root)
    bundle = pkcs7.serialize_certificates([intermediate.certificate], serialization.Encoding.DER)
    url = server.serve("/aia/int.p7c", bundle)
    leaf = signer_cert(keys, intermediate, ca_issuers_url=url)
    env = make_env(incoming={DOMAIN: [root.certificate]})
    assert validate(env, leaf)[1] == (leaf, intermediate.certificate)


def test_validate_signer_checks_good_ocsp_and_crl_answers(keys, root, server, make_env):
    crl_url = server.serve("/crl/root-good.crl", crl(root))
    inter = authority("Checked Intermediate", key=keys.intermediate, issuer=root, crl_url=crl_url)
    server.routes["/ocsp/good"] = lambda body: (200, Responder(inter).answer(body))
    leaf = signer_cert(keys, inter, ocsp_url=server.url("/ocsp/good"))
    env = make_env(incoming={DOMAIN: [root.certificate]})
    assert validate(env, leaf, [inter.certificate])[1] == (leaf, inter.certificate)
    assert server.hits["/ocsp/good"] == 1
    assert server.hits["/crl/root-good.crl"] == 1


# -- one negative test per code ---------------------------------------------------------------


def test_validate_signer_rejects_signer_bound_to_another_address(keys, root, make_env):
    leaf = signer_cert(keys, root, emails=["mallory@sender.example"])
    env = make_env(incoming={DOMAIN: [root.certificate]})
    rejects(Code.SENDER_MISMATCH, env, leaf)


def test_validate_signer_rejects_wildcard_dns_binding(keys, root, make_env):
    leaf = issue("wild", key=keys.leaf, issuer=root, dns=["*.example", "*.sender.example"])
    env = make_env(incoming={DOMAIN: [root.certificate]})
    rejects(Code.SENDER_MISMATCH, env, leaf, sender="alice@x.sender.example")


def test_validate_signer_rejects_signer_without_digital_signature(keys, root, make_env):
    leaf = signer_cert(keys, root, key_usage="encrypt")
    env = make_env(incoming={DOMAIN: [root.certificate]})
    rejects(Code.KEY_USAGE, env, leaf)


def test_validate_signer_rejects_signer_whose_eku_excludes_email(keys, root, make_env):
    leaf = signer_cert(keys, root, eku=[x509.oid.ExtendedKeyUsageOID.SERVER_AUTH])
    env = make_env(incoming={DOMAIN: [root.certificate]})
    rejects(Code.KEY_USAGE, env, leaf)


def test_validate_signer_rejects_signer_outside_anchors(keys, root, make_env):
    other = authority("Other Root", key=keys.other)
    leaf = signer_cert(keys, root)
    env = make_env(incoming={DOMAIN: [other.certificate], "sender.example": [root.certificate]})
    rejects(Code.UNTRUSTED_SIGNER, env, leaf)


def test_validate_signer_rejects_when_recipient_domain_has_no_incoming_anchors(
    keys, root, make_env
):
    env = make_env(outgoing={DOMAIN: [root.certificate]})
    rejects(Code.UNTRUSTED_SIGNER, env, signer_cert(keys, root))


def test_validate_signer_rejects_intermediate_that_is_not_a_ca(keys, root, make_env):
    not_ca = Authority(
        issue("Not a CA", key=keys.intermediate, issuer=root, key_usage=None), keys.intermediate
    )
    leaf = signer_cert(keys, not_ca)
    env = make_env(incoming={DOMAIN: [root.certificate]})
    err = rejects(Code.UNTRUSTED_SIGNER, env, leaf, [not_ca.certificate])
    assert "not a CA" in err.detail


def test_validate_signer_rejects_path_longer_than_path_length_constraint(keys, make_env):
    root = authority("Short Root", key=keys.root, path_length=0)
    inter = authority("Too Deep", key=keys.intermediate, issuer=root)
    leaf = signer_cert(keys, inter)
    env = make_env(incoming={DOMAIN: [root.certificate]})
    err = rejects(Code.UNTRUSTED_SIGNER, env, leaf, [inter.certificate])
    assert "pathLenConstraint" in err.detail


def test_validate_signer_rejects_address_outside_anchor_name_constraints(keys, make_env):
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.RFC822Name("other.example")], excluded_subtrees=None
    )
    root = authority("Constrained Root", key=keys.root, name_constraints=constraints)
    env = make_env(incoming={DOMAIN: [root.certificate]})
    err = rejects(Code.UNTRUSTED_SIGNER, env, signer_cert(keys, root))
    assert "permitted" in err.detail
    inside = issue("Ok", key=keys.leaf, issuer=root, emails=["bob@other.example"])
    assert validate(env, inside, sender="bob@other.example")[0] == root.certificate


def test_validate_signer_rejects_unrecognised_critical_extension(keys, root, make_env):
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    leaf = signer_cert(keys, root, extra_extensions=[(odd, True)])
    env = make_env(incoming={DOMAIN: [root.certificate]})
    rejects(Code.UNTRUSTED_SIGNER, env, leaf)


def test_validate_signer_rejects_expired_signer(keys, root, make_env):
    leaf = signer_cert(
        keys, root, not_before=NOW - timedelta(days=30), not_after=NOW - timedelta(days=1)
    )
    env = make_env(incoming={DOMAIN: [root.certificate]})
    rejects(Code.SIGNER_EXPIRED, env, leaf)


def test_validate_signer_rejects_path_through_expired_intermediate(keys, root, make_env):
    inter = authority(
        "Old Intermediate",
        key=keys.intermediate,
        issuer=root,
        not_before=NOW - timedelta(days=30),
        not_after=NOW - timedelta(days=1),
    )
    leaf = signer_cert(keys, inter)
    env = make_env(incoming={DOMAIN: [root.certificate]})
    err = rejects(Code.SIGNER_EXPIRED, env, leaf, [inter.certificate])
    assert "intermediate" in err.detail


def test_validate_signer_rejects_signer_not_yet_valid(keys, root, make_env):
    leaf = signer_cert(keys, root, not_before=NOW + timedelta(days=1))
    env = make_env(incoming={DOMAIN: [root.certificate]})
    rejects(Code.SIGNER_NOT_YET_VALID, env, leaf)


def test_validate_signer_rejects_signer_revoked_by_crl(keys, root, server, make_env):
    url = server.url("/crl/revoked-by-crl.crl")
    leaf = signer_cert(keys, root, crl_url=url)
    server.serve("/crl/revoked-by-crl.crl", crl(root, revoked=[leaf]))
    env = make_env(incoming={DOMAIN: [root.certificate]})
    rejects(Code.SIGNER_REVOKED, env, leaf)


def test_validate_signer_rejects_signer_revoked_by_ocsp(keys, root, server, make_env):
    leaf = signer_cert(keys, root, ocsp_url=server.url("/ocsp/revoked"))
    server.routes["/ocsp/revoked"] = lambda body: (
        200,
        Responder(root, revoked={leaf.serial_number}).answer(body),
    )
    env = make_env(incoming={DOMAIN: [root.certificate]})
    rejects(Code.SIGNER_REVOKED, env, leaf)


def test_validate_signer_rejects_revoked_intermediate(keys, root, server, make_env):
    url = server.url("/crl/revoked-intermediate.crl")
    inter = authority("Revoked Intermediate", key=keys.intermediate, issuer=root, crl_url=url)
    server.serve("/crl/revoked-intermediate.crl", crl(root, revoked=[inter.certificate]))
    env = make_env(incoming={DOMAIN: [root.certificate]})
    err = rejects(Code.SIGNER_REVOKED, env, signer_cert(keys, inter), [inter.certificate])
    assert "intermediate" in err.detail


def test_validate_signer_rejects_when_named_revocation_source_is_down(keys, root, make_env):
    leaf = signer_cert(
        keys, root, crl_url=closed_port_url("/down.crl"), ocsp_url=closed_port_url("/ocsp")
    )
    env = make_env(incoming={DOMAIN: [root.certificate]})
    err = rejects(Code.REVOCATION_UNAVAILABLE, env, leaf)
    assert err.permanent is False


def test_validate_signer_accepts_unreachable_revocation_when_policy_allows(keys, root, make_env):
    leaf = signer_cert(keys, root, crl_url=closed_port_url("/down.crl"))
    env = make_env(
        incoming={DOMAIN: [root.certificate]},
        policy=AlgorithmPolicy(revocation_required_when_named=False),
    )
    assert validate(env, leaf)[0] == root.certificate


def test_validate_signer_rejects_1024_bit_signer_key(keys, root, make_env):
    leaf = issue("Weak", key=keys.weak, issuer=root, emails=[SENDER])
    env = make_env(incoming={DOMAIN: [root.certificate]})
    rejects(Code.WEAK_KEY, env, leaf)


def test_validate_signer_rejects_1024_bit_intermediate_key(keys, root, make_env):
    inter = authority("Weak Intermediate", key=keys.weak, issuer=root)
    env = make_env(incoming={DOMAIN: [root.certificate]})
    rejects(Code.WEAK_KEY, env, signer_cert(keys, inter), [inter.certificate])


def test_validate_signer_rejects_sha1_signed_certificate_under_default_policy(keys, root, make_env):
    leaf = signer_cert(keys, root, digest=hashes.SHA1())
    env = make_env(incoming={DOMAIN: [root.certificate]})
    err = rejects(Code.WEAK_ALGORITHM, env, leaf)
    assert "SHA-1" in err.detail
    legacy = make_env(
        incoming={DOMAIN: [root.certificate]}, policy=AlgorithmPolicy(allow_sha1_certificates=True)
    )
    assert validate(legacy, leaf)[0] == root.certificate


def test_validate_signer_rejects_sha1_intermediate_under_default_policy(keys, root, make_env):
    inter = authority("SHA1 Intermediate", key=keys.intermediate, issuer=root, digest=hashes.SHA1())
    env = make_env(incoming={DOMAIN: [root.certificate]})
    rejects(Code.WEAK_ALGORITHM, env, signer_cert(keys, inter), [inter.certificate])


def test_validate_signer_rejects_forged_signature_on_signer(keys, root, make_env):
    impostor = authority("Test Root CA", key=keys.other)  # same name, different key
    leaf = signer_cert(keys, impostor)
    env = make_env(incoming={DOMAIN: [root.certificate]})
    rejects(Code.UNTRUSTED_SIGNER, env, leaf)


def test_validate_signer_requires_an_aware_time(keys, root, make_env):
    env = make_env(incoming={DOMAIN: [root.certificate]})
    with pytest.raises(ValueError):
        validate(env, signer_cert(keys, root), at=datetime(2026, 1, 1))


# -- the Java reference implementation's signer -------------------------------------------------


def _java_signer() -> x509.Certificate:
    """The signer certificate embedded in EncryptedMessage2.txt (decrypted with ryan's key)."""
    raw = (VECTORS / "EncryptedMessage2.txt").read_bytes()
    key = serialization.load_der_private_key((VECTORS / "ryanKey.der").read_bytes(), None)
    cert = x509.load_der_x509_certificate((VECTORS / "ryan.der").read_bytes())
    outer = message_from_bytes(raw).get_payload(decode=True)
    # The Java RI writes BER (indefinite lengths); cryptography reads DER only.
    der = asn1_cms.ContentInfo.load(outer).dump(force=True)
    inner = pkcs7.pkcs7_decrypt_der(der, cert, key, [])
    signed = message_from_bytes(inner)
    signature = next(p for p in signed.walk() if "pkcs7-signature" in p.get_content_type())
    signed_data = asn1_cms.ContentInfo.load(signature.get_payload(decode=True))["content"]
    return x509.load_der_x509_certificate(signed_data["certificates"][0].chosen.dump())


def test_java_ri_signer_chains_to_its_ca_only_under_sha1_policy(make_env):
    signer = _java_signer()
    ca = x509.load_der_x509_certificate((VECTORS / "secureHealthEmailCACert.der").read_bytes())
    at = datetime(2025, 1, 1, tzinfo=UTC)
    sender = "gm2552@securehealthemail.com"
    domain = "securehealthemail.com"
    env = make_env(incoming={domain: [ca]})
    with pytest.raises(AgentError) as info:
        validate_signer(signer, [], sender=sender, recipient_domain=domain, env=env, at=at)
    assert info.value.code is Code.WEAK_ALGORITHM
    assert "SHA-1" in info.value.detail
    legacy = make_env(incoming={domain: [ca]}, policy=AlgorithmPolicy(allow_sha1_certificates=True))
    anchor, path = validate_signer(
        signer, [], sender=sender, recipient_domain=domain, env=legacy, at=at
    )
    assert anchor == ca
    assert path == (signer,)


def test_validate_signer_rejects_md5_signed_certificate_even_under_legacy_policy(
    keys, root, make_env
):
    leaf = signer_cert(keys, root, digest=hashes.MD5())
    legacy = make_env(
        incoming={DOMAIN: [root.certificate]}, policy=AlgorithmPolicy(allow_sha1_certificates=True)
    )
    err = rejects(Code.WEAK_ALGORITHM, legacy, leaf)
    assert "MD5" in err.detail


def test_validate_signer_rejects_md5_intermediate_found_by_name(keys, root, make_env):
    inter = authority("MD5 Intermediate", key=keys.intermediate, issuer=root, digest=hashes.MD5())
    env = make_env(incoming={DOMAIN: [root.certificate]})
    err = rejects(Code.WEAK_ALGORITHM, env, signer_cert(keys, inter), [inter.certificate])
    assert "MD5" in err.detail


def test_validate_signer_rejects_when_aia_intermediate_is_unreachable(keys, root, make_env):
    inter = authority("Unpublished Intermediate", key=keys.intermediate, issuer=root)
    leaf = signer_cert(keys, inter, ca_issuers_url=closed_port_url("/aia/missing.cer"))
    env = make_env(incoming={DOMAIN: [root.certificate]})
    rejects(Code.UNTRUSTED_SIGNER, env, leaf)


def test_validate_signer_bounds_work_on_a_message_stuffed_with_look_alike_issuers(
    keys, root, make_env
):
    import time

    from tests.agent.trust.pki import name

    real = authority("Stuffed Intermediate", key=keys.intermediate, issuer=root)
    # Same subject and same key identifier as the real intermediate, signed by a stranger: each
    # one costs a signature check, so the builder must give up after a bounded number.
    stranger = authority("Stranger", key=keys.other)
    decoys = []
    for i in range(80):
        fake = issue(
            "Stuffed Intermediate", key=keys.intermediate, issuer=stranger, ca=True, serial=1000 + i
        )
        assert fake.subject == name("Stuffed Intermediate")
        decoys.append(fake)
    leaf = signer_cert(keys, real)
    env = make_env(incoming={DOMAIN: [root.certificate]})
    started = time.monotonic()
    rejects(Code.UNTRUSTED_SIGNER, env, leaf, decoys + [real.certificate])
    assert time.monotonic() - started < 2
    assert validate(env, leaf, [real.certificate] + decoys)[1] == (leaf, real.certificate)


def test_validate_signer_rejects_malformed_signer_with_a_typed_error(keys, root, make_env):
    from tests.agent.trust.pki import with_duplicate_extension

    leaf = with_duplicate_extension(signer_cert(keys, root), root.key)
    env = make_env(incoming={DOMAIN: [root.certificate]})
    err = rejects(Code.UNTRUSTED_SIGNER, env, leaf)
    assert "malformed" in err.detail
