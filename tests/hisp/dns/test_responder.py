"""The authoritative responder over real UDP and TCP sockets, queried with dnspython."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from cryptography import x509
from django.db import transaction

from agent.discovery import DnsClient, parse_nameservers
from agent.discovery.dnsclient import Status
from hisp.models import Address, Certificate, Domain
from hisp.services import pki
from tests.hisp.dns.conftest import DOMAIN, HOST, Responder

pytestmark = pytest.mark.django_db(transaction=True)


def cert_ders(response: dns.message.Message) -> set[bytes]:
    return {
        rdata.certificate
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.CERT
        for rdata in rrset
    }


def published(name: str, binding: str) -> set[bytes]:
    return {
        bytes(row.der)
        for row in Certificate.objects.filter(
            bound_name=name, binding=binding, revoked_at__isnull=True
        )
    }


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_address_bound_cert_answered_authoritatively(
    responder: Responder, alice: Address, tcp: bool
) -> None:
    response = responder.query(f"alice.{DOMAIN}", "CERT", tcp=tcp, edns=0)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert not response.flags & dns.flags.TC
    rdata = response.answer[0][0]
    assert rdata.certificate_type == 1  # PKIX
    assert (rdata.key_tag, rdata.algorithm) == (0, 0)
    assert cert_ders(response) == published(alice.address, "address")
    certificate = x509.load_der_x509_certificate(rdata.certificate)
    emails = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert alice.address in emails.value.get_values_for_type(x509.RFC822Name)


def test_domain_bound_cert_at_the_apex(responder: Responder, provider: Domain) -> None:
    response = responder.query(DOMAIN, "CERT", edns=0)
    assert response.rcode() == dns.rcode.NOERROR
    assert cert_ders(response) == published(DOMAIN, "domain")
    assert len(cert_ders(response)) == 1


def test_dotted_local_part_is_published_label_by_label(
    responder: Responder, john: Address
) -> None:
    response = responder.query(f"john.smith.{DOMAIN}", "CERT", edns=0)
    assert cert_ders(response) == published(john.address, "address")


def test_soa_ns_mx_and_host_addresses(responder: Responder, provider: Domain) -> None:
    soa = responder.query(DOMAIN, "SOA").answer[0][0]
    assert soa.mname == dns.name.from_text(HOST)
    assert soa.rname == dns.name.from_text(f"hostmaster.{DOMAIN}")
    assert responder.query(DOMAIN, "NS").answer[0][0].target == dns.name.from_text(HOST)
    mx = responder.query(DOMAIN, "MX")
    assert mx.answer[0][0].exchange == dns.name.from_text(HOST)
    # The MX target's address comes along in the additional section.
    assert {r.rdtype for r in mx.additional} >= {dns.rdatatype.A, dns.rdatatype.AAAA}
    assert responder.query(HOST, "A").answer[0][0].address == "127.0.0.1"
    assert responder.query(HOST, "AAAA").answer[0][0].address == "::1"


def test_ldap_srv_published_only_when_configured(
    responder: Responder, provider: Domain, settings: pytest.FixtureRequest
) -> None:
    name = f"_ldap._tcp.{DOMAIN}"
    assert responder.query(name, "SRV").rcode() == dns.rcode.NXDOMAIN
    settings.HISP_LDAP_SERVER = f"{HOST}:3389"  # type: ignore[attr-defined]
    Domain.objects.create(name="other.example.org")  # any change makes the zones reload
    wait_until(lambda: responder.query(name, "SRV").rcode() == dns.rcode.NOERROR)
    srv = responder.query(name, "SRV").answer[0][0]
    assert (srv.priority, srv.weight, srv.port) == (0, 0, 3389)
    assert srv.target == dns.name.from_text(HOST)


def test_large_cert_sets_tc_over_udp_and_comes_whole_over_tcp(
    responder: Responder, provider: Domain
) -> None:
    identity_address = f"big@{DOMAIN}"
    Address.objects.create(address=identity_address, domain=provider)
    [row] = pki.issue_for(identity_address, key_bits=4096)
    name = f"big.{DOMAIN}"
    for edns in (-1, 0):  # without EDNS (512 bytes) and with EDNS (1232 bytes)
        truncated = responder.query(name, "CERT", edns=edns, payload=4096)
        assert truncated.flags & dns.flags.TC
        assert truncated.rcode() == dns.rcode.NOERROR
        assert not truncated.answer  # never a partial RRset (RFC 2181 9)
    whole = responder.query(name, "CERT", tcp=True)
    assert not whole.flags & dns.flags.TC
    assert cert_ders(whole) == {bytes(row.der)}
    # The agent's own client sees the TC bit and retries over TCP by itself.
    client = DnsClient(servers=parse_nameservers([responder.address]), timeout=5)
    answer = client.query(dns.name.from_text(name), dns.rdatatype.CERT)
    assert answer.status is Status.ANSWER
    assert answer.used_tcp
    assert {r.certificate for r in answer.records} == {bytes(row.der)}


def test_small_answer_fits_udp_and_carries_our_edns_payload(
    responder: Responder, alice: Address
) -> None:
    response = responder.query(f"alice.{DOMAIN}", "CERT", edns=0, payload=4096)
    assert not response.flags & dns.flags.TC
    assert response.edns == 0
    assert response.payload == 1232  # what we accept, whatever the client offered
    no_edns = responder.query(DOMAIN, "MX")
    assert no_edns.edns == -1  # no OPT in the reply to a query without one (RFC 6891 7)


def test_nxdomain_for_missing_names_with_soa(responder: Responder, alice: Address) -> None:
    response = responder.query(f"nobody.{DOMAIN}", "CERT")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    assert not response.answer
    [soa] = response.authority
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa.ttl == soa[0].minimum  # RFC 2308 3


def test_nodata_for_existing_name_without_that_type(responder: Responder, alice: Address) -> None:
    response = responder.query(f"alice.{DOMAIN}", "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert not response.answer
    assert [r.rdtype for r in response.authority] == [dns.rdatatype.SOA]


def test_nodata_for_empty_non_terminal(responder: Responder, john: Address) -> None:
    response = responder.query(f"smith.{DOMAIN}", "CERT")
    assert response.rcode() == dns.rcode.NOERROR  # RFC 8020: the name exists below
    assert not response.answer
    assert [r.rdtype for r in response.authority] == [dns.rdatatype.SOA]


def test_names_outside_hosted_zones_are_refused(responder: Responder, provider: Domain) -> None:
    for name in ("example.com", "example.org", "org", "."):
        response = responder.query(name, "A")
        assert response.rcode() == dns.rcode.REFUSED, name
        assert not response.flags & dns.flags.AA
        assert not response.answer


def test_other_classes_and_zone_transfers_are_refused(
    responder: Responder, provider: Domain
) -> None:
    assert responder.query(DOMAIN, "TXT", rdclass="CH").rcode() == dns.rcode.REFUSED
    assert responder.query(DOMAIN, "AXFR", tcp=True).rcode() == dns.rcode.REFUSED


def test_unknown_edns_version_gets_badvers(responder: Responder, provider: Domain) -> None:
    response = responder.query(DOMAIN, "SOA", edns=1)
    assert response.rcode() == dns.rcode.BADVERS
    assert response.edns == 0


def test_other_opcodes_are_not_implemented(responder: Responder, provider: Domain) -> None:
    update = dns.message.make_query(DOMAIN, "SOA")
    update.set_opcode(dns.opcode.NOTIFY)
    response = dns.query.udp(update, responder.host, port=responder.port, timeout=3)
    assert response.rcode() == dns.rcode.NOTIMP


def _udp_exchange(responder: Responder, data: bytes, timeout: float = 0.5) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(data, (responder.host, responder.port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def test_garbage_gets_formerr_and_the_server_keeps_answering(
    responder: Responder, provider: Domain
) -> None:
    # A header (id 0x1234, a query, one question) followed by bytes that are not a question.
    garbage = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\xff\xfe\x00garbage"
    reply = _udp_exchange(responder, garbage)
    assert reply is not None
    parsed = dns.message.from_wire(reply)
    assert parsed.id == 0x1234
    assert parsed.rcode() == dns.rcode.FORMERR
    assert parsed.flags & dns.flags.QR
    # Too short for a header, or itself a response: dropped (no reply to reflect or loop).
    assert _udp_exchange(responder, b"\x01\x02\x03") is None
    assert _udp_exchange(responder, struct.pack("!HHHHHH", 7, 0x8000, 0, 0, 0, 0)) is None
    # Two questions: parseable, but not a query we answer.
    two = dns.message.make_query(DOMAIN, "SOA")
    two.question.append(two.question[0])
    assert dns.query.udp(two, responder.host, port=responder.port, timeout=3).rcode() == (
        dns.rcode.FORMERR
    )
    # Garbage over TCP: FORMERR on that connection, then the server still serves.
    with socket.create_connection((responder.host, responder.port), timeout=3) as sock:
        sock.sendall(struct.pack("!H", len(garbage)) + garbage)
        size = struct.unpack("!H", sock.recv(2))[0]
        assert dns.message.from_wire(sock.recv(size)).rcode() == dns.rcode.FORMERR
    assert responder.query(DOMAIN, "SOA").rcode() == dns.rcode.NOERROR


def test_tcp_connection_serves_several_queries(responder: Responder, alice: Address) -> None:
    with socket.create_connection((responder.host, responder.port), timeout=3) as sock:
        for name in (DOMAIN, f"alice.{DOMAIN}"):
            query = dns.message.make_query(name, "CERT")
            dns.query.send_tcp(sock, query)
            response, _ = dns.query.receive_tcp(sock, expiration=time.time() + 3)
            assert response.id == query.id
            assert response.answer


def test_records_follow_issue_renewal_and_revocation_without_restart(
    responder: Responder, provider: Domain
) -> None:
    name = f"bob.{DOMAIN}"
    bob = Address.objects.create(address=f"bob@{DOMAIN}", domain=provider)
    assert responder.query(name, "CERT").rcode() == dns.rcode.NXDOMAIN

    [first] = pki.issue_for(bob.address)
    wait_until(lambda: cert_ders(responder.query(name, "CERT", tcp=True)) == {bytes(first.der)})

    second = pki.renew(first)
    wait_until(lambda: cert_ders(responder.query(name, "CERT", tcp=True)) == {bytes(second.der)})

    pki.revoke(second)
    wait_until(lambda: responder.query(name, "CERT").rcode() == dns.rcode.NXDOMAIN)
    # The domain-bound certificate is still there: only bob's record went.
    assert cert_ders(responder.query(DOMAIN, "CERT", tcp=True)) == published(DOMAIN, "domain")


def test_suspended_address_is_no_longer_published(responder: Responder, alice: Address) -> None:
    name = f"alice.{DOMAIN}"
    assert responder.query(name, "CERT", tcp=True).answer
    Address.objects.filter(pk=alice.pk).update(status=Address.Status.SUSPENDED)
    wait_until(lambda: responder.query(name, "CERT").rcode() == dns.rcode.NXDOMAIN)


def test_new_domain_becomes_a_zone_without_restart(responder: Responder, provider: Domain) -> None:
    assert responder.query("clinic.example.net", "SOA").rcode() == dns.rcode.REFUSED
    from hisp.services import identity

    identity.add_domain("clinic.example.net")
    wait_until(lambda: responder.query("clinic.example.net", "SOA").rcode() == dns.rcode.NOERROR)
    assert cert_ders(responder.query("clinic.example.net", "CERT", tcp=True))


@pytest.mark.parametrize(
    ("edns", "payload", "truncated"),
    [(-1, 0, True), (0, 512, True), (0, 1000, True), (0, 1232, False), (0, 65535, False)],
)
def test_tc_follows_the_clients_payload_size(
    responder: Responder, alice: Address, edns: int, payload: int, truncated: bool
) -> None:
    # alice's CERT answer is about 1.1 kB: over 512 and 1000 bytes, under 1232.
    response = responder.query(f"alice.{DOMAIN}", "CERT", edns=edns, payload=payload)
    assert bool(response.flags & dns.flags.TC) is truncated
    assert bool(response.answer) is not truncated


def test_names_match_whatever_their_case(responder: Responder, alice: Address) -> None:
    response = responder.query("ALICE.Hospital.Example.ORG", "CERT", tcp=True)
    assert response.question[0].name.to_text() == "ALICE.Hospital.Example.ORG."
    assert cert_ders(response) == published(alice.address, "address")


def test_one_address_suspended_as_another_is_activated_is_seen_at_once(
    responder: Responder, alice: Address, provider: Domain
) -> None:
    # Between two version checks alice is suspended and bob (pending proofing) activated: the
    # number of active addresses is unchanged, yet alice's CERT must go and bob's appear.
    bob = Address.objects.create(
        address=f"bob@{DOMAIN}", domain=provider, status=Address.Status.PENDING
    )
    [bobs] = pki.issue_for(bob.address)
    time.sleep(0.3)  # past recheck_after: the next query reloads the zones with bob pending
    assert responder.query(f"bob.{DOMAIN}", "CERT").rcode() == dns.rcode.NXDOMAIN
    assert responder.query(f"alice.{DOMAIN}", "CERT", tcp=True).answer
    with transaction.atomic():
        Address.objects.filter(pk=alice.pk).update(status=Address.Status.SUSPENDED)
        Address.objects.filter(pk=bob.pk).update(status=Address.Status.ACTIVE)
    wait_until(lambda: responder.query(f"alice.{DOMAIN}", "CERT").rcode() == dns.rcode.NXDOMAIN)
    assert cert_ders(responder.query(f"bob.{DOMAIN}", "CERT", tcp=True)) == {bytes(bobs.der)}


def test_a_superseded_certificate_leaves_the_next_answer_once_renewed(
    responder: Responder, alice: Address
) -> None:
    name = f"alice.{DOMAIN}"
    [old] = Certificate.objects.filter(bound_name=alice.address, revoked_at__isnull=True)
    assert cert_ders(responder.query(name, "CERT", tcp=True)) == {bytes(old.der)}
    new = pki.renew(old)
    wait_until(lambda: cert_ders(responder.query(name, "CERT", tcp=True)) == {bytes(new.der)})
    old.refresh_from_db()
    assert old.superseded_by_id == new.pk  # kept for decryption, no longer published


def test_the_zone_version_changes_when_two_are_suspended_as_two_others_are_activated(
    provider: Domain,
) -> None:
    from hisp.dns import records

    rows = [Address.objects.create(address=f"p{n}@{DOMAIN}", domain=provider) for n in range(4)]
    first, second, third, fourth = (row.pk for row in rows)
    assert first + fourth == second + third  # consecutive ids: the same count and the same sum
    Address.objects.filter(pk__in=[second, third]).update(status=Address.Status.SUSPENDED)
    before = records.version()
    with transaction.atomic():
        Address.objects.filter(pk__in=[first, fourth]).update(status=Address.Status.SUSPENDED)
        Address.objects.filter(pk__in=[second, third]).update(status=Address.Status.ACTIVE)
    assert records.version() != before
