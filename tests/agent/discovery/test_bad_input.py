"""Bad input from the network: each case gives a clear reason, within the time limit."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from agent.discovery import DiscoveryResolver, DnsCertLookup, DnsClient, parse_nameservers
from agent.discovery.dnscert import MAX_RECORDS
from agent.discovery.fetch import FetchError, fetch
from agent.types import Binding
from tests.agent.discovery.conftest import SUFFIX, Pki, make_resolver
from tests.agent.discovery.hostile import (
    malformed_cert_answer,
    silent_udp_port,
    tarpit,
    udp_responder,
)
from tests.agent.trust.pki import Server
from tests.support.bind import BindServer, Record, cert_record, ipkix_record, srv_record
from tests.support.slapd import SlapdServer

pytestmark = pytest.mark.services


def dns_only(
    servers: str, *, timeout: float = 1.0, fetch_timeout: float = 1.0
) -> DiscoveryResolver:
    client = DnsClient(servers=parse_nameservers(servers), timeout=timeout, attempt_timeout=timeout)
    return DiscoveryResolver(
        dns=DnsCertLookup(
            client=client,
            timeout=timeout + fetch_timeout,
            fetch_timeout=fetch_timeout,
            allow_private_networks=True,
        )
    )


def first_level(resolver: DiscoveryResolver, address: str):  # type: ignore[no-untyped-def]
    return next(iter(resolver.candidates(address)))


def test_malformed_cert_rdata_is_reported_as_a_malformed_answer() -> None:
    with udp_responder(malformed_cert_answer) as port:
        level = first_level(dns_only(f"127.0.0.1:{port}"), "bob@bad.test")
    assert level.certificates == ()
    assert level.error is not None
    assert "malformed answer" in level.error
    assert f"127.0.0.1:{port}" in level.error


def test_garbage_bytes_instead_of_a_dns_answer_are_malformed() -> None:
    with udp_responder(lambda query: query[:2] + b"\x81\x80garbage") as port:
        level = first_level(dns_only(f"127.0.0.1:{port}"), "bob@bad.test")
    assert level.error is not None and "malformed answer" in level.error


def test_a_resolver_that_never_answers_times_out_within_the_limit() -> None:
    with silent_udp_port() as port:
        started = time.monotonic()
        level = first_level(dns_only(f"127.0.0.1:{port}", timeout=0.8), "bob@slow.test")
        elapsed = time.monotonic() - started
    assert level.error is not None
    assert "timed out" in level.error
    assert elapsed < 2.0


def test_a_silent_resolver_is_failed_over_to_the_next(named: BindServer, pki: Pki) -> None:
    cert = pki.leaf(address="bob@failover.test")
    named.serve_zone("failover.test", [cert_record("bob", cert.public_bytes(Encoding.DER))])
    with silent_udp_port() as port:
        client = DnsClient(
            servers=parse_nameservers(f"127.0.0.1:{port},{named.address}"),
            timeout=3,
            attempt_timeout=0.5,
        )
        resolver = DiscoveryResolver(dns=DnsCertLookup(client=client))
        level = first_level(resolver, "bob@failover.test")
    assert level.certificates == (cert,)
    assert level.error is None


def test_a_certificate_that_does_not_parse_is_skipped_and_noted(
    named: BindServer, pki: Pki
) -> None:
    good = pki.leaf(address="bob@unparsable.test")
    named.serve_zone(
        "unparsable.test",
        [
            cert_record("bob", b"\x30\x03\x02\x01\x05 this is not a certificate"),
            cert_record("bob", good.public_bytes(Encoding.DER)),
        ],
    )
    level = first_level(make_resolver(named.address), "bob@unparsable.test")
    assert level.certificates == (good,)
    assert level.error is None
    assert any("not a DER certificate or PKCS#7 bundle" in note for note in level.notes)


def test_non_x509_cert_types_are_skipped_and_noted(named: BindServer) -> None:
    named.serve_zone("pgp.test", [Record("bob", "CERT", "PGP 0 0 AAECAwQ=")])
    level = first_level(make_resolver(named.address), "bob@pgp.test")
    assert level.certificates == ()
    assert any("type 3 is not X.509" in note for note in level.notes)


def test_ipkix_certificate_is_fetched_over_http(named: BindServer, pki: Pki, http: Server) -> None:
    cert = pki.leaf(address="bob@ipkix.test")
    url = http.serve("/ipkix/bob.cer", cert.public_bytes(Encoding.DER))
    named.serve_zone("ipkix.test", [ipkix_record("bob", url)])
    level = first_level(make_resolver(named.address), "bob@ipkix.test")
    assert level.certificates == (cert,)


def test_ipkix_url_that_hangs_is_cut_off_at_the_fetch_timeout(named: BindServer) -> None:
    with tarpit() as port:
        named.serve_zone("hang.test", [ipkix_record("bob", f"http://127.0.0.1:{port}/bob.cer")])
        started = time.monotonic()
        level = first_level(dns_only(named.address, fetch_timeout=0.7), "bob@hang.test")
        elapsed = time.monotonic() - started
    assert level.certificates == ()
    assert level.error is not None
    assert "IPKIX fetch failed" in level.error and "timed out" in level.error
    assert elapsed < 2.5


def test_ipkix_url_returning_garbage_is_noted(named: BindServer, http: Server) -> None:
    url = http.serve("/ipkix/garbage", b"<html>not a certificate</html>")
    named.serve_zone("garbage.test", [ipkix_record("bob", url)])
    level = first_level(make_resolver(named.address), "bob@garbage.test")
    assert level.certificates == ()
    assert level.error is None
    assert any("not a DER certificate" in note for note in level.notes)


def test_ipkix_url_returning_a_huge_body_is_refused(http: Server) -> None:
    url = http.serve("/ipkix/huge", b"\x00" * 300_000)
    with pytest.raises(FetchError, match="exceeds"):
        fetch(url, timeout=2, max_bytes=256 * 1024, allow_private_networks=True)


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/x.cer", "gopher://x/", "http:///nohost"]
)
def test_ipkix_urls_other_than_http_are_never_opened(url: str) -> None:
    with pytest.raises(FetchError, match="unsupported URL"):
        fetch(url, timeout=1)


def test_ipkix_url_on_a_private_address_is_refused_by_default(
    named: BindServer, pki: Pki, http: Server
) -> None:
    cert = pki.leaf(address="bob@ssrf.test")
    url = http.serve("/ipkix/ssrf.cer", cert.public_bytes(Encoding.DER))
    named.serve_zone("ssrf.test", [ipkix_record("bob", url)])
    resolver = DiscoveryResolver.build(nameservers=[named.address], ldap=False)
    level = first_level(resolver, "bob@ssrf.test")
    assert level.certificates == ()
    assert level.error is not None and "non-public address" in level.error
    assert http.hits.get("/ipkix/ssrf.cer", 0) == 0


def test_ipkix_redirects_are_not_followed(http: Server, pki: Pki) -> None:
    target = http.serve("/ipkix/final.cer", pki.leaf(address="a@b.test").public_bytes(Encoding.DER))

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/moved"
        with pytest.raises(FetchError, match="HTTP 302"):
            fetch(url, timeout=2, allow_private_networks=True)
    finally:
        server.shutdown()
        server.server_close()
    assert http.hits.get("/ipkix/final.cer", 0) == 0


def test_ipkix_http_error_status_is_reported(http: Server) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(http.url("/nothing-here"), timeout=2, allow_private_networks=True)


def test_a_huge_cert_answer_is_read_over_tcp_and_bounded(named: BindServer, pki: Pki) -> None:
    certs = [pki.leaf(address="bob@huge.test") for _ in range(MAX_RECORDS + 8)]
    named.serve_zone("huge.test", [cert_record("bob", c.public_bytes(Encoding.DER)) for c in certs])
    level = first_level(make_resolver(named.address), "bob@huge.test")
    assert len(level.certificates) == MAX_RECORDS
    assert set(level.certificates) <= set(certs)
    assert any(f"only the first {MAX_RECORDS} read" in note for note in level.notes)


def test_a_cname_loop_across_zones_is_an_error_not_a_hang(named: BindServer) -> None:
    # Within one zone BIND catches the loop itself (SERVFAIL); across zones it hands back each
    # CNAME and the client has to stop following.
    named.serve_zone("loop1.test", [Record("bob", "CNAME", "x.loop2.test.")])
    named.serve_zone("loop2.test", [Record("x", "CNAME", "bob.loop1.test.")])
    started = time.monotonic()
    level = first_level(make_resolver(named.address), "bob@loop1.test")
    assert level.error is not None and "more than 8 CNAMEs" in level.error
    assert time.monotonic() - started < 2


def test_cnames_across_zones_are_followed(named: BindServer, pki: Pki) -> None:
    cert = pki.leaf(address="bob@alias.test")
    named.serve_zone("alias.test", [Record("bob", "CNAME", "bob-cert.target.test.")])
    named.serve_zone("target.test", [cert_record("bob-cert", cert.public_bytes(Encoding.DER))])
    level = first_level(make_resolver(named.address), "bob@alias.test")
    assert level.certificates == (cert,)


@pytest.mark.parametrize("address", ["no-at-sign", "@nolocal.test", "bob@", "a..b@dots.test"])
def test_addresses_that_cannot_be_looked_up_give_one_error_level(address: str) -> None:
    levels = list(dns_only("127.0.0.1:9").candidates(address))
    assert len(levels) == 1
    assert levels[0].source == "dns" and levels[0].binding is Binding.ADDRESS
    assert levels[0].error is not None


def test_ldap_server_that_accepts_but_never_answers_is_failed_over(
    named: BindServer, pki: Pki, ldap_servers: tuple[SlapdServer, ...]
) -> None:
    address, domain = "bob@tarpit.test", "tarpit.test"
    cert = pki.leaf(address=address)
    ldap_servers[0].add_person(SUFFIX, mail=address, smime=[cert])
    with tarpit() as port:
        named.serve_zone(
            domain,
            [
                srv_record("_ldap._tcp", "stuck", port, priority=0),
                Record("stuck", "A", "127.0.0.1"),
                srv_record("_ldap._tcp", "ldap1", ldap_servers[0].port, priority=1),
                Record("ldap1", "A", "127.0.0.1"),
            ],
        )
        started = time.monotonic()
        levels = list(make_resolver(named.address, connect_timeout=1.0).candidates(address))
        elapsed = time.monotonic() - started
    assert levels[2].certificates == (cert,)
    assert any(f"stuck.{domain}:{port}" in note for note in levels[2].notes)
    assert elapsed < 4.0


def test_ldap_search_value_is_escaped(
    named: BindServer, pki: Pki, ldap_servers: tuple[SlapdServer, ...]
) -> None:
    # An address with filter metacharacters must match only itself, never act as a wildcard.
    domain = "escape.test"
    ldap_servers[1].add_person(SUFFIX, mail=f"alice@{domain}", smime=[pki.leaf(domain=domain)])
    named.serve_zone(
        domain,
        [
            srv_record("_ldap._tcp", "ldap2", ldap_servers[1].port),
            Record("ldap2", "A", "127.0.0.1"),
        ],
    )
    levels = list(make_resolver(named.address).candidates(f"*@{domain}"))
    assert levels[2].certificates == ()
    assert levels[2].error is None
    assert any("no entry with mail=*@escape.test" in note for note in levels[2].notes)


def test_ldap_value_that_is_not_a_certificate_is_skipped_and_noted(
    named: BindServer, pki: Pki, ldap_servers: tuple[SlapdServer, ...]
) -> None:
    address, domain = "bob@ldapjunk.test", "ldapjunk.test"
    good = pki.leaf(address=address)
    ldap_servers[2].add_person(
        SUFFIX, mail=address, smime=[good], raw_smime=[b"definitely not PKCS#7"]
    )
    named.serve_zone(
        domain,
        [
            srv_record("_ldap._tcp", "ldap3", ldap_servers[2].port),
            Record("ldap3", "A", "127.0.0.1"),
        ],
    )
    levels = list(make_resolver(named.address).candidates(address))
    assert levels[2].certificates == (good,)
    assert any("userSMIMECertificate" in note and "skipped" in note for note in levels[2].notes)


def test_srv_target_dot_means_ldap_is_not_offered(named: BindServer) -> None:
    named.serve_zone("noldap.test", [srv_record("_ldap._tcp", ".", 389)])
    levels = list(make_resolver(named.address).candidates("bob@noldap.test"))
    assert [level.error for level in levels[2:]] == [None, None]
    assert any("service not offered" in note for note in levels[2].notes)
