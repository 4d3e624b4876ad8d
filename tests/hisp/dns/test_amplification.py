"""ANY over UDP is not an amplifier (RFC 8482): a truncated, empty answer; TCP gets the data."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rdatatype

from hisp.dns.records import build_snapshot
from hisp.dns.responder import respond
from hisp.models import Address
from tests.hisp.dns.conftest import DOMAIN


def test_any_over_udp_is_truncated_and_empty(alice: Address) -> None:
    query = dns.message.make_query(f"alice.{DOMAIN}", "ANY", use_edns=0, payload=1232)
    wire = query.to_wire()
    reply = respond(wire, build_snapshot(), tcp=False)
    assert reply is not None
    message = dns.message.from_wire(reply)
    assert message.flags & dns.flags.TC and not message.answer
    assert len(reply) <= 2 * len(wire)  # no amplification worth a forged source address


def test_any_over_tcp_still_answers_in_full(alice: Address) -> None:
    query = dns.message.make_query(f"alice.{DOMAIN}", "ANY")
    reply = respond(query.to_wire(), build_snapshot(), tcp=True)
    assert reply is not None
    message = dns.message.from_wire(reply)
    assert not message.flags & dns.flags.TC
    assert any(rrset.rdtype == dns.rdatatype.CERT for rrset in message.answer)
