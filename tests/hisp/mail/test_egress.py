"""Egress routing: static routes first, then MX records through HISP_DNS_SERVERS (a real named)."""

from __future__ import annotations

import ipaddress

import pytest

from hisp import egress
from hisp.services import routes
from tests.support.bind import Record, bind_server


@pytest.fixture(scope="module")
def dns_server():
    zones = {
        "mx.example.test": [
            Record("@", "MX", "20 backup.mx.example.test."),
            Record("@", "MX", "10 primary.mx.example.test."),
            Record("primary", "A", "127.0.0.1"),
            Record("primary", "AAAA", "::1"),
            Record("backup", "A", "127.0.0.2"),
        ],
        "hostsfile.example.test": [Record("@", "MX", "10 localhost.")],
        "nomx.example.test": [Record("@", "A", "127.0.0.1")],
        "nullmx.example.test": [Record("@", "MX", "0 .")],
    }
    with bind_server(zones) as server:
        yield server


@pytest.fixture
def resolvers(settings, dns_server):
    settings.HISP_DNS_SERVERS = [dns_server.address]
    settings.HISP_EGRESS_INTERNAL_MX = True  # the exchangers here are loopback addresses


def test_mx_hosts_in_preference_order_each_address_in_turn(db, resolvers):
    # The exchangers' addresses come from the same DNS servers as the MX records.
    assert egress.hops("mx.example.test") == [
        egress.Hop("127.0.0.1", 25, name="primary.mx.example.test"),
        egress.Hop("::1", 25, name="primary.mx.example.test"),
        egress.Hop("127.0.0.2", 25, name="backup.mx.example.test"),
    ]


def test_an_exchanger_our_dns_does_not_know_is_resolved_by_the_system_resolver(db, resolvers):
    # localhost is in /etc/hosts; our named (no recursion) refuses to answer for it. The hops
    # carry its addresses: nothing is left for smtplib to look up (test_egress_resolution.py).
    found = egress.hops("hostsfile.example.test")
    assert found[0] == egress.Hop("127.0.0.1", 25, name="localhost")
    assert all(ipaddress.ip_address(hop.host) and hop.name == "localhost" for hop in found)


def test_route_overrides_mx(db, resolvers):
    routes.set_route("mx.example.test", "127.0.0.1:2600", require_tls=True)
    assert egress.hops("MX.example.test") == [egress.Hop("127.0.0.1", 2600, True)]


def test_domain_without_mx_uses_its_own_address(db, resolvers):
    assert egress.hops("nomx.example.test") == [
        egress.Hop("127.0.0.1", 25, name="nomx.example.test")
    ]


def test_null_mx_and_unknown_domain_fail_permanently(db, resolvers):
    # RFC 7505 section 4.3: X.1.10 for a null MX; X.1.2 for a domain that does not exist.
    for domain, status in (("nullmx.example.test", "5.1.10"), ("missing.mx.example.test", "5.1.2")):
        outcome = egress.send(wire=b"x\r\n", mail_from="a@b.test", recipient=f"x@{domain}")
        assert (outcome.result, outcome.status) == (egress.Result.PERMANENT, status)


def test_reply_codes_map_to_results():
    assert egress.Outcome.from_reply(250, "ok").result is egress.Result.SENT
    assert egress.Outcome.from_reply(451, "4.3.0 later").status == "4.3.0"
    assert egress.Outcome.from_reply(550, b"5.7.1 no").result is egress.Result.PERMANENT


def test_route_target_must_be_host_and_port(db):
    with pytest.raises(routes.RouteError):
        routes.set_route("partner.example.net", "mail.partner.example.net")
