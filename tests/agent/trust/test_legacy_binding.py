"""The legacy subject-emailAddress binding (``AlgorithmPolicy.allow_subject_email_binding``):
off by default, and when on, only for signers without rfc822Name/dNSName subjectAltNames."""

from __future__ import annotations

import pytest
from cryptography import x509

from agent.errors import AgentError, Code
from agent.trust import validate_signer
from agent.types import AlgorithmPolicy
from tests.agent.trust.pki import NOW, authority, issue

SENDER = "toby@redmond.example"
DOMAIN = "receiver.example"
LEGACY = AlgorithmPolicy(allow_subject_email_binding=True)


def _validate(env, signer, *, sender=SENDER):
    return validate_signer(signer, [], sender=sender, recipient_domain=DOMAIN, env=env, at=NOW)


def _rejects(code, env, signer, **kw):
    with pytest.raises(AgentError) as info:
        _validate(env, signer, **kw)
    assert info.value.code is code, info.value.detail
    return info.value


def test_subject_email_binding_is_refused_under_the_default_policy(keys, root, make_env):
    leaf = issue("Toby", key=keys.leaf, issuer=root, subject_emails=[SENDER])
    env = make_env(incoming={DOMAIN: [root.certificate]})
    _rejects(Code.SENDER_MISMATCH, env, leaf)


def test_legacy_policy_binds_a_signer_by_its_subject_email_address(keys, root, make_env):
    leaf = issue("Toby", key=keys.leaf, issuer=root, subject_emails=["TOBY@Redmond.Example"])
    env = make_env(incoming={DOMAIN: [root.certificate]}, policy=LEGACY)
    assert _validate(env, leaf)[0] == root.certificate


def test_legacy_policy_binds_a_signer_by_a_bare_domain_in_its_subject_email(keys, root, make_env):
    leaf = issue("redmond", key=keys.leaf, issuer=root, subject_emails=["redmond.example"])
    env = make_env(incoming={DOMAIN: [root.certificate]}, policy=LEGACY)
    assert _validate(env, leaf, sender="anyone@redmond.example")[0] == root.certificate


def test_legacy_subject_email_binding_rejects_another_address(keys, root, make_env):
    leaf = issue("Toby", key=keys.leaf, issuer=root, subject_emails=["eve@redmond.example"])
    env = make_env(incoming={DOMAIN: [root.certificate]}, policy=LEGACY)
    _rejects(Code.SENDER_MISMATCH, env, leaf)


def test_legacy_subject_email_binding_rejects_a_parent_or_wildcard_domain(keys, root, make_env):
    env = make_env(incoming={DOMAIN: [root.certificate]}, policy=LEGACY)
    for value in ("example", "*.redmond.example", "sub.redmond.example"):
        leaf = issue("d", key=keys.leaf, issuer=root, subject_emails=[value])
        _rejects(Code.SENDER_MISMATCH, env, leaf)


def test_legacy_subject_email_binding_is_ignored_when_the_signer_has_san_names(
    keys, root, make_env
):
    # The SAN, when it names mailboxes or domains, is the only binding (RFC 5280 4.2.1.6).
    leaf = issue(
        "Toby",
        key=keys.leaf,
        issuer=root,
        subject_emails=[SENDER],
        emails=["other@elsewhere.example"],
    )
    env = make_env(incoming={DOMAIN: [root.certificate]}, policy=LEGACY)
    _rejects(Code.SENDER_MISMATCH, env, leaf)


def test_legacy_subject_email_binding_obeys_the_anchor_name_constraints(keys, make_env):
    # RFC 5280 4.2.1.10: rfc822Name constraints apply to the subject emailAddress without a SAN.
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.RFC822Name("other.example")], excluded_subtrees=None
    )
    root = authority("Constrained Root", key=keys.root, name_constraints=constraints)
    env = make_env(incoming={DOMAIN: [root.certificate]}, policy=LEGACY)
    leaf = issue("Toby", key=keys.leaf, issuer=root, subject_emails=[SENDER])
    assert "permitted" in _rejects(Code.UNTRUSTED_SIGNER, env, leaf).detail
    domain_leaf = issue("d", key=keys.leaf, issuer=root, subject_emails=["redmond.example"])
    _rejects(Code.UNTRUSTED_SIGNER, env, domain_leaf, sender="x@redmond.example")
