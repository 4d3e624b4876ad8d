"""UDP response-rate limiting: a flood of queries "from" one network (forged sources, to reflect
our answers at a victim) gets a bounded number of answers; every second answer over the limit
goes out empty with TC set, so a real resolver there retries over TCP and still gets through."""

from __future__ import annotations

import logging
import socket
import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from hisp.dns.ratelimit import ResponseRateLimiter, Verdict, client_network
from hisp.models import Address
from tests.hisp.dns.conftest import DOMAIN, Responder


def mx_query(query_id: int) -> dns.message.Message:
    query = dns.message.make_query(DOMAIN, dns.rdatatype.MX, use_edns=0)
    query.id = query_id
    return query


def ask_udp(responder: Responder, *, source: str = "127.0.0.1") -> dns.message.Message:
    """The answer to one small query (our MX); waits as long as a loaded machine may need."""
    return dns.query.udp(mx_query(1), responder.host, port=responder.port, source=source,
                         timeout=5)


def flood(responder: Responder, count: int, *, expected: int) -> dict[int, str]:
    """Send ``count`` queries at once from one socket; what came back, by query number."""
    replies: dict[int, str] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for number in range(count):
            sock.sendto(mx_query(number).to_wire(), (responder.host, responder.port))
        # The replies we expect may be slow on a loaded machine; after them, a short wait shows
        # nothing else comes (a dropped answer is never sent, so no wait can turn it up later).
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                wire = sock.recv(65535)
            except TimeoutError:
                break
            reply = dns.message.from_wire(wire)
            replies[reply.id] = outcome(reply)
            if len(replies) == expected:
                deadline = time.monotonic() + 0.3
    return replies


def outcome(reply: dns.message.Message) -> str:
    if reply.flags & dns.flags.TC:
        assert not reply.answer and reply.rcode() == dns.rcode.NOERROR
        return "truncated"
    assert reply.answer
    return "answered"


@pytest.mark.django_db(transaction=True)
def test_a_flood_from_one_network_is_cut_to_the_limit_and_tcp_still_answers(
    responder: Responder, alice: Address
) -> None:
    limiter = responder.server.rate_limiter
    limiter.rate, limiter.burst = 0.001, 3  # no refill within the test
    # Three within the burst, then every second one over it truncated and the others dropped.
    assert flood(responder, 7, expected=5) == {
        0: "answered", 1: "answered", 2: "answered", 4: "truncated", 6: "truncated"
    }
    assert (limiter.dropped, limiter.truncated) == (2, 2)
    # What a resolver does on TC: ask again over TCP, which the limit leaves alone.
    assert responder.query(DOMAIN, "MX", tcp=True).answer
    # Another /24 has a budget of its own.
    assert outcome(ask_udp(responder, source="127.0.1.1")) == "answered"


@pytest.mark.django_db(transaction=True)
def test_the_default_limit_leaves_a_busy_resolver_alone(
    responder: Responder, alice: Address
) -> None:
    # A resolver's cold start for a whole hosted domain's worth of addresses, at once.
    assert flood(responder, 150, expected=150) == dict.fromkeys(range(150), "answered")
    assert responder.server.rate_limiter.dropped == 0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_refills_at_the_rate_up_to_the_burst() -> None:
    clock = Clock()
    limiter = ResponseRateLimiter(rate=10, burst=5, slip=0, clock=clock)
    assert [limiter.check("192.0.2.1") for _ in range(6)] == [Verdict.ANSWER] * 5 + [Verdict.DROP]
    clock.now += 0.2  # two answers' worth
    assert [limiter.check("192.0.2.7") for _ in range(3)] == [
        Verdict.ANSWER, Verdict.ANSWER, Verdict.DROP
    ]
    clock.now += 60  # a long pause refills to the burst, no further
    assert [limiter.check("192.0.2.1") for _ in range(6)].count(Verdict.ANSWER) == 5


def test_clients_are_counted_by_network() -> None:
    assert client_network("192.0.2.1") == client_network("192.0.2.254") == "192.0.2.0/24"
    assert client_network("192.0.3.1") != client_network("192.0.2.1")
    assert client_network("2001:db8:0:ff::1") == client_network("2001:db8:0:1::2")
    assert client_network("2001:db8:0:100::1") != client_network("2001:db8::1")
    assert client_network("::ffff:192.0.2.9") == "192.0.2.0/24"  # a dual-stack socket


def test_the_table_of_networks_is_bounded() -> None:
    limiter = ResponseRateLimiter(rate=1, burst=1, max_networks=2, clock=Clock())
    assert limiter.check("192.0.2.1") is Verdict.ANSWER
    assert limiter.check("198.51.100.1") is Verdict.ANSWER
    assert limiter.check("203.0.113.1") is Verdict.ANSWER  # the oldest network is forgotten
    assert len(limiter._buckets) == 2
    assert limiter.check("198.51.100.1") is Verdict.DROP  # recent ones are still counted


def test_nonsense_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        ResponseRateLimiter(rate=0)
    with pytest.raises(ValueError):
        ResponseRateLimiter(burst=0)


def test_an_episode_of_limiting_is_logged_once_when_it_begins_and_once_when_it_ends(caplog):
    # An operator sees that limiting started (and for whom) without a line per dropped query.
    now = [0.0]
    limiter = ResponseRateLimiter(rate=10, burst=5, slip=2, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="hisp.dns.ratelimit"):
        verdicts = [limiter.check("192.0.2.7") for _ in range(25)]
        assert verdicts.count(Verdict.ANSWER) == 5
        begun = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(begun) == 1 and "192.0.2.0/24" in begun[0].getMessage()
        assert not [r for r in caplog.records if "no longer limited" in r.getMessage()]
        now[0] += 1.0  # the bucket is full again: the episode is over
        assert limiter.check("192.0.2.8") is Verdict.ANSWER
    ended = [r.getMessage() for r in caplog.records if "no longer limited" in r.getMessage()]
    assert ended == ["DNS answers to 192.0.2.0/24 no longer limited: 20 over the limit "
                     "(10 sent truncated)"]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
