"""Helpers shared by the PKI and CLI tests: files for openssl, a tiny HTTP server for bundles."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from hisp.certificates import load, to_pem
from hisp.models import Certificate


def write_pem(path: Path, *rows: Certificate) -> Path:
    path.write_bytes(to_pem(load(row) for row in rows))
    return path


def openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *args], input=input.decode() if input is not None else None,
        capture_output=True, text=True, timeout=60,
    )


@dataclass
class BundleServer:
    """A real HTTP server on a free loopback port serving whatever ``body``/``status`` say."""

    body: bytes = b""
    status: int = 200
    hits: int = 0
    url: str = ""
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)


@contextmanager
def bundle_server() -> Iterator[BundleServer]:
    state = BundleServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            state.hits += 1
            self.send_response(state.status)
            self.send_header("Content-Type", "application/pkcs7-mime")
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/bundle.p7b"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
