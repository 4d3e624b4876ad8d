"""The one bounded HTTP fetcher shared by discovery (IPKIX) and trust (CRL, OCSP, AIA)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from agent.http import Fetcher, FetchError

Handler = Callable[[socket.socket], None]


def _serve(handlers: dict[bytes, Handler]) -> Iterator[str]:
    """A raw loopback HTTP server: each connection's request path picks its handler."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                request = conn.recv(4096)
                path = request.split(b" ", 2)[1] if b" " in request else b""
                try:
                    handlers[path](conn)
                except OSError:
                    pass  # the client gave up, as it should

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=2)
        listener.close()


def _trickle(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n")
    # One byte every 0.1 s for 1.5 s: never silent long enough for a socket timeout, and longer
    # than the client's total limit (then the connection closes short of the declared length).
    for _ in range(15):
        conn.sendall(b"x")
        time.sleep(0.1)


def _declared_huge(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\nConnection: close\r\n\r\nx")


def _redirect_to(location: bytes) -> Handler:
    def handle(conn: socket.socket) -> None:
        conn.sendall(
            b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n"
            b"Connection: close\r\n\r\n"
        )

    return handle


def _ok(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\npayload")


@pytest.fixture()
def server() -> Iterator[str]:
    yield from _serve(
        {
            b"/trickle": _trickle,
            b"/huge": _declared_huge,
            b"/to-ftp": _redirect_to(b"ftp://127.0.0.1/x"),
            b"/to-ok": _redirect_to(b"/ok"),
            b"/ok": _ok,
        }
    )


@pytest.mark.parametrize("follow_redirects", [True, False])
def test_fetch_cuts_off_a_trickling_server_at_the_total_time_limit(
    server: str, follow_redirects: bool
) -> None:
    fetcher = Fetcher(timeout=0.5, allow_private_networks=True, follow_redirects=follow_redirects)
    started = time.monotonic()
    with pytest.raises(FetchError, match="too slow"):
        fetcher.get(f"{server}/trickle")
    assert time.monotonic() - started < 2


def test_fetch_refuses_a_declared_oversized_body_before_reading_it(server: str) -> None:
    with pytest.raises(FetchError, match="body of 999999 bytes exceeds 1000"):
        Fetcher(max_bytes=1000, allow_private_networks=True).get(f"{server}/huge")


def test_fetch_follows_redirects_and_rechecks_each_target(server: str) -> None:
    fetcher = Fetcher(allow_private_networks=True)
    assert fetcher.get(f"{server}/to-ok") == b"payload"
    with pytest.raises(FetchError, match="unsupported URL scheme 'ftp'"):
        fetcher.get(f"{server}/to-ftp")


def test_fetch_without_redirects_reports_the_redirect_status(server: str) -> None:
    with pytest.raises(FetchError, match="HTTP 302"):
        Fetcher(allow_private_networks=True, follow_redirects=False).get(f"{server}/to-ok")


def test_fetch_refuses_loopback_unless_private_networks_are_allowed(server: str) -> None:
    with pytest.raises(FetchError, match="non-public address"):
        Fetcher().post(f"{server}/ok", b"body", "application/ocsp-request")
