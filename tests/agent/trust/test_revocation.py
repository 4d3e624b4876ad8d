from __future__ import annotations

import threading
from datetime import timedelta

from cryptography.x509.oid import ExtendedKeyUsageOID

from agent.trust import HttpRevocationChecker, MemoryCache
from agent.types import RevocationStatus
from tests.agent.trust.pki import NOW, Authority, Responder, authority, closed_port_url, crl, issue


def checker(**kw):
    kw.setdefault("allow_private_networks", True)
    kw.setdefault("timeout", 2.0)
    return HttpRevocationChecker(**kw)


def leaf(keys, issuer, **kw):
    return issue("Leaf", key=keys.leaf, issuer=issuer, emails=["a@b.example"], **kw)


def test_revocation_not_checked_when_certificate_names_no_source(keys, root):
    assert checker().status(leaf(keys, root), root.certificate, NOW) is RevocationStatus.NOT_CHECKED


def test_revocation_crl_good_then_served_from_cache(keys, root, server):
    url = server.serve("/rev/cached.crl", crl(root))
    cert = leaf(keys, root, crl_url=url)
    check = checker()
    assert check.status(cert, root.certificate, NOW) is RevocationStatus.GOOD
    del server.routes["/rev/cached.crl"]
    assert check.status(cert, root.certificate, NOW) is RevocationStatus.GOOD
    assert server.hits["/rev/cached.crl"] == 1


def test_revocation_crl_is_shared_by_certificates_of_one_issuer(keys, root, server):
    url = server.url("/rev/shared.crl")
    first, second = leaf(keys, root, crl_url=url), leaf(keys, root, crl_url=url)
    server.serve("/rev/shared.crl", crl(root, revoked=[second]))
    check = checker()
    assert check.status(first, root.certificate, NOW) is RevocationStatus.GOOD
    assert check.status(second, root.certificate, NOW) is RevocationStatus.REVOKED
    assert server.hits["/rev/shared.crl"] == 1


def test_revocation_after_validation_time_does_not_count(keys, root, server):
    url = server.url("/rev/later.crl")
    cert = leaf(keys, root, crl_url=url)
    server.serve("/rev/later.crl", crl(root, revoked=[cert]))
    check = checker()
    assert check.status(cert, root.certificate, NOW - timedelta(days=1)) is RevocationStatus.GOOD
    assert check.status(cert, root.certificate, NOW) is RevocationStatus.REVOKED


def test_revocation_rejects_crl_signed_by_another_key(keys, root, server):
    url = server.url("/rev/forged.crl")
    cert = leaf(keys, root, crl_url=url)
    server.serve("/rev/forged.crl", crl(root, signer_key=keys.other))
    assert checker().status(cert, root.certificate, NOW) is RevocationStatus.UNAVAILABLE


def test_revocation_rejects_stale_crl(keys, root, server):
    url = server.url("/rev/stale.crl")
    cert = leaf(keys, root, crl_url=url)
    stale = crl(root, last_update=NOW - timedelta(days=3), next_update=NOW - timedelta(days=1))
    server.serve("/rev/stale.crl", stale)
    assert checker().status(cert, root.certificate, NOW) is RevocationStatus.UNAVAILABLE


def test_revocation_rejects_garbage_and_http_errors(keys, root, server):
    cert = leaf(
        keys,
        root,
        crl_url=server.serve("/rev/garbage.crl", b"\x30\x03garbage"),
        ocsp_url=server.serve("/rev/ocsp-500", b"", status=500),
    )
    assert checker().status(cert, root.certificate, NOW) is RevocationStatus.UNAVAILABLE


def test_revocation_unavailable_when_server_down(keys, root):
    cert = leaf(keys, root, crl_url=closed_port_url("/x.crl"))
    assert checker().status(cert, root.certificate, NOW) is RevocationStatus.UNAVAILABLE


def test_revocation_remembers_failure_briefly(keys, root, server):
    url = server.url("/rev/flaky.crl")
    cert = leaf(keys, root, crl_url=url)
    check = checker(failure_ttl=60)
    assert check.status(cert, root.certificate, NOW) is RevocationStatus.UNAVAILABLE
    server.serve("/rev/flaky.crl", crl(root))
    assert check.status(cert, root.certificate, NOW) is RevocationStatus.UNAVAILABLE
    assert server.hits["/rev/flaky.crl"] == 1
    assert checker().status(cert, root.certificate, NOW) is RevocationStatus.GOOD


def test_revocation_ocsp_good_revoked_and_cached(keys, root, server):
    responder = Responder(root)
    server.routes["/rev/ocsp"] = lambda body: (200, responder.answer(body))
    good = leaf(keys, root, ocsp_url=server.url("/rev/ocsp"))
    bad = leaf(keys, root, ocsp_url=server.url("/rev/ocsp"))
    responder.revoked.add(bad.serial_number)
    check = checker()
    assert check.status(good, root.certificate, NOW) is RevocationStatus.GOOD
    assert check.status(bad, root.certificate, NOW) is RevocationStatus.REVOKED
    assert check.status(good, root.certificate, NOW) is RevocationStatus.GOOD
    assert server.hits["/rev/ocsp"] == 2


def test_revocation_ocsp_accepts_delegated_responder_with_ocsp_signing(keys, root, server):
    delegate = Authority(
        issue(
            "OCSP Responder", key=keys.other, issuer=root, eku=[ExtendedKeyUsageOID.OCSP_SIGNING]
        ),
        keys.other,
    )
    responder = Responder(root, signer=delegate, include_signer=True)
    server.routes["/rev/ocsp-delegated"] = lambda body: (200, responder.answer(body))
    cert = leaf(keys, root, ocsp_url=server.url("/rev/ocsp-delegated"))
    responder.revoked.add(cert.serial_number)
    assert checker().status(cert, root.certificate, NOW) is RevocationStatus.REVOKED


def test_revocation_ocsp_rejects_delegate_without_ocsp_signing(keys, root, server):
    delegate = Authority(issue("Not a responder", key=keys.other, issuer=root), keys.other)
    responder = Responder(root, signer=delegate, include_signer=True)
    server.routes["/rev/ocsp-rogue"] = lambda body: (200, responder.answer(body))
    cert = leaf(keys, root, ocsp_url=server.url("/rev/ocsp-rogue"))
    assert checker().status(cert, root.certificate, NOW) is RevocationStatus.UNAVAILABLE


def test_revocation_ocsp_rejects_responder_from_another_ca(keys, root, server):
    other = authority("Other CA", key=keys.other)
    responder = Responder(root, signer=other, include_signer=True)
    server.routes["/rev/ocsp-foreign"] = lambda body: (200, responder.answer(body))
    cert = leaf(keys, root, ocsp_url=server.url("/rev/ocsp-foreign"))
    assert checker().status(cert, root.certificate, NOW) is RevocationStatus.UNAVAILABLE


def test_revocation_falls_back_to_crl_when_ocsp_says_unknown(keys, root, server):
    responder = Responder(root)
    server.routes["/rev/ocsp-unknown"] = lambda body: (200, responder.answer(body))
    url = server.url("/rev/fallback.crl")
    cert = leaf(keys, root, ocsp_url=server.url("/rev/ocsp-unknown"), crl_url=url)
    responder.unknown.add(cert.serial_number)
    server.serve("/rev/fallback.crl", crl(root, revoked=[cert]))
    assert checker().status(cert, root.certificate, NOW) is RevocationStatus.REVOKED


def test_revocation_refuses_private_addresses_by_default(keys, root, server):
    cert = leaf(keys, root, crl_url=server.serve("/rev/private.crl", crl(root)))
    assert (
        HttpRevocationChecker().status(cert, root.certificate, NOW) is RevocationStatus.UNAVAILABLE
    )
    assert "/rev/private.crl" not in server.hits


def test_revocation_refuses_non_http_sources(keys, root, tmp_path):
    path = tmp_path / "local.crl"
    path.write_bytes(crl(root))
    cert = leaf(keys, root, crl_url=f"file://{path}")
    assert checker().status(cert, root.certificate, NOW) is RevocationStatus.UNAVAILABLE


def test_revocation_is_safe_to_share_between_threads(keys, root, server):
    url = server.url("/rev/threads.crl")
    certs = [leaf(keys, root, crl_url=url) for _ in range(8)]
    server.serve("/rev/threads.crl", crl(root, revoked=certs[::2]))
    check = checker()
    results: dict[int, RevocationStatus] = {}

    def run(i: int) -> None:
        results[i] = check.status(certs[i], root.certificate, NOW)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(8)] == [RevocationStatus.REVOKED, RevocationStatus.GOOD] * 4


def test_memory_cache_expires_and_evicts():
    now = [0.0]
    cache = MemoryCache(max_entries=2, clock=lambda: now[0])
    cache.set("a", b"1", 10)
    cache.set("b", b"2", 10)
    assert cache.get("a") == b"1"
    cache.set("c", b"3", 10)  # evicts b, the least recently used
    assert cache.get("b") is None
    now[0] = 11
    assert cache.get("a") is None
    cache.set("d", b"4", 0)
    assert cache.get("d") is None


def test_revocation_uses_a_pluggable_cache(keys, root, server):
    class Recording(MemoryCache):
        def __init__(self) -> None:
            super().__init__()
            self.keys: list[str] = []

        def set(self, key: str, value: bytes, ttl: float) -> None:
            self.keys.append(key)
            assert 0 < ttl <= 86400
            super().set(key, value, ttl)

    cache = Recording()
    url = server.serve("/rev/pluggable.crl", crl(root))
    cert = leaf(keys, root, crl_url=url)
    assert checker(cache=cache).status(cert, root.certificate, NOW) is RevocationStatus.GOOD
    assert any(k.startswith("crl:") for k in cache.keys)
    assert any(k.startswith("revocation:") for k in cache.keys)


def test_revocation_refetches_once_next_update_has_passed(keys, root, server):
    url = server.serve("/rev/next-update.crl", crl(root, next_update=NOW + timedelta(days=1)))
    cert = leaf(keys, root, crl_url=url)
    elapsed = [0.0]
    check = checker(cache=MemoryCache(clock=lambda: elapsed[0]))
    assert check.status(cert, root.certificate, NOW) is RevocationStatus.GOOD
    elapsed[0] = 3600.0
    assert check.status(cert, root.certificate, NOW) is RevocationStatus.GOOD
    assert server.hits["/rev/next-update.crl"] == 1
    elapsed[0] = 2 * 86400.0
    assert check.status(cert, root.certificate, NOW) is RevocationStatus.GOOD
    assert server.hits["/rev/next-update.crl"] == 2


def test_revocation_gives_up_after_its_time_budget(keys, root):
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts, never answers
    silent = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        cert = issue(
            "Leaf",
            key=keys.leaf,
            issuer=root,
            ocsp_url=silent + "/ocsp",
            crl_url=silent + "/a.crl",
        )
        started = time.monotonic()
        status = checker(timeout=0.4, budget=0.3).status(cert, root.certificate, NOW)
        assert status is RevocationStatus.UNAVAILABLE
        assert time.monotonic() - started < 0.8  # one time-out, not two
    finally:
        listener.close()
