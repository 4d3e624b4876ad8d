"""What a partner's DNS can make egress do, for real: a private named serves the partner's MX
and address records (HISP_DNS_SERVERS) and aiosmtpd listens on port 25 of loopback addresses
of its own. A null MX fails at once (RFC 7505); MX records aiming our egress at loopback,
private or link-local addresses (our own listener, internal services, cloud metadata) are not
followed unless the operator says so; an explicit Route still reaches any host."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from hisp import egress
from hisp.services import routes
from tests.support.bind import Record, bind_server

pytestmark = pytest.mark.usefixtures("no_idle_egress_sessions")

ZONE = "review-mx.example.test"
WIRE = b"Subject: review\r\n\r\nhello\r\n"
PUBLIC = "93.184.216.34"  # a global address: only looked at, never connected to here


@pytest.fixture
def partner_dns(settings, exchanger) -> Iterator[None]:
    address, _ = exchanger
    zones = {
        ZONE: [
            Record("null", "MX", "0 ."),
            Record("mixed", "MX", "0 ."),
            Record("mixed", "MX", f"10 mx.{ZONE}."),
            Record("mx", "A", address),
            Record("alias", "MX", f"10 alias-mx.{ZONE}."),
            Record("alias-mx", "CNAME", f"mx.{ZONE}."),
            Record("loop", "MX", f"10 mx.{ZONE}."),
            Record("inside", "MX", f"10 private.{ZONE}."),
            Record("inside", "MX", f"20 metadata.{ZONE}."),
            Record("inside", "MX", f"30 mapped.{ZONE}."),
            Record("inside", "MX", f"40 unspecified.{ZONE}."),
            Record("private", "A", "10.1.2.3"),
            Record("private", "AAAA", "fd00::25"),
            Record("metadata", "A", "169.254.169.254"),
            Record("mapped", "AAAA", "::ffff:127.0.0.1"),
            Record("unspecified", "A", "0.0.0.0"),
            Record("some", "MX", f"10 mx.{ZONE}."),
            Record("some", "MX", f"20 public.{ZONE}."),
            Record("public", "A", PUBLIC),
            Record("implicit", "A", "127.0.0.1"),
        ],
    }
    with bind_server(zones) as server:
        settings.HISP_DNS_SERVERS = [server.address]
        yield


def _send(domain: str) -> egress.Outcome:
    return egress.send(wire=WIRE, mail_from="a@hisp.example", recipient=f"doc@{domain}")


def test_null_mx_fails_at_once_with_5_1_10(db, partner_dns, exchanger) -> None:
    outcome = _send(f"null.{ZONE}")
    assert (outcome.result, outcome.status) == (egress.Result.PERMANENT, "5.1.10")
    assert "null MX" in outcome.detail


def test_null_mx_beside_a_real_exchanger_names_no_host_to_try(
    db, settings, partner_dns, exchanger
) -> None:
    settings.HISP_EGRESS_INTERNAL_MX = True
    address, sink = exchanger
    assert egress.hops(f"mixed.{ZONE}") == [egress.Hop(address, 25, name=f"mx.{ZONE}")]
    assert _send(f"mixed.{ZONE}").result is egress.Result.SENT
    assert sink.received == [([f"doc@mixed.{ZONE}"], WIRE)]


def test_exchanger_named_through_a_cname_is_followed(db, settings, partner_dns, exchanger):
    settings.HISP_EGRESS_INTERNAL_MX = True
    _, sink = exchanger
    assert _send(f"alias.{ZONE}").result is egress.Result.SENT
    assert len(sink.received) == 1


def test_mx_aiming_at_a_loopback_listener_is_not_followed(db, partner_dns, exchanger) -> None:
    _, sink = exchanger
    outcome = _send(f"loop.{ZONE}")
    assert (outcome.result, outcome.status) == (egress.Result.PERMANENT, "5.4.4")
    assert "internal addresses" in outcome.detail
    assert sink.received == []


def test_mx_aiming_at_private_link_local_or_unspecified_addresses_is_not_followed(
    db, partner_dns
) -> None:
    with pytest.raises(egress.OnlyInternal):
        egress.hops(f"inside.{ZONE}")
    with pytest.raises(egress.OnlyInternal):  # the implicit MX too
        egress.hops(f"implicit.{ZONE}")


def test_internal_exchangers_are_skipped_for_the_public_ones(db, partner_dns) -> None:
    assert egress.hops(f"some.{ZONE}") == [egress.Hop(PUBLIC, 25, name=f"public.{ZONE}")]


def test_a_route_is_the_operators_word_for_an_internal_host(db, partner_dns, exchanger) -> None:
    address, sink = exchanger
    routes.set_route(f"loop.{ZONE}", f"{address}:25")
    assert _send(f"loop.{ZONE}").result is egress.Result.SENT
    assert len(sink.received) == 1


def test_dns_that_refuses_to_answer_is_a_temporary_failure(db, partner_dns) -> None:
    outcome = _send("not-served.example.test")  # our named has no such zone: REFUSED
    assert (outcome.result, outcome.status) == (egress.Result.TEMPORARY, "4.4.3")


def test_exchangers_of_equal_preference_share_the_load(db, settings) -> None:
    # RFC 5321 section 5.1: picked at random among equals, always after the preferred ones.
    zones = {
        ZONE: [
            Record("balanced", "MX", f"5 first.{ZONE}."),
            Record("balanced", "MX", f"10 a.{ZONE}."),
            Record("balanced", "MX", f"10 b.{ZONE}."),
            Record("first", "A", "93.184.216.1"),
            Record("a", "A", "93.184.216.2"),
            Record("b", "A", "93.184.216.3"),
        ]
    }
    with bind_server(zones) as server:
        settings.HISP_DNS_SERVERS = [server.address]
        orders = {tuple(hop.host for hop in egress.hops(f"balanced.{ZONE}")) for _ in range(40)}
    assert orders == {
        ("93.184.216.1", "93.184.216.2", "93.184.216.3"),
        ("93.184.216.1", "93.184.216.3", "93.184.216.2"),
    }


def test_a_huge_mx_set_is_cut_to_the_hop_bound_quickly(db, settings) -> None:
    # 100 records: the most BIND serves in one set (max-records-per-type).
    records = [Record("huge", "MX", f"{n} mx{n}.{ZONE}.") for n in range(100)]
    records += [Record(f"mx{n}", "A", "10.9.0.1") for n in range(100)]  # internal, all of them
    records += [Record("wide", "MX", f"{n} mx{n}.{ZONE}.") for n in range(100, 200)]
    records += [Record(f"mx{n}", "A", f"93.184.216.{n - 99}") for n in range(100, 200)]
    with bind_server({ZONE: records}) as server:
        settings.HISP_DNS_SERVERS = [server.address]
        start = time.monotonic()
        assert len(egress.hops(f"wide.{ZONE}")) == egress.MAX_HOPS
        with pytest.raises(egress.OnlyInternal):
            egress.hops(f"huge.{ZONE}")
        elapsed = time.monotonic() - start
    assert elapsed < 5
