"""The ValidationCache: remembered successes serve only while everything that decided them is
unchanged, revocation is asked again on every use, and failures are never remembered."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from agent.errors import AgentError, Code
from agent.trust import ValidationCache, select_recipient_certificates, validate_signer
from agent.types import AlgorithmPolicy, Binding, Candidates, Environment
from tests.agent.pki import MemoryAnchors, MemoryRevocation
from tests.agent.trust.pki import NOW, NoKeys, StaticResolver, authority, issue

SENDER = "alice@sender.example"
DOMAIN = "receiver.example"
BOB = "bob@partner.example"


@dataclass
class CountingIssuers:
    """AIA caIssuers from memory, counting lookups: a lookup means a path was being built."""

    known: list[x509.Certificate] = field(default_factory=list)
    lookups: int = 0

    def issuers(self, certificate: x509.Certificate) -> Sequence[x509.Certificate]:
        self.lookups += 1
        return [c for c in self.known if c.subject == certificate.issuer]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pki(keys):
    root = authority("Cache Root", key=keys.root)
    intermediate = authority("Cache CA", key=keys.intermediate, issuer=root)
    signer = issue("Alice", key=keys.leaf, issuer=intermediate, emails=[SENDER])
    return root, intermediate, signer


def _env(root, intermediate, *, cache, revocation=None, policy=None, resolver=None, anchors=None):
    return Environment(
        keys=NoKeys(),
        certificates=resolver or StaticResolver(),
        anchors=anchors
        or MemoryAnchors(
            incoming={DOMAIN: [root.certificate]}, outgoing={"sender.example": [root.certificate]}
        ),
        revocation=revocation or MemoryRevocation(),
        issuers=CountingIssuers([intermediate.certificate]),
        policy=policy or AlgorithmPolicy(),
        validation_cache=cache,
    )


def _validate(env, signer, *, extra=(), sender=SENDER, at=NOW):
    return validate_signer(
        signer, list(extra), sender=sender, recipient_domain=DOMAIN, env=env, at=at
    )


def _rejects(code, env, signer, **kw):
    with pytest.raises(AgentError) as info:
        _validate(env, signer, **kw)
    assert info.value.code is code, info.value.detail
    return info.value


def test_a_remembered_signer_path_is_served_without_rebuilding_it(pki):
    root, intermediate, signer = pki
    cache = ValidationCache()
    env = _env(root, intermediate, cache=cache)
    first = _validate(env, signer)
    assert env.issuers.lookups == 1  # the intermediate came from AIA
    # A fresh parse of the same DER (as every incoming message gives) hits the same entry.
    again = x509.load_der_x509_certificate(signer.public_bytes(Encoding.DER))
    assert _validate(env, again) == first == (root.certificate, (signer, intermediate.certificate))
    assert env.issuers.lookups == 1
    assert len(cache) == 1


def test_without_a_cache_every_call_builds_the_path(pki):
    root, intermediate, signer = pki
    env = _env(root, intermediate, cache=None)
    _validate(env, signer)
    _validate(env, signer)
    assert env.issuers.lookups == 2


def test_a_signer_revoked_after_it_was_remembered_is_rejected(pki):
    root, intermediate, signer = pki
    revocation = MemoryRevocation()
    cache = ValidationCache()
    env = _env(root, intermediate, cache=cache, revocation=revocation)
    _validate(env, signer)
    revocation.revoked.add(signer.serial_number)
    _rejects(Code.SIGNER_REVOKED, env, signer)
    assert len(cache) == 0


def test_a_revoked_intermediate_after_remembering_is_rejected(pki):
    root, intermediate, signer = pki
    revocation = MemoryRevocation()
    env = _env(root, intermediate, cache=ValidationCache(), revocation=revocation)
    _validate(env, signer)
    revocation.revoked.add(intermediate.certificate.serial_number)
    _rejects(Code.SIGNER_REVOKED, env, signer)


def test_an_unreadable_revocation_source_is_never_remembered(pki):
    root, intermediate, signer = pki
    revocation = MemoryRevocation(unavailable=True)
    cache = ValidationCache()
    env = _env(root, intermediate, cache=cache, revocation=revocation)
    _rejects(Code.REVOCATION_UNAVAILABLE, env, signer)
    assert len(cache) == 0
    revocation.unavailable = False
    assert _validate(env, signer)[0] == root.certificate
    revocation.unavailable = True
    _rejects(Code.REVOCATION_UNAVAILABLE, env, signer)  # re-asked on a hit, too


def test_a_removed_anchor_is_not_served_from_the_cache(pki):
    root, intermediate, signer = pki
    anchors = MemoryAnchors(incoming={DOMAIN: [root.certificate]})
    env = _env(root, intermediate, cache=ValidationCache(), anchors=anchors)
    _validate(env, signer)
    anchors.incoming[DOMAIN] = []
    _rejects(Code.UNTRUSTED_SIGNER, env, signer)
    other = authority("Other Root", key=pki[0].key)  # same key, other name: no path to it
    anchors.incoming[DOMAIN] = [other.certificate]
    _rejects(Code.UNTRUSTED_SIGNER, env, signer)


def test_a_validation_time_outside_the_path_validity_is_decided_afresh(keys, pki):
    root, intermediate, _signer = pki
    short = issue(
        "Alice",
        key=keys.leaf,
        issuer=intermediate,
        emails=[SENDER],
        not_after=NOW + timedelta(days=2),
    )
    env = _env(root, intermediate, cache=ValidationCache())
    _validate(env, short)
    _rejects(Code.SIGNER_EXPIRED, env, short, at=NOW + timedelta(days=3))
    _rejects(Code.SIGNER_NOT_YET_VALID, env, short, at=NOW - timedelta(days=5))
    assert _validate(env, short, at=NOW + timedelta(days=1))[0] == root.certificate


def test_another_sender_or_policy_misses_the_remembered_entry(keys, pki):
    root, intermediate, signer = pki
    cache = ValidationCache()
    env = _env(root, intermediate, cache=cache)
    _validate(env, signer)
    _rejects(Code.SENDER_MISMATCH, env, signer, sender="mallory@sender.example")
    strict = replace(env, policy=AlgorithmPolicy(min_rsa_bits=4096))
    _rejects(Code.WEAK_KEY, strict, signer)


def test_the_extra_certificates_are_part_of_the_key(pki):
    root, intermediate, signer = pki
    env = _env(root, intermediate, cache=ValidationCache())
    env.issuers.known.clear()  # no AIA: the intermediate only arrives with the message
    _validate(env, signer, extra=[intermediate.certificate])
    _rejects(Code.UNTRUSTED_SIGNER, env, signer)


def test_entries_expire_after_their_ttl(pki):
    root, intermediate, signer = pki
    clock = Clock()
    env = _env(root, intermediate, cache=ValidationCache(ttl=60, clock=clock))
    _validate(env, signer)
    clock.now += 59
    _validate(env, signer)
    assert env.issuers.lookups == 1
    clock.now += 2
    _validate(env, signer)
    assert env.issuers.lookups == 2


def test_the_cache_holds_at_most_max_entries(pki):
    root, intermediate, signer = pki
    cache = ValidationCache(max_entries=2)
    env = _env(root, intermediate, cache=cache)
    for domain in ("a.example", "b.example", "c.example"):
        env.anchors.incoming[domain] = [root.certificate]
        validate_signer(signer, [], sender=SENDER, recipient_domain=domain, env=env, at=NOW)
    assert len(cache) == 2


def test_the_cache_refuses_nonsense_bounds():
    with pytest.raises(ValueError):
        ValidationCache(max_entries=0)
    with pytest.raises(ValueError):
        ValidationCache(ttl=0)


def test_recipient_selection_follows_a_changed_discovery_answer(keys, pki):
    root, intermediate, _signer = pki
    good = issue("Bob", key=keys.other, issuer=root, emails=[BOB])
    stranger = authority("Stranger Root", key=keys.intermediate)
    replaced = issue("Bob", key=keys.other, issuer=stranger, emails=[BOB])
    resolver = StaticResolver({BOB: [Candidates("dns", Binding.ADDRESS, (good,))]})
    cache = ValidationCache()
    env = _env(root, intermediate, cache=cache, resolver=resolver)
    assert select_recipient_certificates(BOB, sender_domain="sender.example", env=env, at=NOW) == (
        (good,),
        root.certificate,
    )
    assert len(cache) == 1
    # Same address, new answer from discovery: decided on the new certificate, not the address.
    resolver.levels[BOB] = [Candidates("dns", Binding.ADDRESS, (replaced,))]
    with pytest.raises(AgentError) as info:
        select_recipient_certificates(BOB, sender_domain="sender.example", env=env, at=NOW)
    assert info.value.code is Code.UNTRUSTED_RECIPIENT


def test_a_remembered_recipient_certificate_is_rechecked_for_revocation(keys, pki):
    root, intermediate, _signer = pki
    good = issue("Bob", key=keys.other, issuer=root, emails=[BOB])
    resolver = StaticResolver({BOB: [Candidates("dns", Binding.ADDRESS, (good,))]})
    revocation = MemoryRevocation()
    env = _env(
        root, intermediate, cache=ValidationCache(), resolver=resolver, revocation=revocation
    )
    select_recipient_certificates(BOB, sender_domain="sender.example", env=env, at=NOW)
    revocation.revoked.add(good.serial_number)
    with pytest.raises(AgentError) as info:
        select_recipient_certificates(BOB, sender_domain="sender.example", env=env, at=NOW)
    assert info.value.code is Code.NO_RECIPIENT_CERTIFICATE
    assert "signer-revoked" in info.value.detail
