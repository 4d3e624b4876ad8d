"""Answering one DNS query from a zone snapshot: wire bytes in, wire bytes (or nothing) out.

Authoritative only (RFC 1034 4.3.2 without recursion): names in a hosted zone get an answer
with AA set, NODATA or NXDOMAIN with the zone's SOA in the authority section (RFC 2308 2.1,
2.2); anything else is REFUSED. Pure: no I/O, no database, so the server can call it from the
event loop.
"""

from __future__ import annotations

import logging

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from hisp.dns.records import Snapshot, Zone

logger = logging.getLogger(__name__)

# RFC 9715 / DNS flag day 2020: the largest UDP answer we send and advertise, whatever a
# client offers, so answers are never IP-fragmented; larger ones go over TCP.
MAX_UDP_PAYLOAD = 1232
MIN_UDP_PAYLOAD = 512  # RFC 1035 4.2.1, and the floor for any EDNS payload (RFC 6891 6.2.5)
MAX_TCP_MESSAGE = 65_535  # RFC 1035 4.2.2: two-byte length prefix
HEADER_BYTES = 12

_TARGET_TYPES = {dns.rdatatype.MX, dns.rdatatype.NS, dns.rdatatype.SRV}
_NO_TRANSFER = {dns.rdatatype.AXFR, dns.rdatatype.IXFR}


def respond(wire: bytes, snapshot: Snapshot | None, *, tcp: bool) -> bytes | None:
    """The reply to ``wire``, or None when nothing should be sent back.

    Nothing is sent for messages too short to carry a header and for responses (QR set): an
    answer to an answer can start a loop between two servers. ``snapshot`` is None when the
    zones could not be loaded: SERVFAIL, so resolvers try again later.
    """
    try:
        query = dns.message.from_wire(wire, ignore_trailing=False)
    except dns.message.ShortHeader:
        return None
    except Exception:  # noqa: BLE001 - any parse failure of untrusted bytes is FORMERR
        return _formerr(wire)
    if query.flags & dns.flags.QR:
        return None
    response = dns.message.make_response(query, our_payload=MAX_UDP_PAYLOAD)
    response.flags &= ~dns.flags.RA  # RFC 1035 4.1.1: no recursion offered here
    if query.edns > 0:
        # RFC 6891 6.1.3: a version we do not implement gets BADVERS with our version (0).
        response.set_rcode(dns.rcode.BADVERS)
        return _finish(response, query, tcp=tcp)
    if query.opcode() != dns.opcode.QUERY:
        response.set_rcode(dns.rcode.NOTIMP)
        return _finish(response, query, tcp=tcp)
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return _finish(response, query, tcp=tcp)
    question = query.question[0]
    if dns.rdatatype.is_metatype(question.rdtype) and question.rdtype != dns.rdatatype.ANY:
        rcode = dns.rcode.REFUSED if question.rdtype in _NO_TRANSFER else dns.rcode.FORMERR
        response.set_rcode(rcode)
        return _finish(response, query, tcp=tcp)
    if snapshot is None:
        response.set_rcode(dns.rcode.SERVFAIL)
        return _finish(response, query, tcp=tcp)
    zone = snapshot.zone_for(question.name)
    if zone is None or question.rdclass not in (dns.rdataclass.IN, dns.rdataclass.ANY):
        response.set_rcode(dns.rcode.REFUSED)
        return _finish(response, query, tcp=tcp)
    response.flags |= dns.flags.AA
    if question.rdtype == dns.rdatatype.ANY and not tcp:
        # RFC 8482: ANY is the classic reflection-amplification query (a forged source address
        # gets every record set of a name). Over UDP it gets an empty truncated answer, so only
        # a client that completes a TCP handshake receives the data.
        response.flags |= dns.flags.TC
        return _finish(response, query, tcp=tcp)
    _answer(response, snapshot, zone, question.name, question.rdtype)
    return _finish(response, query, tcp=tcp)


def truncated_reply(wire: bytes) -> bytes | None:
    """An empty answer with TC set to the query ``wire`` (the question only), or None when it
    deserves no reply at all: what a rate-limited client gets instead of the records, so a
    real resolver asks again over TCP (hisp.dns.ratelimit)."""
    try:
        query = dns.message.from_wire(wire, ignore_trailing=False)
    except Exception:  # noqa: BLE001 - a query we cannot read gets nothing while limited
        return None
    if query.flags & dns.flags.QR:
        return None
    reply = dns.message.make_response(query, our_payload=MAX_UDP_PAYLOAD)
    reply.flags = (reply.flags & ~dns.flags.RA) | dns.flags.TC
    try:
        return reply.to_wire(max_size=_udp_limit(query))
    except dns.exception.TooBig:
        return None  # a question too long to echo: nothing smaller exists


def _answer(
    response: dns.message.Message,
    snapshot: Snapshot,
    zone: Zone,
    name: dns.name.Name,
    rdtype: int,
) -> None:
    if name not in zone.names:
        response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(_negative_soa(zone))
        return
    found = zone.at(name)
    if rdtype != dns.rdatatype.ANY:
        found = [rrset for rrset in found if rrset.rdtype == rdtype]
    if not found:
        response.authority.append(_negative_soa(zone))  # NODATA: NOERROR, no answer
        return
    response.answer.extend(found)
    # Addresses of MX/NS/SRV targets we serve ourselves save the resolver a round trip
    # (RFC 1035 4.3.2 step 6, RFC 2782 "additional data").
    seen = {rrset.name for rrset in found}
    for rrset in found:
        if rrset.rdtype not in _TARGET_TYPES:
            continue
        for rdata in rrset:
            target = rdata.exchange if rrset.rdtype == dns.rdatatype.MX else rdata.target
            if target in seen:
                continue
            seen.add(target)
            holder = snapshot.zone_for(target)
            if holder is None:
                continue
            response.additional.extend(
                r for r in holder.at(target) if r.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
            )


def _negative_soa(zone: Zone) -> dns.rrset.RRset:
    """The SOA for a negative answer, its TTL lowered to MINIMUM (RFC 2308 3)."""
    soa = zone.soa
    return dns.rrset.from_rdata_list(soa.name, min(soa.ttl, soa[0].minimum), list(soa))


def _finish(response: dns.message.Message, query: dns.message.Message, *, tcp: bool) -> bytes:
    limit = MAX_TCP_MESSAGE if tcp else _udp_limit(query)
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        pass
    # RFC 2181 9 / RFC 1035 4.1.1: too large for this client over UDP. Send TC with the
    # question only (never a partial RRset); the client asks again over TCP.
    truncated = dns.message.make_response(query, our_payload=MAX_UDP_PAYLOAD)
    truncated.flags = response.flags | dns.flags.TC
    truncated.set_rcode(response.rcode())
    return truncated.to_wire(max_size=limit)


def _udp_limit(query: dns.message.Message) -> int:
    if query.edns < 0:
        return MIN_UDP_PAYLOAD  # no EDNS: the RFC 1035 limit
    return max(MIN_UDP_PAYLOAD, min(query.payload, MAX_UDP_PAYLOAD))


def _formerr(wire: bytes) -> bytes | None:
    """FORMERR echoing the id and opcode of a message we could not parse (RFC 1035 4.1.1)."""
    if len(wire) < HEADER_BYTES:
        return None
    flags = int.from_bytes(wire[2:4], "big")
    if flags & dns.flags.QR:
        return None
    reply = dns.message.Message(id=int.from_bytes(wire[:2], "big"))
    reply.flags = dns.flags.QR | (flags & (dns.flags.RD | 0x7800))  # keep RD and the opcode
    reply.set_rcode(dns.rcode.FORMERR)
    return reply.to_wire()
