"""Misbehaving network peers for bad-input tests: real sockets on loopback, no mocks.

A DNS server that answers with crafted (malformed) bytes, a UDP port that swallows queries, a
TCP port that accepts connections and never answers (an HTTP or LDAP server that hangs).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dns.message


def malformed_cert_answer(query_wire: bytes) -> bytes:
    """A well-formed header and question with one CERT record of only two rdata bytes (RFC 4398
    needs at least five: type, key tag, algorithm)."""
    query = dns.message.from_wire(query_wire)
    wire = bytearray(dns.message.make_response(query).to_wire())
    wire[6:8] = struct.pack("!H", 1)  # ANCOUNT
    wire += b"\xc0\x0c" + struct.pack("!HHIH", 37, 1, 300, 2) + b"\x00\x01"
    return bytes(wire)


@contextmanager
def udp_responder(answer: Callable[[bytes], bytes | None]) -> Iterator[int]:
    """A UDP DNS 'server' on a free loopback port that replies with ``answer(query)``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = answer(data)
            if reply is not None:
                sock.sendto(reply, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        stop.set()
        thread.join(2)
        sock.close()


@contextmanager
def silent_udp_port() -> Iterator[int]:
    """A bound UDP port that never answers: queries to it time out."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@contextmanager
def tarpit() -> Iterator[int]:
    """A TCP port whose connections are accepted (by the kernel backlog) and never answered."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])
