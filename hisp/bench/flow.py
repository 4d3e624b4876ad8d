"""End-to-end inbound benchmark: SMTP -> Celery workers -> mailbox -> processed MDN sent.

    python -m hisp.bench.flow --json [--messages 300] [--clients 4] [--concurrency N]
                                     [--worker-processes M]

It creates a throw-away PostgreSQL database (``--database-url``, default
``postgres://postgres@127.0.0.1:5432/hisp_bench_flow``) and uses Redis (``--redis-url``) with a
queue of its own; starts ``manage.py runsmtp`` and a ``celery -A hisp worker`` (prefork, two
processes per core by default: a task spends about 40% of its time waiting on PostgreSQL round
trips and commits, so one process per core leaves the cores idle meanwhile) as real processes,
and starts the clock once the worker answers a ping; has a foreign HISP sign and encrypt N messages
of ~10 KB to a hosted clinician; sends them over SMTP from several concurrent clients; and waits
until each is in the mailbox and its processed MDN has left (to a local SMTP sink, through a
static route). In the same run, on the same cores, it measures the agent's own unprotect
throughput (a process pool running ``agent.unprotect`` on the same messages, in-memory keys and
anchors, no database) and prints the ratio. Targets: end-to-end >= 50% of agent-only and >= 150
messages/s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent import protect, unprotect
from agent.bench import rerun_with_system_caps, rsa_bound
from agent.types import (
    Binding,
    Candidates,
    Direction,
    Environment,
    Identity,
    RevocationStatus,
)
from hisp import mdn
from hisp.bench import cpu

ROOT = Path(__file__).resolve().parents[2]
HOSTED = "bench-hisp.example.org"
CLINICIAN = f"clinician@{HOSTED}"
FOREIGN = "bench-partner.example.net"
SENDER = f"sender@{FOREIGN}"
BODY_BYTES = 10 * 1024


# --- An in-memory agent environment (the foreign HISP, and the agent-only baseline) ----------


@dataclass
class MemoryEnvironment:
    """Minimal implementations of the agent's collaborator Protocols, all in memory."""

    signing: dict[str, list[Identity]] = field(default_factory=dict)
    decrypting: dict[str, list[Identity]] = field(default_factory=dict)
    certificates: dict[str, tuple[x509.Certificate, ...]] = field(default_factory=dict)
    trusted: list[x509.Certificate] = field(default_factory=list)

    def signing_identities(self, address: str) -> Sequence[Identity]:
        return self.signing.get(address, [])

    def decryption_identities(self, addresses: Sequence[str]) -> Sequence[Identity]:
        return [i for a in addresses for i in self.decrypting.get(a, [])]

    def candidates(self, address: str) -> Iterator[Candidates]:
        yield Candidates("memory", Binding.ADDRESS, self.certificates.get(address, ()))

    def anchors(self, domain: str, direction: Direction) -> Sequence[x509.Certificate]:
        return self.trusted

    def status(
        self, certificate: x509.Certificate, issuer: x509.Certificate, at: datetime
    ) -> RevocationStatus:
        return RevocationStatus.GOOD

    def issuers(self, certificate: x509.Certificate) -> Sequence[x509.Certificate]:
        return []

    def environment(self) -> Environment:
        return Environment(
            keys=self, certificates=self, anchors=self, revocation=self, issuers=self
        )


def _foreign_pki() -> tuple[x509.Certificate, x509.Certificate, rsa.RSAPrivateKey]:
    """The foreign HISP's CA and its sender's certificate and key."""
    now = datetime.now(UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench partner CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SENDER)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=20))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(SENDER)]), False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca, leaf, key


def _inner(index: int, message_id: str) -> bytes:
    line = ("Lorem ipsum dolor sit amet, patient summary line " * 2)[:76]
    body = "\r\n".join(f"{n:04d} {line}" for n in range(BODY_BYTES // 83 + 1))
    return (
        f"From: {SENDER}\r\nTo: {CLINICIAN}\r\nSubject: Referral {index}\r\n"
        f"Message-ID: {message_id}\r\nDate: Tue, 24 Nov 2026 06:00:00 +0000\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{body}\r\n"
    ).encode("ascii")


# --- Agent-only baseline (process pool, same cores) ------------------------------------------

_BASELINE: Environment | None = None


def _baseline_init(cert_pem: bytes, key_pem: bytes, anchor_pem: bytes, partner_pem: bytes) -> None:
    global _BASELINE
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    memory = MemoryEnvironment(
        signing={CLINICIAN: [Identity(cert, lambda: key)]},
        decrypting={CLINICIAN: [Identity(cert, lambda: key)]},
        certificates={SENDER: (x509.load_pem_x509_certificate(partner_pem),)},
        trusted=[x509.load_pem_x509_certificate(anchor_pem)],
    )
    _BASELINE = memory.environment()


def _baseline_run(raw: bytes) -> int:
    assert _BASELINE is not None
    result = unprotect(raw, recipients=[CLINICIAN], env=_BASELINE, at=datetime.now(UTC))
    return len(result.delivered)


def _baseline_protect(raw: bytes) -> int:
    assert _BASELINE is not None
    result = protect(raw, sender=CLINICIAN, recipients=[SENDER], env=_BASELINE,
                     at=datetime.now(UTC))
    return int(result.message is not None)


def _rate(pool: ProcessPoolExecutor, run: Any, items: list[bytes], warm: int) -> float:
    list(pool.map(run, items[:warm]))  # warm up the pool
    start = time.perf_counter()
    done = sum(pool.map(run, items, chunksize=8))
    elapsed = time.perf_counter() - start
    if done != len(items):
        raise RuntimeError(f"agent-only baseline ({run.__name__}) did {done} of {len(items)}")
    return len(items) / elapsed


def agent_only(
    messages: list[bytes], mdns: list[bytes], *, processes: int,
    identity: tuple[bytes, bytes, bytes, bytes],
) -> tuple[float, float]:
    """The agent alone on the same cores: unprotects of the messages per second (the baseline
    the issue names), and protects of their processed MDNs per second (the flow's other
    cryptography), both on the ``processes`` pool."""
    with ProcessPoolExecutor(processes, initializer=_baseline_init, initargs=identity) as pool:
        unprotects = _rate(pool, _baseline_run, messages, processes * 2)
        protects = _rate(pool, _baseline_protect, mdns, processes * 2)
    return unprotects, protects


def _mdn(index: int, message_id: str) -> bytes:
    """A processed MDN for message ``index`` as the flow sends it (hisp.mdn)."""
    return mdn.build(
        reporting_host=HOSTED, sender=CLINICIAN, to=SENDER,
        message_id=f"<{secrets.token_hex(12)}@{HOSTED}>", original_message_id=message_id,
        original_recipient=CLINICIAN, final_recipient=CLINICIAN, disposition="processed",
        subject=f"Referral {index}",
    )


# --- The processes under test ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("runsmtp exited during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("runsmtp did not start listening")


def _wait_worker(name: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    """Until the Celery worker ``name`` answers a ping: its pool is forked and it consumes.
    Without this, a worker still starting (Django set-up, forking) under load is timed too."""
    from hisp.celery import app

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the Celery worker exited during start-up")
        if any(name in reply for reply in app.control.ping(timeout=0.5) or []):
            return
    raise RuntimeError("the Celery worker did not start")


def _recreate_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name.replace("_", "").isalnum():
        raise SystemExit(f"refusing an unusual database name: {name!r}")
    admin = urlunsplit((
        "postgresql" if parts.scheme.startswith("postgres") else parts.scheme,
        parts.netloc, "/postgres", "", "",
    ))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _drop_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    admin = urlunsplit(("postgresql", parts.netloc, "/postgres", "", ""))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')


def _checkpoint() -> None:
    """A PostgreSQL checkpoint now, so that one forced by the set-up (or a previous run's dropped
    database) does not land in the measured window. Needs a privileged role; skipped otherwise."""
    from django.db import DatabaseError, connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("CHECKPOINT")
    except DatabaseError:
        pass


def _forget_queue(redis_url: str, queue: str) -> None:
    """Drop what the broker keeps for this run's queue (each run uses a queue of its own)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = [queue, *client.scan_iter(match=f"_kombu.binding*.{queue}")]
    client.delete(*keys)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


# Messages per SMTP session: the listener limits commands per session (aiosmtpd's
# command_call_limit counts RCPT over the whole session), so a client opens a new one in time.
SESSION_MESSAGES = 50


def _send_all(
    port: int, batch: list[tuple[str, bytes]], accepted: dict[str, float], errors: list[str]
) -> None:
    try:
        for start in range(0, len(batch), SESSION_MESSAGES):
            with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
                client.ehlo("bench-partner.example.net")
                for message_id, raw in batch[start : start + SESSION_MESSAGES]:
                    client.sendmail(SENDER, [CLINICIAN], raw)
                    accepted[message_id] = time.time()
    except (smtplib.SMTPException, OSError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="hisp-bench-flow-"))
    queue = f"hisp-bench-{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "hisp.settings",
        "DATABASE_URL": args.database_url,
        "CELERY_BROKER_URL": args.redis_url,
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "HISP_DATA_DIR": str(data_dir),
        "HISP_CA_KEY_BITS": "2048",
        "LOG_LEVEL": "WARNING",
        "HISP_MDN_PROCESSED_TIMEOUT": "1h",
    }
    os.environ.update(env)
    _recreate_database(args.database_url)

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from hisp.certificates import load
    from hisp.keystore import unwrap_private_key
    from hisp.models import Certificate, Delivery, MailboxEntry, Message
    from hisp.services import identity, pki, routes, trust
    from hisp.smtp.protocol import HispController

    call_command("migrate", interactive=False, verbosity=0)
    # Every child shares the generated secrets through the data folder.
    env["SECRET_KEY"] = settings.SECRET_KEY
    env["HISP_KEY_ENCRYPTION_KEY"] = settings.HISP_KEY_ENCRYPTION_KEY

    identity.add_domain(HOSTED)
    identity.add_address(CLINICIAN, name="Bench clinician", address_cert=True)
    foreign_ca, foreign_cert, foreign_key = _foreign_pki()
    trust.import_anchors(foreign_ca.public_bytes(serialization.Encoding.PEM), domain=HOSTED)
    pki.import_certificate(foreign_cert.public_bytes(serialization.Encoding.PEM))
    hosted = Certificate.objects.filter(
        bound_name=CLINICIAN, private_key__isnull=False
    ).select_related("private_key").first()
    assert hosted is not None and hosted.private_key is not None
    our_cert = load(hosted)
    our_ca = load(trust.export_anchor(HOSTED).certificate)

    # The foreign HISP protects N messages to our clinician.
    foreign = MemoryEnvironment(
        signing={SENDER: [Identity(foreign_cert, lambda: foreign_key)]},
        certificates={CLINICIAN: (our_cert,)},
        trusted=[our_ca],
    ).environment()
    messages: list[tuple[str, bytes]] = []
    for i in range(args.messages):
        message_id = f"<{secrets.token_hex(12)}@{FOREIGN}>"
        protected = protect(_inner(i, message_id), sender=SENDER, recipients=[CLINICIAN],
                            env=foreign, at=datetime.now(UTC))
        assert protected.message is not None
        messages.append((message_id, protected.message))
    size = statistics.mean(len(raw) for _, raw in messages)

    # Agent-only throughput on the same cores, before the flow runs.
    key = unwrap_private_key(hosted.private_key)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    del key
    baseline, mdn_protects = agent_only(
        [raw for _, raw in messages],
        [_mdn(i, message_id) for i, (message_id, _raw) in enumerate(messages)],
        processes=args.concurrency,
        identity=(our_cert.public_bytes(serialization.Encoding.PEM), key_pem,
                  foreign_ca.public_bytes(serialization.Encoding.PEM),
                  foreign_cert.public_bytes(serialization.Encoding.PEM)),
    )
    # Each message costs the flow one unprotect and one MDN protect: were everything else
    # free, end to end could reach at most this, on the same cores.
    crypto_only = 1 / (1 / baseline + 1 / mdn_protects)
    del key_pem
    rsa_signs = rsa_bound(2)  # the machine's speed in this run, for reading the figures

    # The partner's SMTP server receives the MDNs through a static route.
    received = threading.Semaphore(0)

    class SinkHandler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.release()
            return "250 OK"

    # The partner runs this HISP's SMTP listener too (its chunked DATA reader): the partner's
    # CPU is spent on the same two cores, and is not what is being measured.
    sink = HispController(SinkHandler(), hostname="127.0.0.1", port=_free_port())
    sink.start()
    routes.set_route(FOREIGN, f"127.0.0.1:{sink.port}")

    smtp_port = _free_port()
    logs = data_dir / "logs"
    logs.mkdir()
    children: list[subprocess.Popen[bytes]] = []
    try:
        with open(logs / "smtp.log", "wb") as log:
            smtp = subprocess.Popen(
                [sys.executable, "manage.py", "runsmtp", "--bind", "127.0.0.1", "--port",
                 str(smtp_port), "--submission-port", "0"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        children.append(smtp)
        worker_name = f"{queue}@{socket.gethostname()}"
        with open(logs / "worker.log", "wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "hisp", "worker", "-Q", queue,
                 "--hostname", worker_name,
                 "--concurrency", str(args.worker_processes), "--loglevel", "WARNING",
                 "--without-gossip", "--without-mingle"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        children.append(worker)
        _wait_port(smtp_port, 60, smtp)
        _wait_worker(worker_name, 120, worker)
        _checkpoint()  # flush the set-up's writes (and an earlier run's) before the clock starts
        time.sleep(args.warmup)  # let the start-up's CPU settle before the clock starts

        accepted: dict[str, float] = {}
        errors: list[str] = []
        shares = [messages[i :: args.clients] for i in range(args.clients)]
        groups = {"smtp_listener": smtp.pid, "celery_workers": worker.pid}
        servers = {"postgresql": "postgres", "redis": "redis-server"}
        itself = {"bench_clients_and_partner": os.getpid()}  # its children are counted above
        cpu_before = cpu.snapshot(groups, servers, itself)
        start = time.time()
        senders = [
            threading.Thread(target=_send_all, args=(smtp_port, share, accepted, errors))
            for share in shares
        ]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join()
        sent_done = time.time()
        if errors:
            raise RuntimeError(f"SMTP clients failed: {errors}; logs in {logs}")
        deadline = time.monotonic() + args.timeout
        mdns = Delivery.objects.filter(message__kind=Message.Kind.MDN,
                                       state=Delivery.State.SENT)
        while mdns.count() < args.messages:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {mdns.count()} of {args.messages} MDNs left within {args.timeout}s; "
                    f"logs in {logs}"
                )
            time.sleep(0.25)
        cpu_after = cpu.snapshot(groups, servers, itself)
        last_mdn = max(d.sent_at for d in mdns if d.sent_at is not None).timestamp()
        in_mailbox = {
            e.message.message_id: e.received_at.timestamp()
            for e in MailboxEntry.objects.filter(folder="inbox").select_related("message")
        }
    finally:
        for child in reversed(children):
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
        sink.stop()

    latencies = [in_mailbox[mid] - accepted[mid] for mid in accepted if mid in in_mailbox]
    throughput = args.messages / (last_mdn - start)
    result = {
        "messages": args.messages,
        "clients": args.clients,
        "worker_processes": args.worker_processes,
        "agent_only_processes": args.concurrency,
        "cores": os.cpu_count(),
        "wire_message_bytes": round(size),
        "smtp_accept_msgs_per_s": round(args.messages / (sent_done - start), 1),
        "end_to_end_msgs_per_s": round(throughput, 1),
        "accept_to_mailbox_ms": {
            "p50": round(_percentile(latencies, 0.50) * 1000, 1),
            "p99": round(_percentile(latencies, 0.99) * 1000, 1),
        },
        "agent_only_unprotect_msgs_per_s": round(baseline, 1),
        "openssl_speed_rsa2048_signs_per_s": round(rsa_signs, 1),
        "OPENSSL_ia32cap": os.environ.get("OPENSSL_ia32cap", ""),
        "ratio_end_to_end_to_agent": round(throughput / baseline, 3),
        # Where the time goes (Linux): CPU per message by process group over the whole run,
        # beside what the agent's unprotect alone costs per message on the same cores.
        "cpu_ms_per_message": cpu.per_message_ms(cpu_before, cpu_after, args.messages),
        "agent_only_unprotect_cpu_ms_per_message": round(args.concurrency / baseline * 1000, 2),
        "agent_only_mdn_protect_msgs_per_s": round(mdn_protects, 1),
        # The ratio the flow would have if SMTP, Celery, PostgreSQL and the partner cost no
        # CPU at all: the ceiling the ratio target is measured against.
        "ratio_ceiling_with_only_the_agents_cryptography": round(crypto_only / baseline, 3),
        "targets": {
            "ratio_at_least_0.5": throughput / baseline >= 0.5,
            "at_least_150_msgs_per_s": throughput >= 150,
        },
        "delivered_to_mailbox": len(in_mailbox),
    }
    from django.db import connections

    _forget_queue(args.redis_url, queue)
    connections.close_all()
    if not args.keep_database:
        _drop_database(args.database_url)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hisp.bench.flow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2,
                        help="agent-only baseline pool size (default: one per core)")
    parser.add_argument("--worker-processes", type=int, default=2 * (os.cpu_count() or 2),
                        help="Celery worker processes (default: two per core)")
    parser.add_argument("--database-url",
                        default="postgres://postgres@127.0.0.1:5432/hisp_bench_flow")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument(
        "--native-caps", action="store_true", help="keep the OpenSSL wheel's own CPU detection"
    )
    args = parser.parse_args(argv)
    if not args.native_caps:
        # As agent.bench does (workers and the baseline pool inherit the mask).
        code = rerun_with_system_caps("hisp.bench.flow", argv)
        if code is not None:
            return code
    if min(args.messages, args.clients, args.concurrency, args.worker_processes) < 1:
        parser.error(
            "--messages, --clients, --concurrency and --worker-processes must be positive"
        )
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
