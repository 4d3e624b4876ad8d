"""A route's target is checked when it is set: a host that is neither an address nor a host
name (a URL, a space, a stray separator) is refused with a clear error, not stored to defer
every message to the domain for days before failing them all."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from hisp.models import Route
from hisp.services import routes


@pytest.mark.parametrize(
    "target",
    [
        "smtp://mx.partner.example.net:25",
        "mx partner.example.net:25",
        "mx.partner.example.net:25:25",
        "mx..partner.example.net:25",
        "-mx.partner.example.net:25",
        "mx.partner.example.net\n:25",
        "mx.partner.example.net:\uff12\uff15",  # full-width digits
        ":25",
    ],
)
def test_route_target_that_is_no_host_is_refused(db, target):
    with pytest.raises(routes.RouteError, match="expected HOST:PORT or MX"):
        routes.set_route("partner.example.net", target)
    assert not Route.objects.exists()


@pytest.mark.parametrize(
    ("target", "host", "port"),
    [
        ("mx.partner.example.net:25", "mx.partner.example.net", 25),
        ("mx.partner.example.net.:2525", "mx.partner.example.net.", 2525),
        ("relay_1.internal:25", "relay_1.internal", 25),
        ("10.0.0.5:25", "10.0.0.5", 25),
        ("[2001:db8::25]:25", "2001:db8::25", 25),
        ("2001:db8::25:25", "2001:db8::25", 25),
        ("localhost:2526", "localhost", 2526),
        ("mx", "", 25),
    ],
)
def test_route_target_host_may_be_an_address_or_a_host_name(target, host, port):
    assert routes.parse_target(target) == (host, port)


def test_route_cli_reports_a_bad_target_in_one_line(db):
    with pytest.raises(CommandError, match="expected HOST:PORT or MX"):
        call_command("route", "set", "partner.example.net", "smtp://mx.partner.example.net:25")
    assert not Route.objects.exists()
