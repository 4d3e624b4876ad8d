"""Delivery through MX records for real: a private named answers the MX and A queries
(HISP_DNS_SERVERS) and an SMTP server listens on port 25 of a loopback address of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hisp import egress
from tests.hisp.mail.exchangers import loopback
from tests.support.bind import Record, bind_server

DOMAIN = "partner-mx.example.test"


@pytest.fixture
def mx_dns(settings, exchanger) -> Iterator[str]:
    address, _ = exchanger
    dead = loopback()  # nothing listens there: a preferred MX that refuses connections
    zones = {
        DOMAIN: [
            Record("@", "MX", f"5 down.{DOMAIN}."),
            Record("@", "MX", f"10 mx.{DOMAIN}."),
            Record("down", "A", dead),
            Record("mx", "A", address),
        ],
    }
    with bind_server(zones) as server:
        settings.HISP_DNS_SERVERS = [server.address]
        settings.HISP_EGRESS_INTERNAL_MX = True  # the exchangers here are loopback addresses
        yield dead


def test_mail_goes_to_the_exchangers_address_after_a_refusing_preferred_one(
    db, exchanger, mx_dns
) -> None:
    address, sink = exchanger
    hops = egress.hops(DOMAIN)
    assert hops == [
        egress.Hop(mx_dns, 25, name=f"down.{DOMAIN}"),
        egress.Hop(address, 25, name=f"mx.{DOMAIN}"),
    ]
    wire = b"Subject: by MX\r\n\r\nhello\r\n"
    outcome = egress.send(wire=wire, mail_from="a@hisp.example", recipient=f"doc@{DOMAIN}")
    assert outcome.result is egress.Result.SENT, outcome
    assert sink.received == [([f"doc@{DOMAIN}"], wire)]


def test_an_mx_route_applies_its_policy_to_every_exchanger(db, exchanger, mx_dns) -> None:
    from hisp.services import routes

    address, sink = exchanger
    routes.set_route(DOMAIN.upper(), "mx", require_tls=True)
    assert egress.hops(DOMAIN) == [
        egress.Hop(mx_dns, 25, require_tls=True, name=f"down.{DOMAIN}"),
        egress.Hop(address, 25, require_tls=True, name=f"mx.{DOMAIN}"),
    ]
    # The exchanger offers no STARTTLS: required, so nothing is sent in the clear.
    outcome = egress.send(wire=b"Subject: x\r\n\r\nhi\r\n", mail_from="a@hisp.example",
                          recipient=f"doc@{DOMAIN}")
    assert outcome.result is egress.Result.TEMPORARY, outcome
    assert sink.received == []
