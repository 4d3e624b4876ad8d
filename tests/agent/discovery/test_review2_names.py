"""A dotted local part has two DNS spellings: ``john.smith.domain`` (the Direct reference
implementation: the ``@`` becomes a dot) and ``john\\.smith.domain`` (the RFC 1035 section 8
mailbox encoding, one label). A partner publishing at either is found, the first one first."""

from __future__ import annotations

import dns.name
import pytest

from agent.discovery import DiscoveryCache, MemoryCache
from agent.discovery.names import target_for
from agent.types import Binding
from tests.agent.discovery.conftest import Pki, Recording, make_resolver
from tests.agent.discovery.test_dcdt import der, select
from tests.support.bind import BindServer, cert_record

pytestmark = pytest.mark.services


def test_a_certificate_at_the_one_label_spelling_is_found_at_the_address_level(
    named: BindServer, pki: Pki
) -> None:
    address = "john.smith@onelabel.test"
    good = pki.leaf(address=address)
    named.serve_zone("onelabel.test", [cert_record("john\\.smith", der(good))])
    chosen, resolver = select(named, pki, address)
    assert chosen == (good,)
    assert resolver.pulled == [("dns", Binding.ADDRESS)]  # neither the domain nor LDAP asked


def test_the_reference_spelling_wins_over_the_other(named: BindServer, pki: Pki) -> None:
    address = "jane.doe@twolabel.test"
    reference, other = pki.leaf(address=address), pki.leaf(address=address)
    named.serve_zone(
        "twolabel.test",
        [cert_record("jane.doe", der(reference)), cert_record("jane\\.doe", der(other))],
    )
    chosen, _ = select(named, pki, address)
    assert chosen == (reference,)


def test_neither_spelling_published_is_nothing_with_both_names_noted(named: BindServer) -> None:
    named.serve_zone("neither.test", [])
    resolver = Recording(make_resolver(named.address, ldap=False))
    first = next(iter(resolver.candidates("ann.lee@neither.test")))
    assert first.certificates == () and first.error is None
    assert any("ann.lee.neither.test" in note for note in first.notes)
    escaped = dns.name.Name([b"ann.lee", b"neither", b"test", b""]).to_text()
    assert any(escaped in note for note in first.notes)


def test_a_find_at_the_one_label_spelling_is_kept_no_longer_than_the_first_names_absence(
    named: BindServer, pki: Pki
) -> None:
    # The zone's negative TTL is 60 s (SOA MINIMUM), the record's own TTL an hour: once a
    # minute has passed, a CERT published meanwhile at john.smith.<domain> must be asked for.
    address = "john.smith@negttl.test"
    named.serve_zone(
        "negttl.test", [cert_record("john\\.smith", der(pki.leaf(address=address)), ttl=3600)]
    )
    now = [0.0]
    cache = DiscoveryCache(store=MemoryCache(clock=lambda: now[0]))
    resolver = make_resolver(named.address, ldap=False, cache=cache)
    first = next(iter(resolver.candidates(address)))
    assert len(first.certificates) == 1
    target = target_for(address)
    key = {"domain": target.domain, "kind": "dns", "name": target.address_owner}
    assert cache.get(**key) is not None
    now[0] = 61.0
    assert cache.get(**key) is None


def test_a_dotted_local_part_too_long_for_one_label_still_has_the_first_spelling() -> None:
    local = "a" * 40 + "." + "b" * 23  # 64 characters: two labels fit, one label of 64 does not
    target = target_for(f"{local}@long.test")
    assert target.address_name.labels[:2] == (b"a" * 40, b"b" * 23)
    assert target.escaped_address_name is None
