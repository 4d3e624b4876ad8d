from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from agent.trust import HttpIssuerFetcher, StaticTrustStore
from agent.trust.fetch import Fetcher, FetchError
from agent.types import Direction
from tests.agent.trust.pki import authority, closed_port_url, issue


def fetcher(**kw):
    kw.setdefault("allow_private_networks", True)
    kw.setdefault("timeout", 2.0)
    return HttpIssuerFetcher(**kw)


def test_issuers_reads_der_pem_and_pkcs7(keys, root, intermediate, server):
    der = intermediate.certificate.public_bytes(serialization.Encoding.DER)
    pem = root.certificate.public_bytes(serialization.Encoding.PEM)
    p7 = pkcs7.serialize_certificates(
        [intermediate.certificate, root.certificate], serialization.Encoding.PEM
    )
    for path, body, expected in [
        ("/iss/a.cer", der, [intermediate.certificate]),
        ("/iss/a.pem", pem, [root.certificate]),
        ("/iss/a.p7c", p7, [intermediate.certificate, root.certificate]),
    ]:
        cert = issue(
            "Leaf", key=keys.leaf, issuer=intermediate, ca_issuers_url=server.serve(path, body)
        )
        assert set(fetcher().issuers(cert)) == set(expected)


def test_issuers_caches_answers(keys, intermediate, server):
    url = server.serve(
        "/iss/cached.cer", intermediate.certificate.public_bytes(serialization.Encoding.DER)
    )
    cert = issue("Leaf", key=keys.leaf, issuer=intermediate, ca_issuers_url=url)
    fetch = fetcher()
    assert fetch.issuers(cert) == fetch.issuers(cert) == [intermediate.certificate]
    assert server.hits["/iss/cached.cer"] == 1


def test_issuers_returns_nothing_for_garbage_oversize_or_unreachable(keys, intermediate, server):
    big = intermediate.certificate.public_bytes(serialization.Encoding.DER) * 100
    for url in [
        server.serve("/iss/garbage.cer", b"not a certificate"),
        server.serve("/iss/big.cer", big),
        closed_port_url("/iss/down.cer"),
        "ldap://ldap.example/cn=ca?cACertificate",
    ]:
        cert = issue("Leaf", key=keys.leaf, issuer=intermediate, ca_issuers_url=url)
        assert fetcher(max_bytes=10_000).issuers(cert) == []


def test_issuers_without_aia_fetch_nothing(keys, intermediate):
    cert = issue("Leaf", key=keys.leaf, issuer=intermediate)
    assert fetcher().issuers(cert) == []


def test_fetch_refuses_loopback_by_default_and_other_schemes(server):
    url = server.serve("/iss/private", b"x")
    with pytest.raises(FetchError, match="non-public"):
        Fetcher().get(url)
    with pytest.raises(FetchError, match="scheme"):
        Fetcher(allow_private_networks=True).get("file:///etc/passwd")
    assert "/iss/private" not in server.hits


def test_fetch_follows_redirects_but_rechecks_their_targets(server):
    server.serve("/iss/target", b"payload")
    server.routes["/iss/redirect-ok"] = lambda body: (
        302,
        b"",
        {"Location": server.url("/iss/target")},
    )
    server.routes["/iss/redirect-ftp"] = lambda body: (302, b"", {"Location": "ftp://127.0.0.1/x"})
    fetch = Fetcher(allow_private_networks=True)
    assert fetch.get(server.url("/iss/redirect-ok")) == b"payload"
    with pytest.raises(FetchError, match="scheme"):
        fetch.get(server.url("/iss/redirect-ftp"))


def test_fetch_times_out_on_a_silent_server():
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never answers
    try:
        started = time.monotonic()
        with pytest.raises(FetchError):
            Fetcher(allow_private_networks=True, timeout=0.5).get(
                f"http://127.0.0.1:{listener.getsockname()[1]}/slow"
            )
        assert time.monotonic() - started < 3
    finally:
        listener.close()


def test_static_trust_store_keeps_directions_and_domains_apart(keys):
    a, b = authority("A", key=keys.root).certificate, authority("B", key=keys.other).certificate
    store = StaticTrustStore(incoming={"Example.org.": [a]}, outgoing={"example.org": [b]})
    assert store.anchors("EXAMPLE.ORG", Direction.INCOMING) == (a,)
    assert store.anchors("example.org", Direction.OUTGOING) == (b,)
    assert store.anchors("other.org", Direction.INCOMING) == ()
    both = StaticTrustStore.both_ways({"x.org": [a]})
    assert both.anchors("x.org", Direction.OUTGOING) == both.anchors("x.org", Direction.INCOMING)
