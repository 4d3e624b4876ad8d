"""Our responder publishes a dotted local part's certificate at both DNS spellings partners ask
for: ``john.smith.<domain>`` and the one-label ``john\\.smith.<domain>`` (RFC 1035 section 8)."""

from __future__ import annotations

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from hisp.dns.records import build_snapshot
from hisp.dns.responder import respond
from hisp.dns.zonefile import zone_text
from hisp.models import Address, Certificate
from tests.hisp.dns.conftest import DOMAIN

ONE_LABEL = dns.name.Name([b"john.smith", *dns.name.from_text(DOMAIN).labels])


def cert_answer(name: dns.name.Name) -> tuple[int, set[bytes]]:
    query = dns.message.make_query(name, dns.rdatatype.CERT)
    reply = respond(query.to_wire(), build_snapshot(), tcp=True)
    assert reply is not None
    message = dns.message.from_wire(reply)
    found = {rdata.certificate for rrset in message.answer for rdata in rrset}
    return message.rcode(), found


def test_a_dotted_local_part_is_answered_at_its_one_label_spelling_too(john: Address) -> None:
    [current] = Certificate.objects.filter(bound_name=john.address, revoked_at__isnull=True)
    two_labels = dns.name.from_text(f"john.smith.{DOMAIN}")
    assert cert_answer(two_labels) == (dns.rcode.NOERROR, {bytes(current.der)})
    assert cert_answer(ONE_LABEL) == (dns.rcode.NOERROR, {bytes(current.der)})


def test_the_zone_export_carries_the_one_label_spelling(john: Address) -> None:
    assert f"{ONE_LABEL} 300 IN CERT PKIX 0 0 " in zone_text(DOMAIN)


def test_an_undotted_local_part_has_one_spelling_only(alice: Address) -> None:
    _, found = cert_answer(dns.name.from_text(f"alice.{DOMAIN}"))
    assert len(found) == 1
    assert cert_answer(dns.name.Name([b"alice.x", *dns.name.from_text(DOMAIN).labels]))[0] == (
        dns.rcode.NXDOMAIN
    )
