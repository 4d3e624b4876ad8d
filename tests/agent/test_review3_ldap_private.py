"""A partner's ``_ldap._tcp`` SRV record is outside data: whoever builds the LDAP lookup (or the
discovery resolver) without saying otherwise gets one that never connects to loopback or
private addresses, so a partner's DNS cannot aim our connections inside our network (SSRF)."""

from __future__ import annotations

import secrets

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from agent.discovery import DiscoveryResolver
from agent.discovery.dnsclient import DnsClient, parse_nameservers
from agent.discovery.found import Outcome
from agent.discovery.ldapcert import LdapCertLookup
from agent.errors import AgentError
from tests.agent.trust.pki import authority, issue
from tests.support.bind import BindServer, Record, named, srv_record  # noqa: F401 - fixture
from tests.support.slapd import SlapdServer, slapd  # noqa: F401 - fixture

pytestmark = pytest.mark.services

SUFFIX = "dc=hisp,dc=test"


def publish(named: BindServer, ldap: SlapdServer) -> str:  # noqa: F811
    """A domain whose SRV record names our loopback slapd, holding a certificate for bob."""
    domain = f"r{secrets.token_hex(4)}.inside.test"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    certificate = issue(f"bob@{domain}", key=key, issuer=authority("Review3 Root", key=key),
                        emails=[f"bob@{domain}"])
    ldap.add_person(SUFFIX, mail=f"bob@{domain}", binary=[certificate])
    named.serve_zone(
        domain, [srv_record("_ldap._tcp", "dir", ldap.port), Record("dir", "A", "127.0.0.1")]
    )
    return domain


def search(named: BindServer, domain: str, **kw: bool) -> tuple[Outcome, str]:  # noqa: F811
    lookup = LdapCertLookup(client=DnsClient(servers=parse_nameservers(named.address)), **kw)
    session = lookup.session(domain)
    try:
        found = session.search(f"bob@{domain}")
    finally:
        session.close()
    return found.outcome, found.error or ""


def test_an_ldap_lookup_built_without_the_flag_never_contacts_loopback(
    named: BindServer, slapd: SlapdServer  # noqa: F811
) -> None:
    domain = publish(named, slapd)
    outcome, error = search(named, domain)
    assert outcome is Outcome.FAILED
    assert "not a public address, not contacted" in error
    # The same directory is reached when the caller asks for private networks explicitly, so
    # the refusal above is the address check and nothing else.
    assert search(named, domain, allow_private_networks=True)[0] is Outcome.FOUND


def test_a_discovery_resolver_built_without_the_flag_refuses_loopback_ldap(
    named: BindServer, slapd: SlapdServer  # noqa: F811
) -> None:
    domain = publish(named, slapd)
    resolver = DiscoveryResolver.build(nameservers=[named.address], timeout=3)
    ldap_levels = []
    with pytest.raises(AgentError) as raised:  # the LDAP levels failed: to be retried
        for level in resolver.candidates(f"bob@{domain}"):
            if level.source == "ldap":
                ldap_levels.append(level)
    assert not raised.value.permanent
    assert ldap_levels and all(
        level.error and "not a public address" in level.error and not level.certificates
        for level in ldap_levels
    )
