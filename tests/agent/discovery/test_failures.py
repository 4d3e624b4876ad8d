"""A lookup that failed is not a lookup that found nothing: after a SERVFAIL from a real BIND, a
resolver that never answers, an unreachable directory or an IPKIX URL that could not be read,
sending waits and retries (a transient error), while NXDOMAIN and unusable certificates are
final. And among several published records the unusable ones are passed over.
"""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent.discovery import CachePolicy, DiscoveryCache, MemoryCache
from agent.discovery.found import Outcome
from agent.errors import AgentError, Code
from agent.trust import select_recipient_certificates
from agent.types import Binding
from tests.agent.discovery.conftest import Pki, Recording, make_resolver
from tests.agent.discovery.hostile import silent_udp_port
from tests.agent.discovery.test_dcdt import (
    SENDER_DOMAIN,
    der,
    env_for,
    ldap_records,
    refuse,
    select,
)
from tests.agent.trust.pki import Server, closed_port_url, crl
from tests.support.bind import BindServer, Record, cert_record, ipkix_record

pytestmark = pytest.mark.services


def serve_unloadable_zone(named: BindServer, origin: str) -> None:
    """A zone named is configured for but cannot load (a bad record, as after a faulty edit):
    named answers SERVFAIL for every name in it, as a partner's DNS does mid-incident."""
    named.zones[origin] = [Record("bob", "CERT", "PKIX 0 0 !!!not-base64")]
    named._write_zone(origin)
    named._write_config()
    assert named.process is not None
    named.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while named.query(f"bob.{origin}.", "CERT").rcode() != 2:  # SERVFAIL
        assert time.monotonic() < deadline, named.log[-2000:]
        time.sleep(0.05)


def test_servfail_from_the_partners_dns_makes_sending_wait_not_fail(
    named: BindServer, pki: Pki
) -> None:
    serve_unloadable_zone(named, "servfail.test")
    error, resolver = refuse(named, pki, "bob@servfail.test")
    assert error.code is Code.NO_RECIPIENT_CERTIFICATE
    assert error.permanent is False
    assert "discovery incomplete" in error.detail and "SERVFAIL" in error.detail
    assert resolver.levels[0].error is not None and "SERVFAIL" in resolver.levels[0].error


def test_a_resolver_that_never_answers_makes_sending_wait_not_fail(pki: Pki) -> None:
    with silent_udp_port() as port:
        resolver = Recording(make_resolver(f"127.0.0.1:{port}", timeout=0.3))
        with pytest.raises(AgentError) as caught:
            select_recipient_certificates(
                "bob@silent.test",
                sender_domain=SENDER_DOMAIN,
                env=env_for(resolver, pki),
                at=datetime.now(UTC),
            )
    assert caught.value.permanent is False
    assert "timed out" in caught.value.detail
    assert all(level.error for level in resolver.levels)


def test_nxdomain_everywhere_is_a_final_no_certificate(named: BindServer, pki: Pki) -> None:
    named.serve_zone("nothing.test", [])
    error, resolver = refuse(named, pki, "bob@nothing.test")
    assert error.code is Code.NO_RECIPIENT_CERTIFICATE
    assert error.permanent is True
    assert all(level.error is None for level in resolver.levels)


def test_only_an_expired_certificate_is_final_too(named: BindServer, pki: Pki) -> None:
    expired = pki.leaf(address="bob@expiredonly.test", expired=True)
    named.serve_zone("expiredonly.test", [cert_record("bob", der(expired))])
    error, _ = refuse(named, pki, "bob@expiredonly.test")
    assert error.permanent is True
    assert "signer-expired" in error.detail


def test_an_unreachable_directory_makes_sending_wait(named: BindServer, pki: Pki) -> None:
    dead = int(closed_port_url("/").rsplit(":", 1)[1].split("/")[0])
    named.serve_zone("deadldap.test", ldap_records(("dead", dead, 0, 0)))
    error, _ = refuse(named, pki, "bob@deadldap.test")
    assert error.code is Code.NO_RECIPIENT_CERTIFICATE
    assert error.permanent is False
    assert "LDAP unreachable" in error.detail


def test_a_usable_certificate_at_a_later_level_still_wins_over_a_failed_one(
    named: BindServer, pki: Pki
) -> None:
    # The address-bound lookup fails (its name is in a zone that does not load); the domain's
    # own zone answers with a usable domain-bound certificate.
    good = pki.leaf(domain="partly.test")
    named.serve_zone("partly.test", [cert_record("@", der(good))])
    serve_unloadable_zone(named, "bob.partly.test")
    chosen, resolver = select(named, pki, "bob@partly.test")
    assert chosen == (good,)
    assert resolver.levels[0].error is not None
    assert resolver.pulled == [("dns", Binding.ADDRESS), ("dns", Binding.DOMAIN)]


def test_an_ipkix_url_that_cannot_be_read_makes_the_lookup_incomplete(
    named: BindServer, pki: Pki, http: Server
) -> None:
    # One record inline (expired), the other behind a URL that answers 404 for now: the good
    # certificate may be the unread one, so this is neither cached for the DNS TTL nor final.
    address = "bob@ipkixpartial.test"
    expired = pki.leaf(address=address, expired=True)
    named.serve_zone(
        "ipkixpartial.test",
        [
            cert_record("bob", der(expired), ttl=3600),
            ipkix_record("bob", http.url("/partial/missing.cer"), ttl=3600),
        ],
    )
    cache = DiscoveryCache(store=MemoryCache(), policy=CachePolicy(failure_ttl=30))
    resolver = make_resolver(named.address, cache=cache)
    level = next(iter(resolver.candidates(address)))
    assert level.certificates == (expired,)
    assert level.error is not None and "IPKIX fetch failed" in level.error
    stored = cache.get(domain="ipkixpartial.test", kind="dns", name="bob.ipkixpartial.test.")
    assert stored is not None and stored.outcome is Outcome.FAILED
    assert cache.policy.ttl_for("dns", stored) == 30

    error, _ = refuse(named, pki, address)
    assert error.permanent is False

    good = pki.leaf(address=address)
    http.serve("/partial/missing.cer", der(good))
    chosen, _ = select(named, pki, address)
    assert chosen == (good,)


def test_unusable_records_beside_the_good_one_are_passed_over(
    named: BindServer, pki: Pki, http: Server
) -> None:
    address, domain = "mixed@mixed.test", "mixed.test"
    crl_url = http.url("/mixed/root.crl")
    good = pki.leaf(address=address, crl_url=crl_url)
    revoked = pki.leaf(address=address, crl_url=crl_url)
    http.serve("/mixed/root.crl", crl(pki.root, revoked=[revoked]))
    unusable = [
        pki.leaf(address=address, expired=True),
        pki.leaf(address="someone-else@mixed.test"),  # bound to another address
        pki.leaf(address=address, eku=[ExtendedKeyUsageOID.SERVER_AUTH]),  # not for e-mail
        pki.leaf(address=address, key_usage="sign"),  # cannot encipher a key
        revoked,
    ]
    named.serve_zone(domain, [cert_record("mixed", der(c)) for c in [*unusable, good]])
    chosen, resolver = select(named, pki, address)
    assert chosen == (good,)
    assert set(resolver.levels[0].certificates) == {*unusable, good}
    assert resolver.pulled == [("dns", Binding.ADDRESS)]


def test_an_ipkix_body_over_the_size_bound_is_not_read_and_not_final(
    named: BindServer, pki: Pki, http: Server
) -> None:
    url = http.serve("/oversize/bob.cer", b"\x30" * (300 * 1024))  # past the 256 KiB bound
    named.serve_zone("oversize.test", [ipkix_record("bob", url)])
    level = next(iter(make_resolver(named.address).candidates("bob@oversize.test")))
    assert level.certificates == ()
    assert level.error is not None and "exceeds" in level.error
    error, _ = refuse(named, pki, "bob@oversize.test")
    assert error.permanent is False
