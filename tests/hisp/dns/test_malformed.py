"""Untrusted bytes into the answer logic: every reply is a well-formed response to the same id,
or nothing; never an exception."""

from __future__ import annotations

import random

import dns.flags
import dns.message
import dns.rcode
import pytest

from hisp.dns.records import build_snapshot
from hisp.dns.responder import MIN_UDP_PAYLOAD, respond
from hisp.models import Address
from tests.hisp.dns.conftest import DOMAIN


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_mutated_queries_never_raise_and_replies_parse(alice: Address, tcp: bool) -> None:
    snapshot = build_snapshot()
    rng = random.Random(4398)
    seeds = [
        dns.message.make_query(name, rdtype, use_edns=edns).to_wire()
        for name, rdtype, edns in [
            (f"alice.{DOMAIN}", "CERT", 0),
            (DOMAIN, "SOA", -1),
            (f"x.{DOMAIN}", "A", 0),
            ("example.com", "MX", 0),
        ]
    ]
    answered = 0
    for _ in range(1500):
        wire = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            action = rng.random()
            if action < 0.6 and wire:
                wire[rng.randrange(len(wire))] = rng.randrange(256)
            elif action < 0.8:
                del wire[rng.randrange(len(wire) + 1) :]
            else:
                wire += rng.randbytes(rng.randint(1, 40))
        reply = respond(bytes(wire), snapshot, tcp=tcp)
        if reply is None:
            continue
        answered += 1
        message = dns.message.from_wire(reply)
        assert message.flags & dns.flags.QR
        assert message.id == int.from_bytes(wire[:2], "big")
        if not tcp:
            assert len(reply) <= max(MIN_UDP_PAYLOAD, 1232)
    assert answered > 500  # most mutations still deserve an answer (FORMERR at least)


def test_trailing_junk_is_formerr(alice: Address) -> None:
    wire = dns.message.make_query(DOMAIN, "SOA").to_wire() + b"junk"
    reply = respond(wire, build_snapshot(), tcp=False)
    assert reply is not None
    assert dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR


def test_without_zones_every_query_gets_servfail() -> None:
    wire = dns.message.make_query(DOMAIN, "SOA").to_wire()
    reply = respond(wire, None, tcp=False)
    assert reply is not None
    assert dns.message.from_wire(reply).rcode() == dns.rcode.SERVFAIL
