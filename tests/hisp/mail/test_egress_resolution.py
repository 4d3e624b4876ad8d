"""Every name an egress attempt looks up is looked up within the attempt's deadline (half the
claim lease): an exchanger's or a route's host name through HISP_DNS_SERVERS with the time
left, else through the system resolver on a thread the attempt stops waiting for at the
deadline. smtplib is handed addresses only, so it never starts a lookup of its own. Past the
lease the sweeper gives the delivery to another worker, so an attempt still waiting on a
resolver then could end up sending the message a second time.

Real components only: a private named, aiosmtpd with STARTTLS on loopback, a UDP socket that
never answers, and, for the system resolver, a child process in a private mount namespace
whose /etc/resolv.conf (pointing at that silent socket) and /etc/nsswitch.conf this test
writes: nothing else on the machine sees them.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import dns.message
import dns.rcode
import pytest
from aiosmtpd.controller import Controller
from django.conf import settings

from hisp import egress
from hisp.services import routes
from hisp.tls import write_self_signed
from tests.hisp.mail.processes import ROOT, database_url
from tests.support.bind import BindServer, Record, bind_server
from tests.support.services import free_port, missing

pytestmark = pytest.mark.usefixtures("no_idle_egress_sessions")

LEASE = 4.0  # seconds; an attempt's deadline is half of it
WIRE = b"From: alice@hospital.example.org\r\nSubject: x\r\n\r\nbody\r\n"
PARTNER = "partner.example.net"
RECIPIENT = f"doc@{PARTNER}"
ZONE = "resolution.example.test"
RELAY = f"relay.{ZONE}"  # an A record in our named only: the system resolver knows nothing of it
HUNG = f"hung.{ZONE}"  # its MX host has no address in our named
HUNG_MX = f"gone.{ZONE}"
TWO = f"two.{ZONE}"  # a first MX host only the (hung) system resolver could know, then BACKUP
BACKUP = f"backup.{ZONE}"
BACKUP_ADDRESS = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


@pytest.fixture(autouse=True)
def short_lease(settings) -> None:
    settings.HISP_CLAIM_LEASE = timedelta(seconds=LEASE)


@pytest.fixture(scope="module")
def named() -> Iterator[BindServer]:
    zones = {
        ZONE: [
            Record("relay", "A", "127.0.0.1"),
            Record("hung", "MX", f"10 {HUNG_MX}."),
            Record("two", "MX", f"10 {HUNG_MX}."),
            Record("two", "MX", f"20 {BACKUP}."),
            Record("backup", "A", BACKUP_ADDRESS),
        ]
    }
    with bind_server(zones) as server:
        yield server


@pytest.fixture
def our_dns(settings, named: BindServer) -> BindServer:
    settings.HISP_DNS_SERVERS = [named.address]
    settings.HISP_EGRESS_INTERNAL_MX = True  # the exchangers here are loopback addresses
    return named


@dataclass
class Partner:
    """Records what it received and the server name (SNI) each TLS client asked for."""

    server_names: list[str | None] = field(default_factory=list)
    delivered: list[tuple[bool, bytes]] = field(default_factory=list)  # (over TLS, bytes)

    async def handle_DATA(self, server, session, envelope) -> str:
        self.delivered.append((session.ssl is not None, envelope.original_content))
        return "250 2.0.0 OK"


def _tls_context(folder: Path, partner: Partner) -> ssl.SSLContext:
    write_self_signed(folder / "cert.pem", folder / "key.pem", hostname=RELAY)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    context.sni_callback = lambda _sock, server_name, _ctx: partner.server_names.append(
        server_name
    )
    return context


@contextmanager
def partner(tmp_path: Path) -> Iterator[tuple[Partner, int]]:
    """An SMTP server on 127.0.0.1 offering STARTTLS."""
    handler = Partner()
    controller = Controller(
        handler, hostname="127.0.0.1", port=free_port(), tls_context=_tls_context(tmp_path, handler)
    )
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


@contextmanager
def silent_dns(host: str = "127.0.0.1", port: int = 0) -> Iterator[socket.socket]:
    """A UDP socket where a DNS server should be, which reads nothing and answers nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:  # port 53 needs root (bin/test runs as root)
            missing(f"a UDP socket on {host}:{port} ({exc})")
        yield sock


def questions(sock: socket.socket) -> list[str]:
    """The names asked of a silent DNS socket so far."""
    asked = []
    sock.setblocking(False)
    while True:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return asked
        asked += [str(q.name).rstrip(".") for q in dns.message.from_wire(data).question]


def send() -> tuple[egress.Outcome, float]:
    start = time.monotonic()
    outcome = egress.send(wire=WIRE, mail_from="a@b.test", recipient=RECIPIENT)
    return outcome, time.monotonic() - start


# 1. Names our DNS knows: resolved there, connected to by address, named in STARTTLS.


def test_route_host_name_comes_from_our_dns_and_is_the_starttls_server_name(
    db, our_dns, tmp_path
):
    with partner(tmp_path) as (server, port):
        routes.set_route(PARTNER, f"{RELAY}:{port}")
        assert egress.hops(PARTNER) == [egress.Hop("127.0.0.1", port, name=RELAY)]
        outcome, _ = send()
    assert outcome.result is egress.Result.SENT, outcome
    assert server.delivered == [(True, WIRE)]
    # The exchanger's name, not the address it was reached at (SNI, RFC 6066 section 3).
    assert server.server_names == [RELAY]


# 2. A name only the system resolver knows (/etc/hosts) still works.


def test_route_host_name_only_the_system_resolver_knows_is_resolved_there(
    db, our_dns, tmp_path
):
    # Our named has no recursion: it refuses to answer for names outside its zones.
    assert our_dns.query("localhost.", "A").rcode() == dns.rcode.REFUSED
    with partner(tmp_path) as (server, port):
        routes.set_route(PARTNER, f"localhost:{port}")
        found = egress.hops(PARTNER)
        outcome, _ = send()
    assert found[0] == egress.Hop("127.0.0.1", port, name="localhost")
    assert all(ipaddress.ip_address(hop.host) for hop in found)
    assert outcome.result is egress.Result.SENT, outcome
    assert server.delivered == [(True, WIRE)]
    assert server.server_names == ["localhost"]


# 3. A DNS server that never answers: the route's host name lookup ends by the deadline.


def test_route_host_lookup_on_a_hung_dns_server_ends_by_the_deadline(db, settings):
    with silent_dns() as dead:
        settings.HISP_DNS_SERVERS = [f"127.0.0.1:{dead.getsockname()[1]}"]
        routes.set_route(PARTNER, f"{RELAY}:2525")
        outcome, elapsed = send()
        asked = questions(dead)
    assert (outcome.result, outcome.status) == (egress.Result.TEMPORARY, "4.4.3"), outcome
    assert egress.LATE in outcome.detail
    assert LEASE / 2 - 0.1 <= elapsed < LEASE
    assert RELAY in asked


# 4. The system resolver, for a name our DNS does not know, in a namespace of its own.

CHILD = """
import json, os, sys, time, django
django.setup()
from django.conf import settings
# The exchangers here are loopback addresses: followed unless a test says otherwise.
settings.HISP_EGRESS_INTERNAL_MX = os.environ.get("TEST_INTERNAL_MX", "1") == "1"
from hisp import egress
start = time.monotonic()
outcome = egress.send(wire=b"x\\r\\n", mail_from="a@b.test", recipient=sys.argv[1])
print(json.dumps({"result": outcome.result.value, "status": outcome.status,
                  "detail": outcome.detail, "elapsed": time.monotonic() - start}))
"""


def _loopback() -> str:
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


def _send_in_namespace(
    folder: Path, named: BindServer, recipient: str, *, resolv_conf: str, nsswitch: str,
    internal_mx: bool = True,
) -> tuple[dict[str, object], float]:
    """``egress.send`` in a child process whose /etc/resolv.conf and /etc/nsswitch.conf are
    the ones given (bind-mounted in a private mount namespace); its outcome and how long the
    child took in all (start-up and exit included)."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        missing("unshare as root (a private mount namespace for the system resolver)")
    assert unshare is not None
    (folder / "resolv.conf").write_text(resolv_conf)
    (folder / "nsswitch.conf").write_text(nsswitch)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url(),
        "HISP_DATA_DIR": str(settings.DATA_DIR),
        "SECRET_KEY": settings.SECRET_KEY,
        "HISP_KEY_ENCRYPTION_KEY": settings.HISP_KEY_ENCRYPTION_KEY,
        "HISP_DNS_SERVERS": named.address,
        "HISP_CLAIM_LEASE": f"{int(LEASE)}s",
        "LOG_LEVEL": "WARNING",
        "TEST_INTERNAL_MX": "1" if internal_mx else "0",
    }
    mounts = (
        'mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/nsswitch.conf'
        ' && shift 2 && exec "$@"'
    )
    argv = [
        unshare, "--mount", "--propagation", "private", "sh", "-c", mounts, "sh",
        str(folder / "resolv.conf"), str(folder / "nsswitch.conf"),
        sys.executable, "-c", CHILD, recipient,
    ]
    start = time.monotonic()
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - start
    if done.returncode != 0 and "mount" in done.stderr and "Traceback" not in done.stderr:
        missing(f"a private mount namespace ({done.stderr.strip()[:200]})")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), took


def test_hung_system_resolver_ends_the_attempt_by_the_deadline(db, named, tmp_path):
    # Our named has MX records for the domain but no address for the exchanger, so egress
    # asks the system resolver; that one's nameserver is a silent socket on port 53, and it
    # would wait 30 s for it.
    address = _loopback()
    with silent_dns(address, 53) as dead:
        outcome, took = _send_in_namespace(
            tmp_path, named, f"doc@{HUNG}",
            resolv_conf=f"nameserver {address}\noptions timeout:30 attempts:1\n",
            nsswitch="hosts: files dns\n",
        )
        asked = questions(dead)
    assert (outcome["result"], outcome["status"]) == ("temporary", "4.4.3"), outcome
    assert egress.LATE in str(outcome["detail"])
    assert LEASE / 2 - 0.1 <= float(outcome["elapsed"]) < LEASE  # type: ignore[arg-type]
    assert HUNG_MX in asked  # the system resolver did ask it, and was left waiting
    assert took < 25  # the abandoned lookup thread did not hold the process at exit either


def test_a_hung_first_exchanger_leaves_time_for_the_next(db, named, tmp_path):
    """Two MX hosts: the preferred one's name only the system resolver could know, and it
    hangs; the second is in our DNS. The first lookup gets its share of the attempt, not all
    of it, and the message leaves through the second, well inside the deadline."""
    handler = Partner()
    try:
        controller = Controller(handler, hostname=BACKUP_ADDRESS, port=25)
        controller.start()
    except (OSError, RuntimeError) as exc:  # port 25 needs root (bin/test runs as root)
        missing(f"an SMTP server on {BACKUP_ADDRESS}:25 ({exc})")
    address = _loopback()
    try:
        with silent_dns(address, 53) as dead:
            outcome, _ = _send_in_namespace(
                tmp_path, named, f"doc@{TWO}",
                resolv_conf=f"nameserver {address}\noptions timeout:30 attempts:1\n",
                nsswitch="hosts: files dns\n",
            )
            asked = questions(dead)
    finally:
        controller.stop()
    assert outcome["result"] == "sent", outcome
    assert HUNG_MX in asked  # the preferred exchanger was tried first
    assert [data for _tls, data in handler.delivered] == [b"x\r\n"]
    elapsed = float(outcome["elapsed"])  # type: ignore[arg-type]
    assert LEASE / 4 - 0.1 <= elapsed < LEASE / 2  # half the attempt for the hung name


def test_internal_addresses_beside_an_exchanger_whose_lookup_hung_fail_only_for_now(
    db, named, tmp_path
):
    """The preferred exchanger's lookup hangs and the backup has only an internal address:
    the hung one may well have a public address, so the message waits for the next attempt
    instead of failing for good (5.4.4) on a guess."""
    address = _loopback()
    with silent_dns(address, 53):
        outcome, _ = _send_in_namespace(
            tmp_path, named, f"doc@{TWO}",
            resolv_conf=f"nameserver {address}\noptions timeout:30 attempts:1\n",
            nsswitch="hosts: files dns\n", internal_mx=False,
        )
    assert (outcome["result"], outcome["status"]) == ("temporary", "4.4.3"), outcome


def test_name_no_resolver_knows_fails_temporarily_at_once(db, named, tmp_path):
    outcome, _ = _send_in_namespace(
        tmp_path, named, f"doc@{HUNG}", resolv_conf="", nsswitch="hosts: files\n"
    )
    assert (outcome["result"], outcome["status"]) == ("temporary", "4.4.3"), outcome
    assert f"no address for {HUNG_MX}" in str(outcome["detail"])
    assert float(outcome["elapsed"]) < 1  # type: ignore[arg-type]
