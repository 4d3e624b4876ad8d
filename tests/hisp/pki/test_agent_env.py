"""The agent's adapters over the database: keys, anchors, recipient certificates, the whole
environment driving agent.protect/unprotect between two hosted domains."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from agent.errors import AgentError, Code
from agent.protect import protect
from agent.types import Binding, Direction
from agent.unprotect import unprotect
from hisp.agent_env import (
    DatabaseCertificateResolver,
    DatabaseKeyStore,
    DatabaseTrustStore,
    DjangoByteCache,
    build_environment,
)
from hisp.certificates import fingerprint, load
from hisp.models import Address, Certificate, Domain, PrivateKey
from hisp.services import identity, pki, trust


def _fps(identities: Any) -> list[str]:
    return [fingerprint(i.certificate) for i in identities]


def test_signing_identities_are_address_bound_first_then_domain(alice: Address,
                                                               provider: Domain) -> None:
    identities = DatabaseKeyStore().signing_identities("alice@HOSPITAL.example.org")
    assert [i.binding for i in identities] == [Binding.ADDRESS, Binding.DOMAIN]
    assert identities[0].certificate == load(Certificate.objects.get(address=alice))


def test_address_without_own_certificate_signs_with_the_domain_certificate(bob: Address) -> None:
    (only,) = DatabaseKeyStore().signing_identities(bob.address)
    assert only.binding == Binding.DOMAIN


def test_no_identities_for_addresses_not_hosted(alice: Address) -> None:
    store = DatabaseKeyStore()
    assert store.signing_identities("mallory@hospital.example.org") == []
    assert store.decryption_identities(["x@elsewhere.example.net"]) == []


def test_keys_are_unwrapped_only_when_the_agent_asks(alice: Address,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import hisp.agent_env as module

    calls: list[int] = []
    real = module.unwrap_private_key

    def counting(row: PrivateKey, **kwargs: Any) -> Any:
        calls.append(row.pk)
        return real(row, **kwargs)

    monkeypatch.setattr(module, "unwrap_private_key", counting)
    identities = DatabaseKeyStore().decryption_identities([alice.address])
    assert len(identities) == 2 and calls == []
    key = identities[0].private_key()
    assert calls == [Certificate.objects.get(address=alice).private_key_id]
    assert key.public_key().public_numbers() == identities[0].certificate.public_key(
        ).public_numbers()
    assert "PRIVATE" not in repr(identities[0])


def test_decryption_identities_include_superseded_and_revoked_keys(alice: Address) -> None:
    old = Certificate.objects.get(address=alice)
    new = pki.renew(old)
    pki.revoke(new)
    fps = _fps(DatabaseKeyStore().decryption_identities([alice.address]))
    assert old.fingerprint_sha256 in fps and new.fingerprint_sha256 in fps


def test_trust_store_separates_directions(provider: Domain) -> None:
    partner = identity.add_domain("partner.example.net")
    trust.import_anchors(trust.export_anchor(partner.name).pem, domain=provider.name,
                         incoming=True, outgoing=False)
    store = DatabaseTrustStore()
    partner_ca = load(partner.issuing_ca)
    assert partner_ca in store.anchors(provider.name, Direction.INCOMING)
    assert partner_ca not in store.anchors(provider.name, Direction.OUTGOING)
    assert load(provider.issuing_ca) in store.anchors(provider.name, Direction.OUTGOING)
    assert store.anchors("unknown.example", Direction.INCOMING) == []


def test_resolver_gives_hosted_levels_address_then_domain(alice: Address) -> None:
    levels = list(DatabaseCertificateResolver().candidates(alice.address))
    assert [(lv.source, lv.binding) for lv in levels] == [
        ("hosted", Binding.ADDRESS), ("hosted", Binding.DOMAIN)]
    assert len(levels[0].certificates) == 1 and len(levels[1].certificates) == 1


def test_resolver_skips_revoked_and_superseded_hosted_certificates(alice: Address) -> None:
    old = Certificate.objects.get(address=alice)
    new = pki.renew(old)
    (address_level, _domain) = DatabaseCertificateResolver().candidates(alice.address)
    assert [fingerprint(c) for c in address_level.certificates] == [new.fingerprint_sha256]
    pki.revoke(new)
    (address_level, _domain) = DatabaseCertificateResolver().candidates(alice.address)
    assert address_level.certificates == ()


def test_resolver_uses_imported_then_discovery_for_other_domains(provider: Domain) -> None:
    class Discovery:
        asked: list[str] = []

        def candidates(self, address: str) -> Any:
            self.asked.append(address)
            return iter(())

    discovery = Discovery()
    levels = list(DatabaseCertificateResolver(discovery=discovery).candidates("x@far.example"))
    assert levels == [] and discovery.asked == ["x@far.example"]


def test_django_byte_cache_round_trips_bytes(db: None) -> None:
    cache = DjangoByteCache()
    cache.set("revocation:http://example/crl", b"\x00\x01", 60)
    assert cache.get("revocation:http://example/crl") == b"\x00\x01"
    cache.set("zero", b"x", 0)
    assert cache.get("zero") is None


MESSAGE = (b"From: {sender}\r\nTo: {rcpt}\r\nSubject: hello\r\nMessage-ID: <m1@x>\r\n"
           b"Date: Tue, 24 Nov 2026 05:00:00 +0000\r\n\r\nhello across HISP domains\r\n")


def _message(sender: str, rcpt: str) -> bytes:
    return MESSAGE.replace(b"{sender}", sender.encode()).replace(b"{rcpt}", rcpt.encode())


def test_environment_protects_and_unprotects_between_domains_after_anchor_exchange(
    alice: Address,
) -> None:
    other = identity.add_domain("clinic.example.net")
    carol = identity.add_address("carol@clinic.example.net", address_cert=True)
    env = build_environment()
    now = timezone.now()
    raw = _message(alice.address, carol.address)
    # Without the anchor exchange the recipient's certificate is not trusted.
    refused = protect(raw, sender=alice.address, recipients=[carol.address], env=env, at=now)
    assert refused.message is None
    assert refused.rejected[carol.address].code == Code.UNTRUSTED_RECIPIENT
    trust.import_anchors(trust.export_anchor(other.name).pem, domain="hospital.example.org")
    trust.import_anchors(trust.export_anchor("hospital.example.org").pem, domain=other.name)
    sent = protect(raw, sender=alice.address, recipients=[carol.address], env=env, at=now)
    assert sent.message is not None
    opened = unprotect(sent.message, recipients=[carol.address], env=env, at=now)
    assert b"hello across HISP domains" in opened.message
    assert opened.delivered[carol.address] == load(Domain.objects.get(
        name="hospital.example.org").issuing_ca)


def test_environment_refuses_a_revoked_signer(alice: Address) -> None:
    other = identity.add_domain("clinic.example.net")
    carol = identity.add_address("carol@clinic.example.net", address_cert=True)
    trust.import_anchors(trust.export_anchor(other.name).pem, domain="hospital.example.org")
    trust.import_anchors(trust.export_anchor("hospital.example.org").pem, domain=other.name)
    env = build_environment()
    sent = protect(_message(alice.address, carol.address), sender=alice.address,
                   recipients=[carol.address], env=env, at=timezone.now())
    pki.revoke(Certificate.objects.get(address=alice))
    opened = unprotect(sent.message, recipients=[carol.address], env=env, at=timezone.now())
    assert opened.delivered == {}
    assert opened.rejected[carol.address].code == Code.SIGNER_REVOKED


def test_no_sender_key_for_an_unknown_sender(provider: Domain) -> None:
    env = build_environment()
    with pytest.raises(AgentError) as caught:
        protect(_message("ghost@hospital.example.org", "x@y.example"),
                sender="ghost@hospital.example.org", recipients=["x@y.example"], env=env,
                at=timezone.now())
    assert caught.value.code == Code.NO_SENDER_KEY


def test_unwrapped_keys_are_kept_briefly_then_unwrapped_again(alice: Address,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import hisp.agent_env as module

    now = [0.0]
    monkeypatch.setattr(module, "_keys", module._Expiring(
        ttl=module.KEY_TTL, max_entries=4, clock=lambda: now[0]))
    calls: list[int] = []
    real = module.unwrap_private_key

    def counting(row: PrivateKey, **kwargs: Any) -> Any:
        calls.append(row.pk)
        return real(row, **kwargs)

    monkeypatch.setattr(module, "unwrap_private_key", counting)
    identity = DatabaseKeyStore().signing_identities(alice.address)[0]
    first = identity.private_key()
    assert identity.private_key() is first and len(calls) == 1
    assert "PRIVATE" not in repr(module._keys) and "RSA" not in repr(module._keys)
    import threading

    assert "hisp-key-expiry" in {t.name for t in threading.enumerate()}
    now[0] += module.KEY_TTL + 1
    identity.private_key()
    assert len(calls) == 2


def test_expired_keys_leave_memory_without_further_use(db: None) -> None:
    from hisp.agent_env import _Expiring

    now = [0.0]
    keys: _Expiring[str] = _Expiring(ttl=60, max_entries=8, clock=lambda: now[0])
    keys.put("a", "secret")
    now[0] = 61
    keys.purge()
    assert "1 entries" not in repr(keys) and repr(keys).endswith("of 0 entries>")


def test_key_cache_is_bounded_and_can_be_turned_off(db: None) -> None:
    from hisp.agent_env import _Expiring

    bounded: _Expiring[int] = _Expiring(ttl=60, max_entries=2, clock=lambda: 0.0)
    for n in range(3):
        bounded.put(str(n), n)
    assert (bounded.get("0"), bounded.get("1"), bounded.get("2")) == (None, 1, 2)
    off: _Expiring[int] = _Expiring(ttl=0, max_entries=2)
    off.put("x", 1)
    assert off.get("x") is None


def test_foreign_issuers_are_remembered_but_own_revocations_are_read_every_time(
    alice: Address, provider: Domain
) -> None:
    from agent.types import RevocationStatus
    from hisp.agent_env import HostedFirstRevocationChecker, _foreign_issuers

    class Fallback:
        calls = 0

        def status(self, *args: object) -> RevocationStatus:
            self.calls += 1
            return RevocationStatus.NOT_CHECKED

    fallback = Fallback()
    checker = HostedFirstRevocationChecker(fallback=fallback)
    identity.add_domain("clinic.example.net")
    carol = identity.add_address("carol@clinic.example.net", address_cert=True)
    leaf = Certificate.objects.get(address=alice, binding=Certificate.Binding.ADDRESS)
    now = timezone.now()
    assert checker.status(load(leaf), load(leaf.issued_by), now) == RevocationStatus.GOOD
    pki.revoke(leaf)
    assert checker.status(load(leaf), load(leaf.issued_by), timezone.now()) == \
        RevocationStatus.REVOKED
    assert fallback.calls == 0
    # A certificate from an issuer that is not ours goes to the fallback, and the issuer is
    # remembered as foreign (here: carol's certificate presented with alice's as "issuer").
    carol_cert = load(Certificate.objects.get(address=carol, binding=Certificate.Binding.ADDRESS))
    assert checker.status(carol_cert, load(leaf), now) == RevocationStatus.NOT_CHECKED
    assert _foreign_issuers.get(leaf.fingerprint_sha256)


# --- Rows remembered per process, invalidated by the shared PKI stamp (docs/pki.md) ----------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def other_worker(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A long-lived worker's row cache with its own clock. ``writing()`` runs a change as if in
    another process: the writer's in-process clear must not reach this cache, only the stamp."""
    import contextlib

    import hisp.agent_env as module

    clock = _Clock()
    cache = module._VersionedRows(clock=clock)
    monkeypatch.setattr(module, "_rows_cache", cache)

    @contextlib.contextmanager
    def writing() -> Any:
        monkeypatch.setattr(module, "_rows_cache", module._VersionedRows())
        yield
        monkeypatch.setattr(module, "_rows_cache", cache)

    return clock, writing


def _after_bound(clock: _Clock) -> None:
    import hisp.agent_env as module

    clock.now += module.PKI_VERSION_CHECK + 0.01


def test_revocation_reaches_a_long_lived_worker_within_the_bound(alice: Address,
                                                                 other_worker: Any) -> None:
    clock, writing = other_worker
    store = DatabaseKeyStore()
    own = Certificate.objects.get(address=alice)
    assert own.fingerprint_sha256 in _fps(store.signing_identities(alice.address))
    with writing():
        pki.revoke(own)
    # Still remembered inside the bound: the cache is really in use.
    assert own.fingerprint_sha256 in _fps(store.signing_identities(alice.address))
    _after_bound(clock)
    after = store.signing_identities(alice.address)
    assert own.fingerprint_sha256 not in _fps(after)
    assert [i.binding for i in after] == [Binding.DOMAIN]


def test_superseded_certificate_stops_signing_within_the_bound(alice: Address,
                                                               other_worker: Any) -> None:
    clock, writing = other_worker
    store = DatabaseKeyStore()
    old = Certificate.objects.get(address=alice)
    assert old.fingerprint_sha256 in _fps(store.signing_identities(alice.address))
    with writing():
        new = pki.renew(old)
    _after_bound(clock)
    fps = _fps(store.signing_identities(alice.address))
    assert fps[0] == new.fingerprint_sha256 and old.fingerprint_sha256 not in fps
    # The old key still opens mail encrypted to it before the renewal.
    assert old.fingerprint_sha256 in _fps(store.decryption_identities([alice.address]))


def test_removed_anchor_stops_counting_within_the_bound(provider: Domain,
                                                        other_worker: Any) -> None:
    from hisp.models import TrustAnchor

    clock, writing = other_worker
    partner = identity.add_domain("partner.example.net")
    trust.import_anchors(trust.export_anchor(partner.name).pem, domain=provider.name,
                         incoming=True, outgoing=True)
    store = DatabaseTrustStore()
    partner_ca = load(partner.issuing_ca)
    assert partner_ca in store.anchors(provider.name, Direction.INCOMING)
    with writing():
        TrustAnchor.objects.filter(domain=provider, certificate=partner.issuing_ca).delete()
    assert partner_ca in store.anchors(provider.name, Direction.INCOMING)
    _after_bound(clock)
    assert partner_ca not in store.anchors(provider.name, Direction.INCOMING)
    assert load(provider.issuing_ca) in store.anchors(provider.name, Direction.INCOMING)


def test_cached_signing_rows_still_honour_the_validity_period(alice: Address) -> None:
    from datetime import timedelta

    own = load(Certificate.objects.get(address=alice))
    store = DatabaseKeyStore()
    assert own in [i.certificate for i in store.signing_identities(alice.address)]
    later = DatabaseKeyStore(clock=lambda: own.not_valid_after_utc + timedelta(seconds=1))
    assert own not in [i.certificate for i in later.signing_identities(alice.address)]


def test_nothing_is_cached_without_a_readable_stamp(alice: Address,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import hisp.agent_env as module

    monkeypatch.setattr(module, "_rows_cache", module._VersionedRows())
    monkeypatch.setattr(module, "_read_version", lambda: None)
    store = DatabaseKeyStore()
    own = Certificate.objects.get(address=alice)
    assert own.fingerprint_sha256 in _fps(store.signing_identities(alice.address))
    Certificate.objects.filter(pk=own.pk).update(revoked_at=timezone.now())  # no stamp bump
    assert own.fingerprint_sha256 not in _fps(store.signing_identities(alice.address))
