"""A private BIND (``named``) serving zones a test writes, on a free loopback port.

Use ``bind_server()`` as a context manager (or the ``bind`` fixture from
``tests.support.fixtures``); add zones with ``serve_zone(origin, records)``. Records are zone-file
lines relative to the origin; ``cert_record``/``ipkix_record`` build RFC 4398 CERT lines.
"""

from __future__ import annotations

import base64
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.support.process import running, stop_process
from tests.support.services import require_binary

NAMED = "/usr/sbin/named"


@dataclass(frozen=True)
class Record:
    name: str  # relative to the zone origin; "@" for the apex
    type: str  # CERT, SRV, CNAME, A, TXT...
    data: str  # presentation format
    ttl: int = 300

    def line(self) -> str:
        return f"{self.name} {self.ttl} IN {self.type} {self.data}"


def cert_record(name: str, der: bytes, *, ttl: int = 300) -> Record:
    """An RFC 4398 PKIX CERT record (type 1, key tag 0, algorithm 0, DER inline)."""
    return Record(name, "CERT", f"PKIX 0 0 ( {_wrapped_b64(der)} )", ttl)


def ipkix_record(name: str, url: str, *, ttl: int = 300) -> Record:
    """An RFC 4398 IPKIX CERT record (type 4): the certificate field holds the URL."""
    return Record(name, "CERT", f"IPKIX 0 0 {base64.b64encode(url.encode()).decode()}", ttl)


def srv_record(
    service: str, target: str, port: int, *, priority: int = 0, weight: int = 0, ttl: int = 300
) -> Record:
    return Record(service, "SRV", f"{priority} {weight} {port} {target}", ttl)


def _wrapped_b64(data: bytes) -> str:
    text = base64.b64encode(data).decode()
    return "\n    ".join(text[i : i + 64] for i in range(0, len(text), 64))


def free_udp_tcp_port() -> int:
    """A loopback port free for both UDP and TCP (named listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free UDP+TCP port on 127.0.0.1")


class BindServer:
    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.host = "127.0.0.1"
        self.port = port
        self.zones: dict[str, list[Record]] = {}
        self._serial = int(time.time()) % 1_000_000_000
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``host:port``, as HISP_DNS_SERVERS takes it."""
        return f"{self.host}:{self.port}"

    @property
    def log(self) -> str:
        path = self.directory / "named.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def serve_zone(self, origin: str, records: Iterable[Record]) -> None:
        """Serve (or replace) zone ``origin`` and wait until named answers with it."""
        origin = origin.rstrip(".").lower()
        self.zones[origin] = list(records)
        self._serial += 1
        self._write_zone(origin)
        self._write_config()
        if self.process is not None:
            self.process.send_signal(signal.SIGHUP)  # reload config and zones
            self.wait_for(origin, serial=self._serial)

    def _write_zone(self, origin: str) -> None:
        lines = [
            f"$ORIGIN {origin}.",
            "$TTL 300",
            f"@ 300 IN SOA ns.{origin}. hostmaster.{origin}. {self._serial} 3600 600 86400 60",
            f"@ 300 IN NS ns.{origin}.",
            f"ns 300 IN A {self.host}",
            *(record.line() for record in self.zones[origin]),
        ]
        (self.directory / f"{origin}.zone").write_text("\n".join(lines) + "\n")

    def _write_config(self) -> None:
        d = self.directory
        zones = "\n".join(
            f'zone "{origin}" {{ type primary; file "{d / (origin + ".zone")}"; }};'
            for origin in sorted(self.zones)
        )
        self._write_named_conf(options="  recursion no;\n  minimal-responses no;", zones=zones)

    def _write_named_conf(self, *, options: str, zones: str) -> None:
        """named.conf with what every named of the tests shares (its own directory and port,
        IPv4 only, no DNSSEC validation, no NOTIFY, no control channel) and ``options``."""
        d = self.directory
        (d / "named.conf").write_text(
            f"""
options {{
  directory "{d}";
  pid-file "{d / "named.pid"}";
  session-keyfile "{d / "session.key"}";
  managed-keys-directory "{d}";
  listen-on port {self.port} {{ {self.host}; }};
  listen-on-v6 {{ none; }};
  dnssec-validation no;
  notify no;
{options}
}};
controls {{ }};
{zones}
"""
        )

    def start(self) -> None:
        self._write_config()
        with open(self.directory / "named.log", "wb") as log:
            # -g: foreground, log to stderr; no -u: stay the user we are (root in CI is fine).
            self.process = subprocess.Popen(
                [NAMED, "-g", "-4", "-c", str(self.directory / "named.conf")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        for origin in self.zones:
            self.wait_for(origin, serial=None)
        if not self.zones:
            self._wait_listening()

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def query(
        self, name: str, rdtype: str, *, tcp: bool = False, timeout: float = 2.0
    ) -> dns.message.Message:
        message = dns.message.make_query(name, dns.rdatatype.from_text(rdtype))
        send = dns.query.tcp if tcp else dns.query.udp
        return send(message, self.host, timeout=timeout, port=self.port)

    def wait_for(self, origin: str, *, serial: int | None, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                response = self.query(origin + ".", "SOA", timeout=0.2)
            except (OSError, dns.exception.DNSException):
                time.sleep(0.05)
                continue
            if response.rcode() == dns.rcode.NOERROR and response.answer:
                if serial is None or response.answer[0][0].serial == serial:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"named did not serve {origin} in {timeout}s:\n{self.log[-3000:]}")

    def _wait_listening(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                self.query("example.", "SOA", timeout=0.2)
                return
            except (OSError, dns.exception.DNSException):
                time.sleep(0.05)
        raise RuntimeError(f"named did not answer in {timeout}s:\n{self.log[-3000:]}")

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"named exited ({self.process.returncode}):\n{self.log[-3000:]}")


@contextmanager
def bind_server(zones: dict[str, list[Record]] | None = None) -> Iterator[BindServer]:
    """A running named; skips (fails under CI=true) when BIND is not installed."""
    require_binary("named", NAMED)
    with tempfile.TemporaryDirectory(prefix="hisp-named-") as tmp:

        def make(attempt: int) -> BindServer:
            server = BindServer(Path(tmp), free_udp_tcp_port())
            for origin, records in (zones or {}).items():
                server.zones[origin.rstrip(".").lower()] = list(records)
                server._write_zone(origin.rstrip(".").lower())
            return server

        with running("named", make) as server:
            yield server


@pytest.fixture(scope="session")
def named() -> Iterator[BindServer]:
    """One private named for the session; each test serves its own zones on it."""
    with bind_server() as server:
        yield server
