"""The ONC Direct Certificate Discovery Tool (DCDT) discovery cases D1-D18, against a real BIND,
three real slapd instances and a real HTTP server, ending in the trust agent's selection of the
recipient certificates (or its reason for sending nothing).
"""

from __future__ import annotations

from datetime import UTC, datetime

import dns.message
import dns.name
import dns.query
import dns.rdatatype
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from agent.discovery import DnsClient, parse_nameservers
from agent.errors import AgentError, Code
from agent.trust import (
    HttpIssuerFetcher,
    HttpRevocationChecker,
    StaticTrustStore,
    select_recipient_certificates,
)
from agent.types import Binding, Environment
from tests.agent.discovery.conftest import SUFFIX, Pki, Recording, make_resolver
from tests.agent.trust.pki import NoKeys, Server, authority, closed_port_url, crl
from tests.support.bind import BindServer, Record, cert_record, srv_record
from tests.support.slapd import SlapdServer

SENDER_DOMAIN = "sender.test"
DNS_ADDRESS = [("dns", Binding.ADDRESS)]
DNS_BOTH = [("dns", Binding.ADDRESS), ("dns", Binding.DOMAIN)]
ALL_BUT_LAST = [*DNS_BOTH, ("ldap", Binding.ADDRESS)]
ALL_LEVELS = [*ALL_BUT_LAST, ("ldap", Binding.DOMAIN)]

pytestmark = pytest.mark.services


def env_for(resolver: Recording, pki: Pki) -> Environment:
    return Environment(
        keys=NoKeys(),
        certificates=resolver,
        anchors=StaticTrustStore(outgoing={SENDER_DOMAIN: [pki.root.certificate]}),
        revocation=HttpRevocationChecker(allow_private_networks=True, timeout=2, failure_ttl=0),
        issuers=HttpIssuerFetcher(allow_private_networks=True, timeout=2),
    )


def select(
    named: BindServer, pki: Pki, address: str, *, seed: int = 0
) -> tuple[tuple[x509.Certificate, ...], Recording]:
    resolver = Recording(make_resolver(named.address, seed=seed))
    chosen, anchor = select_recipient_certificates(
        address, sender_domain=SENDER_DOMAIN, env=env_for(resolver, pki), at=datetime.now(UTC)
    )
    assert anchor == pki.root.certificate
    return chosen, resolver


def refuse(named: BindServer, pki: Pki, address: str) -> tuple[AgentError, Recording]:
    resolver = Recording(make_resolver(named.address))
    with pytest.raises(AgentError) as caught:
        select_recipient_certificates(
            address, sender_domain=SENDER_DOMAIN, env=env_for(resolver, pki), at=datetime.now(UTC)
        )
    return caught.value, resolver


def ldap_records(*servers: tuple[str, int, int, int]) -> list[Record]:
    """SRV ``_ldap._tcp`` records (host label, port, priority, weight) and their A records."""
    records: list[Record] = []
    for label, port, priority, weight in servers:
        records.append(srv_record("_ldap._tcp", label, port, priority=priority, weight=weight))
        records.append(Record(label, "A", "127.0.0.1"))
    return records


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.DER)


def test_d1_address_bound_in_dns_wins_over_expired_background(
    named: BindServer, pki: Pki, ldap_servers: tuple[SlapdServer, ...]
) -> None:
    address, domain = "direct1@d1.dcdt.test", "d1.dcdt.test"
    good = pki.leaf(address=address)
    ldap = ldap_servers[0]
    ldap.add_person(SUFFIX, mail=address, smime=[pki.leaf(address=address, expired=True)])
    named.serve_zone(
        domain,
        [
            cert_record("direct1", der(good)),
            cert_record("@", der(pki.leaf(domain=domain, expired=True))),
            *ldap_records(("ldap1", ldap.port, 0, 0)),
        ],
    )
    chosen, resolver = select(named, pki, address)
    assert chosen == (good,)
    assert resolver.pulled == DNS_ADDRESS  # neither the domain CERT nor LDAP was asked


def test_d2_domain_bound_in_dns(
    named: BindServer, pki: Pki, ldap_servers: tuple[SlapdServer, ...]
) -> None:
    address, domain = "direct2@d2.dcdt.test", "d2.dcdt.test"
    good = pki.leaf(domain=domain)
    ldap = ldap_servers[0]
    ldap.add_person(SUFFIX, mail=address, smime=[pki.leaf(address=address, expired=True)])
    named.serve_zone(
        domain, [cert_record("@", der(good)), *ldap_records(("ldap1", ldap.port, 0, 0))]
    )
    chosen, resolver = select(named, pki, address)
    assert chosen == (good,)
    assert resolver.pulled == DNS_BOTH
    assert resolver.levels[0].certificates == ()
    assert resolver.levels[0].error is None


def test_d3_address_bound_in_ldap_found_through_srv(
    named: BindServer, pki: Pki, ldap_servers: tuple[SlapdServer, ...]
) -> None:
    address, domain = "direct3@d3.dcdt.test", "d3.dcdt.test"
    good = pki.leaf(address=address)
    ldap = ldap_servers[0]
    ldap.add_person(SUFFIX, mail=address, smime=[good])
    named.serve_zone(domain, ldap_records(("ldap1", ldap.port, 0, 0)))
    chosen, resolver = select(named, pki, address)
    assert chosen == (good,)
    assert resolver.pulled == ALL_BUT_LAST


def test_d4_domain_bound_in_ldap(
    named: BindServer, pki: Pki, ldap_servers: tuple[SlapdServer, ...]
) -> None:
    address, domain = "direct4@d4.dcdt.test", "d4.dcdt.test"
    good = pki.leaf(domain=domain)
    ldap = ldap_servers[1]
    ldap.add_person(SUFFIX, mail=domain, binary=[good])
    named.serve_zone(domain, ldap_records(("ldap2", ldap.port, 0, 0)))
    chosen, resolver = select(named, pki, address)
    assert chosen == (good,)
    assert resolver.pulled == ALL_LEVELS
    assert resolver.levels[2].certificates == ()


@pytest.mark.parametrize("case", ["d5", "d6", "d7", "d8"])
def test_d5_to_d8_only_an_expired_certificate_means_nothing_is_sent(
    case: str, named: BindServer, pki: Pki, ldap_servers: tuple[SlapdServer, ...]
) -> None:
    domain = f"{case}.dcdt.test"
    address = f"direct{case[1:]}@{domain}"
    ldap = ldap_servers[2]
    records = ldap_records(("ldap3", ldap.port, 0, 0))
    if case == "d5":  # DNS, address-bound
        expired = pki.leaf(address=address, expired=True)
        records.append(cert_record(address.split("@")[0], der(expired)))
    elif case == "d6":  # DNS, domain-bound
        expired = pki.leaf(domain=domain, expired=True)
        records.append(cert_record("@", der(expired)))
    elif case == "d7":  # LDAP, address-bound
        expired = pki.leaf(address=address, expired=True)
        ldap.add_person(SUFFIX, mail=address, smime=[expired])
    else:  # LDAP, domain-bound
        expired = pki.leaf(domain=domain, expired=True)
        ldap.add_person(SUFFIX, mail=domain, binary=[expired])
    named.serve_zone(domain, records)
    error, resolver = refuse(named, pki, address)
    assert error.code is Code.NO_RECIPIENT_CERTIFICATE
    assert f"serial {expired.serial_number:x}" in error.detail
    assert "signer-expired" in error.detail
    assert resolver.pulled == ALL_LEVELS


def test_d9_valid_and_expired_address_bound_in_dns_choose_the_valid_one(
    named: BindServer, pki: Pki
) -> None:
    address, domain = "direct9@d9.dcdt.test", "d9.dcdt.test"
    good = pki.leaf(address=address)
    expired = pki.leaf(address=address, expired=True)
    named.serve_zone(
        domain, [cert_record("direct9", der(expired)), cert_record("direct9", der(good))]
    )
    chosen, resolver = select(named, pki, address)
    assert chosen == (good,)
    assert set(resolver.levels[0].certificates) == {good, expired}


def test_d10_srv_priority_0_unreachable_fails_over_to_priority_1(
    named: BindServer, pki: Pki, ldap_servers: tuple[SlapdServer, ...]
) -> None:
    address, domain = "direct10@d10.dcdt.test", "d10.dcdt.test"
    good = pki.leaf(address=address)
    ldap = ldap_servers[1]
    ldap.add_person(SUFFIX, mail=address, smime=[good])
    dead = int(closed_port_url("/").rsplit(":", 1)[1].split("/")[0])
    named.serve_zone(domain, ldap_records(("dead", dead, 0, 0), ("ldap2", ldap.port, 1, 0)))
    chosen, resolver = select(named, pki, address)
    assert chosen == (good,)
    notes = " ".join(resolver.levels[2].notes)
    assert f"dead.{domain}:{dead}" in notes


def test_d11_no_cert_and_no_srv_records_means_nothing_found(named: BindServer, pki: Pki) -> None:
    address, domain = "direct11@d11.dcdt.test", "d11.dcdt.test"
    named.serve_zone(domain, [Record("www", "A", "127.0.0.1")])
    error, resolver = refuse(named, pki, address)
    assert error.code is Code.NO_RECIPIENT_CERTIFICATE
    assert resolver.pulled == ALL_LEVELS
    assert all(level.error is None and not level.certificates for level in resolver.levels)
    assert any("no SRV records" in note for note in resolver.levels[2].notes)


def test_d12_srv_only_to_an_unreachable_server(named: BindServer, pki: Pki) -> None:
    address, domain = "direct12@d12.dcdt.test", "d12.dcdt.test"
    dead = int(closed_port_url("/").rsplit(":", 1)[1].split("/")[0])
    named.serve_zone(domain, ldap_records(("dead", dead, 0, 0)))
    error, resolver = refuse(named, pki, address)
    assert error.code is Code.NO_RECIPIENT_CERTIFICATE
    ldap_levels = resolver.levels[2:]
    assert len(ldap_levels) == 2
    for level in ldap_levels:
        assert level.error is not None
        assert level.error.startswith("LDAP unreachable")
        assert f"dead.{domain}:{dead}" in level.error
    assert "LDAP unreachable" in error.detail


def test_d13_srv_to_a_directory_without_the_entry(
    named: BindServer, pki: Pki, ldap_servers: tuple[SlapdServer, ...]
) -> None:
    address, domain = "direct13@d13.dcdt.test", "d13.dcdt.test"
    ldap = ldap_servers[2]
    named.serve_zone(domain, ldap_records(("ldap3", ldap.port, 0, 0)))
    error, resolver = refuse(named, pki, address)
    assert error.code is Code.NO_RECIPIENT_CERTIFICATE
    for level in resolver.levels[2:]:
        assert level.error is None and level.certificates == ()
        assert any("no entry with mail=" in note for note in level.notes)


def test_d14_a_4096_bit_certificate_whose_answer_needs_tcp(named: BindServer, pki: Pki) -> None:
    address, domain = "direct14@d14.dcdt.test", "d14.dcdt.test"
    big_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    big_root = authority("DCDT Big Root", key=big_key)
    good = pki.leaf(address=address, key=big_key, issuer=big_root)
    named.serve_zone(domain, [cert_record("direct14", der(good))])
    # The answer does not fit a 1232-byte UDP payload: the server must set TC.
    query = dns.message.make_query(f"direct14.{domain}.", "CERT", use_edns=0, payload=1232)
    with pytest.raises(dns.message.Truncated):
        dns.query.udp(query, named.host, port=named.port, timeout=2, raise_on_truncation=True)
    client = DnsClient(servers=parse_nameservers(named.address), timeout=5)
    answer = client.query(dns.name.from_text(f"direct14.{domain}"), dns.rdatatype.CERT)
    assert answer.used_tcp
    resolver = Recording(make_resolver(named.address))
    env = env_for(resolver, pki)
    env = Environment(
        keys=env.keys,
        certificates=resolver,
        anchors=StaticTrustStore(outgoing={SENDER_DOMAIN: [big_root.certificate]}),
        revocation=env.revocation,
        issuers=env.issuers,
    )
    chosen, anchor = select_recipient_certificates(
        address, sender_domain=SENDER_DOMAIN, env=env, at=datetime.now(UTC)
    )
    assert chosen == (good,)
    assert anchor == big_root.certificate


def test_d15_the_lower_srv_priority_number_wins(
    named: BindServer, pki: Pki, ldap_servers: tuple[SlapdServer, ...]
) -> None:
    address, domain = "direct15@d15.dcdt.test", "d15.dcdt.test"
    first, second = pki.leaf(address=address), pki.leaf(address=address)
    ldap_servers[0].add_person(SUFFIX, mail=address, smime=[first])
    ldap_servers[1].add_person(SUFFIX, mail=address, smime=[second])
    named.serve_zone(
        domain,
        ldap_records(
            ("ldap2", ldap_servers[1].port, 1, 100), ("ldap1", ldap_servers[0].port, 0, 0)
        ),
    )
    for seed in range(5):
        chosen, _ = select(named, pki, address, seed=seed)
        assert chosen == (first,)


def test_d16_equal_priority_weight_100_beats_weight_0(
    named: BindServer, pki: Pki, ldap_servers: tuple[SlapdServer, ...]
) -> None:
    address, domain = "direct16@d16.dcdt.test", "d16.dcdt.test"
    light, heavy = pki.leaf(address=address), pki.leaf(address=address)
    ldap_servers[0].add_person(SUFFIX, mail=address, smime=[light])
    ldap_servers[2].add_person(SUFFIX, mail=address, smime=[heavy])
    named.serve_zone(
        domain,
        ldap_records(
            ("ldap1", ldap_servers[0].port, 0, 0), ("ldap3", ldap_servers[2].port, 0, 100)
        ),
    )
    for seed in range(10):
        chosen, _ = select(named, pki, address, seed=seed)
        assert chosen == (heavy,)


def test_d17_revoked_certificates_are_passed_over_for_the_good_one(
    named: BindServer, pki: Pki, http: Server
) -> None:
    address, domain = "direct17@d17.dcdt.test", "d17.dcdt.test"
    crl_url = http.url("/d17/root.crl")
    revoked_one = pki.leaf(address=address, crl_url=crl_url)
    revoked_two = pki.leaf(address=address, crl_url=crl_url)
    good = pki.leaf(address=address, crl_url=crl_url)
    http.serve("/d17/root.crl", crl(pki.root, revoked=[revoked_one, revoked_two]))
    invalid_domain = pki.leaf(domain=domain, expired=True)
    named.serve_zone(
        domain,
        [
            cert_record("direct17", der(revoked_one)),
            cert_record("direct17", der(good)),
            cert_record("direct17", der(revoked_two)),
            cert_record("@", der(invalid_domain)),
        ],
    )
    chosen, resolver = select(named, pki, address)
    assert chosen == (good,)
    assert resolver.pulled == DNS_ADDRESS


def test_d17_only_revoked_certificates_give_the_revoked_reason(
    named: BindServer, pki: Pki, http: Server
) -> None:
    address, domain = "direct17b@d17b.dcdt.test", "d17b.dcdt.test"
    crl_url = http.url("/d17b/root.crl")
    revoked = pki.leaf(address=address, crl_url=crl_url)
    http.serve("/d17b/root.crl", crl(pki.root, revoked=[revoked]))
    named.serve_zone(domain, [cert_record("direct17b", der(revoked))])
    error, _ = refuse(named, pki, address)
    assert error.code is Code.NO_RECIPIENT_CERTIFICATE
    assert "revoked" in error.detail


def test_d18_intermediate_reachable_only_through_aia(
    named: BindServer, pki: Pki, http: Server
) -> None:
    address, domain = "direct18@d18.dcdt.test", "d18.dcdt.test"
    intermediate_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    intermediate = authority("DCDT Intermediate", key=intermediate_key, issuer=pki.root)
    aia = http.serve("/d18/intermediate.cer", der(intermediate.certificate))
    good = pki.leaf(address=address, issuer=intermediate, ca_issuers_url=aia)
    named.serve_zone(domain, [cert_record("direct18", der(good))])
    chosen, resolver = select(named, pki, address)
    assert chosen == (good,)
    assert resolver.levels[0].certificates == (good,)  # the intermediate is not published
    assert http.hits.get("/d18/intermediate.cer", 0) >= 1


def test_d18_without_the_aia_intermediate_the_recipient_is_untrusted(
    named: BindServer, pki: Pki, http: Server
) -> None:
    address, domain = "direct18b@d18b.dcdt.test", "d18b.dcdt.test"
    intermediate_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    intermediate = authority("DCDT Lost Intermediate", key=intermediate_key, issuer=pki.root)
    leaf = pki.leaf(address=address, issuer=intermediate, ca_issuers_url=http.url("/d18b/gone"))
    named.serve_zone(domain, [cert_record("direct18b", der(leaf))])
    error, _ = refuse(named, pki, address)
    assert error.code is Code.UNTRUSTED_RECIPIENT


def test_random_source_only_orders_within_a_priority(
    named: BindServer, pki: Pki, ldap_servers: tuple[SlapdServer, ...]
) -> None:
    # Two weighted servers of equal priority: different seeds must reach both, so the weighted
    # pick is really random and not "first listed".
    address, domain = "spread@dspread.dcdt.test", "dspread.dcdt.test"
    a, b = pki.leaf(address=address), pki.leaf(address=address)
    ldap_servers[0].add_person(SUFFIX, mail=address, smime=[a])
    ldap_servers[1].add_person(SUFFIX, mail=address, smime=[b])
    named.serve_zone(
        domain,
        ldap_records(
            ("ldap1", ldap_servers[0].port, 0, 50), ("ldap2", ldap_servers[1].port, 0, 50)
        ),
    )
    seen = {select(named, pki, address, seed=seed)[0][0] for seed in range(12)}
    assert seen == {a, b}
