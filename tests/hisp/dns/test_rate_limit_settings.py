"""The responder's UDP response-rate limits are settings (HISP_DNS_RATE_LIMIT, _BURST, _SLIP,
_NETWORKS), not the constants they were: changed, the responder rundns starts (DnsServer
without a limiter of its own) answers a flood differently, over real UDP sockets. A rate or
burst of 0 is no way to turn the limit off: it stops the start naming the variable."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings

from hisp.dns import ratelimit
from hisp.models import Address
from tests.hisp.dns.conftest import running_responder
from tests.hisp.dns.test_review3_rate_limit import ask_udp, flood, outcome
from tests.hisp.mail.test_smtp_review3_limits import start_outcomes

pytestmark = pytest.mark.django_db(transaction=True)


def _limits(settings, *, rate: float = 0.001, burst: int, slip: int, networks: int = 16384):
    settings.HISP_DNS_RATE_LIMIT = rate  # 0.001: no refill within the test
    settings.HISP_DNS_RATE_BURST = burst
    settings.HISP_DNS_RATE_SLIP = slip
    settings.HISP_DNS_RATE_NETWORKS = networks


def test_the_defaults_are_the_rate_limiters_own():
    assert django_settings.HISP_DNS_RATE_LIMIT == ratelimit.DEFAULT_RATE
    assert django_settings.HISP_DNS_RATE_BURST == ratelimit.DEFAULT_BURST
    assert django_settings.HISP_DNS_RATE_SLIP == ratelimit.DEFAULT_SLIP
    assert django_settings.HISP_DNS_RATE_NETWORKS == ratelimit.MAX_NETWORKS


def test_the_burst_and_slip_settings_shape_the_answers_to_a_flood(settings, alice: Address):
    _limits(settings, burst=3, slip=1)
    with running_responder() as responder:
        assert flood(responder, 6, expected=6) == {
            0: "answered", 1: "answered", 2: "answered",
            3: "truncated", 4: "truncated", 5: "truncated",
        }


def test_a_slip_of_zero_drops_every_answer_over_the_limit(settings, alice: Address):
    _limits(settings, burst=2, slip=0)
    with running_responder() as responder:
        assert flood(responder, 5, expected=2) == {0: "answered", 1: "answered"}
        assert responder.server.rate_limiter.dropped == 3


def test_the_table_size_setting_bounds_the_networks_remembered(settings, alice: Address):
    """With room for one network, a query from another forgets the first one's spent
    budget (the default table would remember it, and truncate)."""
    _limits(settings, burst=1, slip=1, networks=1)
    with running_responder() as responder:
        assert outcome(ask_udp(responder)) == "answered"
        assert outcome(ask_udp(responder)) == "truncated"
        assert outcome(ask_udp(responder, source="127.0.1.1")) == "answered"
        assert outcome(ask_udp(responder)) == "answered"


def test_the_rate_setting_refills_the_budget(settings, alice: Address):
    """A burst of one at a million answers a second: the budget is back before the next
    datagram is read, so a flood is answered in full (at the default 100 a second, or the
    0.001 above, all but the first would be truncated)."""
    _limits(settings, rate=1_000_000.0, burst=1, slip=1)
    with running_responder() as responder:
        # A flood over loopback can be slow enough for 100 a second to refill too, so the
        # limiter the responder runs is asked for its rate as well.
        assert responder.server.rate_limiter.rate == 1_000_000.0
        assert flood(responder, 4, expected=4) == dict.fromkeys(range(4), "answered")


BAD = [
    ("HISP_DNS_RATE_LIMIT", "0", "HISP_DNS_RATE_LIMIT must be a number above 0"),
    ("HISP_DNS_RATE_LIMIT", "-5", "HISP_DNS_RATE_LIMIT must be a number above 0"),
    ("HISP_DNS_RATE_LIMIT", "nan", "HISP_DNS_RATE_LIMIT must be a number above 0"),
    ("HISP_DNS_RATE_LIMIT", "inf", "HISP_DNS_RATE_LIMIT must be a number above 0"),
    ("HISP_DNS_RATE_LIMIT", "fast", "HISP_DNS_RATE_LIMIT must be a number above 0"),
    ("HISP_DNS_RATE_BURST", "0", "HISP_DNS_RATE_BURST must be a whole number of at least 1"),
    ("HISP_DNS_RATE_SLIP", "-1", "HISP_DNS_RATE_SLIP must be a whole number of at least 0"),
    ("HISP_DNS_RATE_NETWORKS", "0", "HISP_DNS_RATE_NETWORKS must be a whole number of at least"),
]


def test_a_bad_rate_limit_stops_the_start_naming_the_variable(tmp_path):
    cases = [f"{name}={value}" for name, value, _ in BAD]
    good = ["HISP_DNS_RATE_SLIP=0", "HISP_DNS_RATE_LIMIT=2.5"]
    outcomes = start_outcomes(tmp_path, [*cases, *good], unset="HISP_DNS_")
    for (name, value, message), said in zip(BAD, outcomes, strict=False):
        assert said.startswith("ImproperlyConfigured: ") and message in said, (name, value, said)
    assert outcomes[len(cases):] == ["started"] * len(good)
