"""LDAP discovery details: naming contexts, attribute encodings, laziness."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from agent.discovery.dnsclient import DnsClient, parse_nameservers
from agent.discovery.found import Found, Outcome
from agent.discovery.ldapcert import MAX_ENTRIES, MAX_VALUE_BYTES, MAX_VALUES, LdapCertLookup
from tests.agent.discovery.conftest import SUFFIX, Pki
from tests.support.bind import BindServer, Record, srv_record
from tests.support.slapd import SlapdServer, slapd_server

pytestmark = pytest.mark.services


def _search(named: BindServer, ldap: SlapdServer, domain: str, *queries: str) -> list[Found]:
    """What one session finds for each of ``queries``, with the directory published through
    ``domain``'s SRV record."""
    named.serve_zone(
        domain, [srv_record("_ldap._tcp", "dir", ldap.port), Record("dir", "A", "127.0.0.1")]
    )
    lookup = LdapCertLookup(
        client=DnsClient(servers=parse_nameservers(named.address), timeout=3),
        connect_timeout=1,
        allow_private_networks=True,  # the test directory is on loopback
    )
    session = lookup.session(domain)
    try:
        return [session.search(query) for query in queries]
    finally:
        session.close()


def test_every_naming_context_is_searched_and_every_encoding_read(
    named: BindServer, pki: Pki
) -> None:
    address, domain = "carol@contexts.test", "contexts.test"
    in_first = pki.leaf(address=address)
    as_bundle, as_der, as_pem = (pki.leaf(address=address) for _ in range(3))
    with slapd_server(("o=first", "dc=second,dc=test")) as ldap:
        assert ldap.naming_contexts() == ["o=first", "dc=second,dc=test"]
        ldap.add_person("o=first", mail=address, binary=[in_first], uid="carol1")
        ldap.add_person(
            "dc=second,dc=test",
            mail=address,
            smime=[as_bundle],
            raw_smime=[
                as_der.public_bytes(Encoding.DER),
                pkcs7.serialize_certificates([as_pem], Encoding.PEM),
            ],
            uid="carol2",
        )
        found, nothing = _search(named, ldap, domain, address, domain)
    assert found.outcome is Outcome.FOUND
    assert set(found.certificates) == {in_first, as_bundle, as_der, as_pem}
    assert nothing.outcome is Outcome.NOTHING


def test_a_huge_ldap_entry_is_read_only_up_to_the_bounds(
    named: BindServer, pki: Pki, ldap_servers: tuple[SlapdServer, ...]
) -> None:
    address, domain = "many@hugeldap.test", "hugeldap.test"
    certs = [pki.leaf(address=address) for _ in range(MAX_VALUES + 4)]
    ldap_servers[2].add_person(SUFFIX, mail=address, binary=certs)
    [found] = _search(named, ldap_servers[2], domain, address)
    assert len(found.certificates) == MAX_VALUES
    assert any(f"only the first {MAX_VALUES} values read" in note for note in found.notes)


def test_too_many_matching_entries_are_cut_at_the_size_limit(
    named: BindServer, pki: Pki, ldap_servers: tuple[SlapdServer, ...]
) -> None:
    address, domain = "crowd@crowd.test", "crowd.test"
    cert = pki.leaf(address=address)
    for index in range(MAX_ENTRIES + 3):
        ldap_servers[1].add_person(SUFFIX, mail=address, binary=[cert], uid=f"crowd{index}")
    named.serve_zone(
        domain,
        [srv_record("_ldap._tcp", "dir", ldap_servers[1].port), Record("dir", "A", "127.0.0.1")],
    )
    lookup = LdapCertLookup(
        client=DnsClient(servers=parse_nameservers(named.address), timeout=3),
        allow_private_networks=True,  # the test directory is on loopback
    )
    session = lookup.session(domain)
    try:
        found = session.search(address)
    finally:
        session.close()
    assert found.certificates == (cert,)  # the same certificate, read once
    assert any(f"more than {MAX_ENTRIES} entries" in note for note in found.notes)


def test_a_naming_context_that_refuses_the_search_does_not_hide_the_others(
    named: BindServer, pki: Pki
) -> None:
    address, domain = "dave@refusing.test", "refusing.test"
    cert = pki.leaf(address=address)
    with slapd_server(("o=empty", "dc=second,dc=test")) as ldap:
        # A context listed in the root DSE whose base entry is gone (an emptied database, or
        # one hidden from anonymous users): slapd answers noSuchObject for it.
        admin = ldap.admin("o=empty")
        try:
            admin.delete("o=empty")
        finally:
            admin.unbind()
        ldap.add_person("dc=second,dc=test", mail=address, binary=[cert])
        found, nothing = _search(named, ldap, domain, address, domain)
    assert found.outcome is Outcome.FOUND
    assert found.certificates == (cert,)
    assert any("o=empty: search refused" in note for note in found.notes)
    assert nothing.outcome is Outcome.NOTHING  # the searchable context had no such entry


def test_when_every_naming_context_refuses_the_lookup_failed(named: BindServer) -> None:
    domain = "allrefused.test"
    with slapd_server(("o=gone",)) as ldap:
        admin = ldap.admin("o=gone")
        try:
            admin.delete("o=gone")
        finally:
            admin.unbind()
        named.serve_zone(
            domain, [srv_record("_ldap._tcp", "dir", ldap.port), Record("dir", "A", "127.0.0.1")]
        )
        lookup = LdapCertLookup(
            client=DnsClient(servers=parse_nameservers(named.address)),
            allow_private_networks=True,  # the test directory is on loopback
        )
        session = lookup.session(domain)
        try:
            found = session.search(f"erin@{domain}")
        finally:
            session.close()
    assert found.outcome is Outcome.FAILED  # nobody can say the entry is absent
    assert found.error is not None and "noSuchObject" in found.error


def test_a_huge_attribute_value_is_skipped_and_the_good_one_read(
    named: BindServer, pki: Pki, ldap_servers: tuple[SlapdServer, ...]
) -> None:
    address, domain = "big@hugevalue.test", "hugevalue.test"
    good = pki.leaf(address=address)
    huge = b"\x30\x83" + (MAX_VALUE_BYTES * 16).to_bytes(3, "big") + b"\x00" * MAX_VALUE_BYTES * 16
    ldap_servers[0].add_person(SUFFIX, mail=address, binary=[good], raw_smime=[huge])
    [found] = _search(named, ldap_servers[0], domain, address)
    assert found.certificates == (good,)
    assert any(f"{len(huge)} bytes, too large, skipped" in note for note in found.notes)
