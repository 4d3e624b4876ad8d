"""Discovery benchmark: cached lookups per second, and cold DNS and LDAP lookup latency against
private ``named`` and ``slapd`` instances this module starts on loopback.

    python -m hisp.bench.discovery --json

No Django: it exercises ``agent.discovery`` exactly as a worker would. Cached lookups are
measured twice: with an in-memory cache, and with the production cache (``hisp.discovery_redis``:
the near cache in front of Redis, ``HISP_BENCH_REDIS_URL``, default the local Redis, under a key
prefix of its own that is deleted afterwards; skipped with a note when Redis does not answer).
Redis alone, without the near cache, is measured too, to show what the near cache buys.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import NameOID

from agent.discovery import CachePolicy, DiscoveryCache, DiscoveryResolver, MemoryCache
from hisp.discovery_redis import RedisStore, redis_cache

NAMED = os.environ.get("HISP_BENCH_NAMED", "/usr/sbin/named")
SLAPD = os.environ.get("HISP_BENCH_SLAPD", "/usr/sbin/slapd")
DOMAIN = "bench.test"
DNS_ADDRESS = f"dns@{DOMAIN}"  # has a CERT record
LDAP_ADDRESS = f"ldap@{DOMAIN}"  # only in the directory
SUFFIX = "dc=bench,dc=test"
ROOT_PASSWORD = "bench-only"  # a throw-away directory that lives for the run
REDIS_URL = os.environ.get("HISP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
TARGET_PER_S = 50_000  # issue 4, Speed: well under the agent's own cost per message


def _free_port() -> int:
    with socket.socket() as tcp:
        tcp.bind(("127.0.0.1", 0))
        port = int(tcp.getsockname()[1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", port))  # named needs the port free for UDP as well
    return port


def _certificate(address: str) -> x509.Certificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), False)
        .sign(key, hashes.SHA256())
    )


def _wait(probe: Callable[[], bool], process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        if probe():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start in 15s")


@contextmanager
def _process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def _named(directory: Path, cert: x509.Certificate, ldap_port: int) -> Iterator[str]:
    import dns.message
    import dns.query

    port = _free_port()
    der = base64.b64encode(cert.public_bytes(Encoding.DER)).decode()
    (directory / "zone").write_text(
        f"""$ORIGIN {DOMAIN}.
$TTL 300
@ IN SOA ns hostmaster 1 3600 600 86400 60
@ IN NS ns
ns IN A 127.0.0.1
dns IN CERT PKIX 0 0 ( {der} )
_ldap._tcp IN SRV 0 0 {ldap_port} ldap
ldap IN A 127.0.0.1
"""
    )
    (directory / "named.conf").write_text(
        f"""options {{ directory "{directory}"; pid-file "{directory}/named.pid";
  session-keyfile "{directory}/session.key"; managed-keys-directory "{directory}";
  listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};
  recursion no; dnssec-validation no; notify no; }};
controls {{ }};
zone "{DOMAIN}" {{ type primary; file "{directory}/zone"; }};
"""
    )

    def answers() -> bool:
        try:
            query = dns.message.make_query(DOMAIN + ".", "SOA")
            return bool(dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2).answer)
        except Exception:  # noqa: BLE001 - not up yet, whatever the reason
            return False

    argv = [NAMED, "-g", "-4", "-c", str(directory / "named.conf")]
    with _process(argv, directory / "named.log") as process:
        _wait(answers, process, "named")
        yield f"127.0.0.1:{port}"


@contextmanager
def _slapd(directory: Path, cert: x509.Certificate) -> Iterator[int]:
    from ldap3 import NONE, Connection, Server

    port = _free_port()
    (directory / "db").mkdir()
    schemas = "\n".join(
        f"include /etc/ldap/schema/{name}.schema" for name in ("core", "cosine", "inetorgperson")
    )
    (directory / "slapd.conf").write_text(
        f"""{schemas}
pidfile {directory}/slapd.pid
argsfile {directory}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
access to dn.base="" by * read
database mdb
maxsize 16777216
suffix "{SUFFIX}"
rootdn "cn=admin,{SUFFIX}"
rootpw {ROOT_PASSWORD}
directory {directory}/db
access to * by * read
"""
    )

    def admin() -> Connection:
        server = Server("127.0.0.1", port=port, get_info=NONE, connect_timeout=0.5)
        return Connection(server, user=f"cn=admin,{SUFFIX}", password=ROOT_PASSWORD)

    def answers() -> bool:
        try:
            connection = admin()
            ok = bool(connection.bind())
            connection.unbind()
            return ok
        except Exception:  # noqa: BLE001 - not up yet, whatever the reason
            return False

    argv = [
        SLAPD,
        "-d",
        "0",
        "-f",
        str(directory / "slapd.conf"),
        "-h",
        f"ldap://127.0.0.1:{port}/",
    ]
    with _process(argv, directory / "slapd.log") as process:
        _wait(answers, process, "slapd")
        connection = admin()
        connection.bind()
        connection.add(SUFFIX, ["dcObject", "organization"], {"dc": "bench", "o": "bench"})
        connection.add(
            f"uid=ldap,{SUFFIX}",
            ["inetOrgPerson"],
            {
                "uid": "ldap",
                "cn": "ldap",
                "sn": "ldap",
                "mail": LDAP_ADDRESS,
                "userSMIMECertificate": pkcs7.serialize_certificates([cert], Encoding.DER),
            },
        )
        connection.unbind()
        yield port


def _latencies(run: Callable[[], object], count: int) -> dict[str, float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "samples": count,
        "median_ms": round(statistics.median(samples), 3),
        "p95_ms": round(samples[int(count * 0.95) - 1], 3),
        "max_ms": round(samples[-1], 3),
    }


def _rate(run: Callable[[], object], seconds: float) -> float:
    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(1000):
            run()
        done += 1000
    return done / (time.perf_counter() - started)


@contextmanager
def _redis_prefix(url: str) -> Iterator[str | None]:
    """A key prefix of the run's own in ``url``, deleted afterwards; ``None`` when Redis does
    not answer."""
    store = RedisStore(url)
    try:
        store.client.ping()
    except Exception:  # noqa: BLE001 - not there, for whatever reason: the figure is skipped
        yield None
        return
    prefix = f"hisp-bench:{secrets.token_hex(6)}:"
    try:
        yield prefix
    finally:
        for key in store.client.scan_iter(match=prefix + "*", count=500):
            store.client.delete(key)


def _against_target(rate: float) -> dict[str, object]:
    return {
        "per_s": round(rate),
        "ratio_to_target": round(rate / TARGET_PER_S, 2),
        "meets_target": rate >= TARGET_PER_S,
    }


def run(*, seconds: float = 2.0, samples: int = 50) -> dict[str, object]:
    missing = [path for path in (NAMED, SLAPD) if not shutil.which(path)]
    if missing:
        return {"error": f"not installed: {', '.join(missing)}"}
    dns_cert, ldap_cert = _certificate(DNS_ADDRESS), _certificate(LDAP_ADDRESS)
    with tempfile.TemporaryDirectory(prefix="hisp-bench-") as tmp, ExitStack() as stack:
        (Path(tmp) / "named").mkdir()
        (Path(tmp) / "slapd").mkdir()
        ldap_port = stack.enter_context(_slapd(Path(tmp) / "slapd", ldap_cert))
        nameserver = stack.enter_context(_named(Path(tmp) / "named", dns_cert, ldap_port))
        # The bench's own slapd listens on loopback, which partners' SRV records may not name.
        cold = DiscoveryResolver.build(
            nameservers=[nameserver], timeout=5, ldap_allow_private_networks=True
        )

        def cold_dns() -> None:
            level = next(iter(cold.candidates(DNS_ADDRESS)))
            assert level.certificates == (dns_cert,), level

        def cold_ldap() -> None:
            levels = cold.candidates(LDAP_ADDRESS)
            for level in levels:  # DNS address, DNS domain, then the LDAP address level
                if level.source == "ldap":
                    assert level.certificates == (ldap_cert,), level
                    levels.close()
                    return
            raise AssertionError("no LDAP level")

        warm = DiscoveryResolver.build(
            nameservers=[nameserver], timeout=5, cache=DiscoveryCache(store=MemoryCache()),
            ldap_allow_private_networks=True,
        )
        cold_dns()
        cold_ldap()
        cold_dns_result = _latencies(cold_dns, samples)
        cold_ldap_result = _latencies(cold_ldap, samples)
        next(iter(warm.candidates(DNS_ADDRESS)))  # fill the cache
        list(warm.candidates(LDAP_ADDRESS))

        def cached_first_level() -> None:
            next(iter(warm.candidates(DNS_ADDRESS)))

        def cached_all_levels() -> None:
            for _ in warm.candidates(LDAP_ADDRESS):
                pass

        first_rate = _rate(cached_first_level, seconds)
        all_rate = _rate(cached_all_levels, seconds)
        redis_result = _redis_rates(nameserver, seconds)
    return {
        "cached_lookups_per_s": round(first_rate),
        "cached_lookups_target_per_s": TARGET_PER_S,
        "cached_lookups_meets_target": first_rate >= TARGET_PER_S,
        "cached_lookups_ratio_to_target": round(first_rate / TARGET_PER_S, 2),
        "cached_four_level_walks_per_s": round(all_rate),
        "cached_lookups_redis": redis_result,
        "cold_dns_cert_lookup": cold_dns_result,
        "cold_ldap_lookup_including_dns_misses": cold_ldap_result,
        "python": sys.version.split()[0],
    }


def _redis_rates(nameserver: str, seconds: float) -> dict[str, object]:
    """Cached lookups through the production cache (near cache + Redis) and through Redis
    alone, one process, against the real Redis."""
    with _redis_prefix(REDIS_URL) as prefix:
        if prefix is None:
            return {"skipped": f"Redis does not answer at {REDIS_URL}"}
        policy = CachePolicy()
        production = redis_cache(REDIS_URL, policy=policy, prefix=prefix)
        store_only = DiscoveryCache(store=RedisStore(REDIS_URL, prefix=prefix), policy=policy)
        rates: dict[str, object] = {}
        for label, cache in (("near_cache_and_redis", production), ("redis_only", store_only)):
            resolver = DiscoveryResolver.build(nameservers=[nameserver], timeout=5, cache=cache)
            next(iter(resolver.candidates(DNS_ADDRESS)))  # fill the cache

            def lookup(resolver: DiscoveryResolver = resolver) -> None:
                next(iter(resolver.candidates(DNS_ADDRESS)))

            # Redis alone is two round trips a lookup: a shorter run says as much.
            rates[label] = _against_target(
                _rate(lookup, seconds if label != "redis_only" else min(seconds, 1.0))
            )
        return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per throughput test")
    parser.add_argument("--samples", type=int, default=50, help="cold lookups per latency test")
    options = parser.parse_args(argv)
    result = run(seconds=options.seconds, samples=options.samples)
    if options.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
        redis_figures = result.get("cached_lookups_redis")
        if isinstance(redis_figures, dict) and "near_cache_and_redis" in redis_figures:
            production = redis_figures["near_cache_and_redis"]
            print(
                f"production cache (near + Redis): {production['per_s']:,}/s,"
                f" {production['ratio_to_target']}x the {TARGET_PER_S:,}/s target"
            )
    return 1 if "error" in result else 0


if __name__ == "__main__":
    raise SystemExit(main())
