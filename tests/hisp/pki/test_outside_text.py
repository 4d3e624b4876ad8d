"""Trust bundles fetched from a URL: what the server answers is outside text, and a refresh
records its failure in the database (PostgreSQL refuses a NUL in text)."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from hisp.models import Domain, TrustAnchor, TrustBundle, TrustBundleEvent
from hisp.services import trust
from tests.hisp.pki.conftest import VECTORS


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    reply = b""


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # the request's head
        self.wfile.write(self.server.reply)  # type: ignore[attr-defined]


@contextmanager
def _server() -> Iterator[_Server]:
    """A real TCP server on loopback answering every request with ``reply`` as it is."""
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_answering_with_control_characters_is_a_recorded_fetch_error(
    provider: Domain,
) -> None:
    """A bundle URL that stops speaking HTTP (a port given to another service) answers a
    status line the HTTP client quotes in its error: with a NUL in it, recording the failure
    failed, so every refresh raised instead of keeping the anchors and saying why."""
    body = (VECTORS / "gateway_testBundle.p7b").read_bytes()
    with _server() as server:
        server.reply = (
            b"HTTP/1.0 200 OK\r\nContent-Type: application/pkcs7-mime\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        url = f"http://127.0.0.1:{server.server_address[1]}/bundle.p7b"
        bundle = trust.add_bundle(url, domain=provider.name).bundle
        server.reply = b"\x00\x01garbage\x1b[31m\r\nInjected: line\r\n\r\n"
        outcome = trust.refresh_bundle(bundle)
    assert outcome.result == TrustBundle.Result.FETCH_ERROR
    bundle.refresh_from_db()
    assert bundle.last_result == TrustBundle.Result.FETCH_ERROR
    assert "garbage" in bundle.last_error
    assert not any(ch in bundle.last_error for ch in "\x00\x01\x1b\r\n")
    event = TrustBundleEvent.objects.filter(bundle=bundle).first()
    assert event is not None and event.error == bundle.last_error
    assert TrustAnchor.objects.filter(bundle=bundle).count() == 1
