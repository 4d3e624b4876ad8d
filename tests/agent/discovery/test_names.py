from __future__ import annotations

import pytest

from agent.discovery.dnsclient import Nameserver, parse_nameservers
from agent.discovery.names import AddressError, target_for


def test_address_name_replaces_the_at_sign_with_a_dot() -> None:
    target = target_for("John.Smith@Direct.Example.ORG")
    assert target.address_name.to_text() == "John.Smith.direct.example.org."
    assert target.domain_name.to_text() == "direct.example.org."
    assert target.domain == "direct.example.org"


def test_zone_file_metacharacters_in_the_local_part_stay_literal() -> None:
    target = target_for('we"ird\\name@example.org')
    assert target.address_name.labels[0] == b'we"ird\\name'


@pytest.mark.parametrize(
    "address",
    ["plain", "@example.org", "bob@", "a..b@example.org", "bob@localhost", "x" * 64 + "@a.org"],
)
def test_unusable_addresses_are_refused(address: str) -> None:
    with pytest.raises(AddressError):
        target_for(address)


def test_nameservers_parse_host_port_pairs() -> None:
    assert parse_nameservers("127.0.0.1:5353, 10.0.0.2 [::1]:54") == (
        Nameserver("127.0.0.1", 5353),
        Nameserver("10.0.0.2", 53),
        Nameserver("::1", 54),
    )
    assert parse_nameservers(["192.0.2.1:5300"]) == (Nameserver("192.0.2.1", 5300),)


@pytest.mark.parametrize("spec", ["", "127.0.0.1:0", "127.0.0.1:99999", "127.0.0.1:dns", ":53"])
def test_bad_nameserver_lists_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_nameservers(spec)


def test_an_internationalised_domain_is_named_by_its_a_labels() -> None:
    # One spelling for cache keys, flushes and the LDAP filter (mail is an IA5String).
    unicode, ascii = target_for("Bob@Bücher.Example"), target_for("Bob@xn--bcher-kva.example")
    assert unicode == ascii
    assert unicode.domain == "xn--bcher-kva.example"
    assert unicode.address == "Bob@xn--bcher-kva.example"
    assert unicode.address_owner == "Bob.xn--bcher-kva.example."
