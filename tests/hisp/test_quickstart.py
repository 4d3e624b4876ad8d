"""The quick start, run as an operator would: one process group serving web, SMTP and DNS."""

from __future__ import annotations

import base64
import json
import os
import poplib
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from cryptography import x509

from tests.support.services import free_port, port_open, unverified_tls

ROOT = Path(__file__).resolve().parents[2]


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"quickstart exited ({proc.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_quickstart_serves_login_page_smtp_and_demo_logins(tmp_path: Path) -> None:
    web, smtp, dns_port, pop3 = free_port(), free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE",
                        "SECRET_KEY", "HISP_KEY_ENCRYPTION_KEY", "HISP_WEB_URL"}}
    env["HISP_DATA_DIR"] = str(tmp_path / "var")
    log = (tmp_path / "quickstart.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "quickstart", "--web-port", str(web),
         "--smtp-port", str(smtp), "--submission-port", "0", "--dns-port", str(dns_port),
         "--pop3-port", str(pop3)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: "Demo login" in (tmp_path / "quickstart.log").read_text(), 120,
                  "the banner with demo logins", proc)
        # The banner says where to connect once every listener answers, not before.
        assert all(port_open("127.0.0.1", port) for port in (web, smtp, dns_port, pop3))
        banner = (tmp_path / "quickstart.log").read_text()
        # The web address follows --web-port (HISP_WEB_URL unset), named localhost: the
        # origin security keys are bound to, and where certificates send relying parties.
        assert f"http://localhost:{web}/  (listening on 127.0.0.1:{web})" in banner
        assert "alice@direct.demo.test" in banner

        with urllib.request.urlopen(f"http://127.0.0.1:{web}/mail/login/", timeout=10) as page:
            assert page.status == 200
            assert b"Sign in" in page.read()

        with smtplib.SMTP("127.0.0.1", smtp, timeout=10) as client:
            code, _ = client.ehlo("test.example")
            assert code == 250
            assert client.has_extn("starttls")
        # The DNS responder publishes the demo domain's certificate (RFC 4398 CERT, PKIX).
        query = dns.message.make_query("direct.demo.test", "CERT")
        _wait_for(lambda: port_open("127.0.0.1", dns_port), 30, "the DNS port (TCP)", proc)
        answer = dns.query.udp(query, "127.0.0.1", port=dns_port, timeout=5)
        if answer.flags & dns.flags.TC:
            answer = dns.query.tcp(query, "127.0.0.1", port=dns_port, timeout=5)
        assert answer.rcode() == dns.rcode.NOERROR
        assert any(rrset.rdtype == dns.rdatatype.CERT for rrset in answer.answer)
        # A message between the demo users goes all the way through the embedded broker and
        # worker: protected, delivered to bob's mailbox, and acknowledged by a processed MDN.
        manage = [sys.executable, "manage.py"]
        sent = subprocess.run(
            [*manage, "send", "--from", "alice@direct.demo.test", "--to", "bob@direct.demo.test",
             "--subject", "Referral", "--body-file", "-", "--delivery-notification"],
            input="Please see the attached referral.\n", cwd=ROOT, env=env, capture_output=True,
            text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr

        def _json(*argv: str) -> list[dict[str, object]]:
            out = subprocess.run([*manage, *argv], cwd=ROOT, env=env, capture_output=True,
                                 text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)

        def _processed() -> bool:
            outbound = _json("messages", "--json", "--direction", "out")
            states = [d["state"] for m in outbound if m["subject"] == "Referral"
                      for d in m["deliveries"]]
            return states == ["processed"] or states == ["dispatched"]

        _wait_for(_processed, 90, "the processed MDN for alice's message", proc)
        inbox = _json("mailbox", "bob@direct.demo.test", "--json")
        assert [m["subject"] for m in inbox] == ["Referral"]
        assert inbox[0]["trusted"] is True and inbox[0]["signer"]
        assert "attached referral" in inbox[0]["body_text"]
        # Bob's mail client reads it over POP3S: the message the HISP verified, saying so.
        assert f"POP3S (implicit TLS):      127.0.0.1:{pop3}" in banner
        bob_password = re.search(r"Demo login:\s+bob@direct\.demo\.test\s+password: (\S+)",
                                 banner).group(1)
        client = poplib.POP3_SSL("127.0.0.1", pop3, context=unverified_tls(), timeout=10)
        client.user("bob@direct.demo.test")
        client.pass_(bob_password)
        retrieved = b"\r\n".join(client.retr(1)[1])
        client.quit()
        assert b"Authentication-Results: localhost;\r\n\tsmime=pass" in retrieved
        assert b"attached referral" in retrieved
        # An EHR system reads the same mailbox through the mail API, over the real web server.
        basic = base64.b64encode(f"bob@direct.demo.test:{bob_password}".encode()).decode()

        def _api(path: str) -> dict[str, Any]:
            request = urllib.request.Request(f"http://127.0.0.1:{web}/api/v1/{path}",
                                             headers={"Authorization": f"Basic {basic}"})
            with urllib.request.urlopen(request, timeout=30) as answer:
                assert answer.headers["Content-Type"] == "application/json"
                assert answer.headers.get("Set-Cookie") is None
                return json.loads(answer.read())

        [mailbox] = _api("mailboxes")["mailboxes"]
        assert mailbox["address"] == "bob@direct.demo.test"
        listed = _api(f"mailboxes/{mailbox['id']}/messages")["messages"]
        assert [m["subject"] for m in listed] == ["Referral"]
        assert "attached referral" in _api(f"entries/{listed[0]['id']}")["text"]
        # The demo certificates' CRL distribution point is served by this very quick start.
        exported = subprocess.run([*manage, "cert", "export", "bob@direct.demo.test"], cwd=ROOT,
                                  env=env, capture_output=True, timeout=60)
        assert exported.returncode == 0, exported.stderr
        certificate = x509.load_pem_x509_certificates(exported.stdout)[0]
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
        [crl_url] = [n.value for p in points.value for n in p.full_name or ()]
        assert crl_url.startswith(f"http://localhost:{web}/")
        with urllib.request.urlopen(crl_url, timeout=10) as crl:
            assert x509.load_der_x509_crl(crl.read()).issuer == certificate.issuer
        # --submission-port 0 leaves the submission listener closed.
        assert "Submission" not in banner
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("quickstart did not stop on Ctrl-C")
    assert not port_open("127.0.0.1", web)


def _quickstart(tmp_path: Path, *args: str, **env_vars: str) -> tuple[subprocess.Popen[str], Path]:
    """The quick start in its own process group and data folder, its output in a log file."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE",
                        "SECRET_KEY", "HISP_KEY_ENCRYPTION_KEY", "HISP_WEB_URL"}}
    env.update(HISP_DATA_DIR=str(tmp_path / "var"), **env_vars)
    log = tmp_path / "quickstart.log"
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "quickstart", "--no-demo", *args], cwd=ROOT, env=env,
        stdout=log.open("w"), stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    return proc, log


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_quickstart_listeners_follow_the_documented_environment_variables(tmp_path: Path) -> None:
    smtp, submission, dns_port = free_port(), free_port(), free_port()
    proc, log = _quickstart(tmp_path, "--web-port", "0", HISP_SMTP_PORT=str(smtp),
                            HISP_SUBMISSION_PORT=str(submission), HISP_DNS_PORT=str(dns_port))
    try:
        _wait_for(lambda: "Data folder" in log.read_text(), 120, "the banner", proc)
        banner = log.read_text()
        assert f"SMTP (backbone, STARTTLS): 127.0.0.1:{smtp}\n" in banner
        assert f"Submission (STARTTLS+AUTH): 127.0.0.1:{submission}\n" in banner
        assert f"DNS (CERT records):        127.0.0.1:{dns_port} (UDP and TCP)" in banner
        _wait_for(lambda: all(port_open("127.0.0.1", p) for p in (smtp, submission, dns_port)),
                  60, "the SMTP, submission and DNS ports", proc)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0  # Ctrl-C is a normal stop
    finally:
        _stop(proc)


@pytest.mark.slow
def test_quickstart_fails_when_a_service_cannot_listen(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        proc, log = _quickstart(tmp_path, "--web-port", "0", "--smtp-port", "0",
                                "--submission-port", "0", "--dns-port", str(busy))
        try:
            returncode = proc.wait(timeout=120)
        finally:
            _stop(proc)
    # A script or service manager sees the failure, and the operator the reason in one line.
    assert returncode == 1
    last = log.read_text().strip().splitlines()[-1]
    assert last.startswith("CommandError: dns exited with status 1; stopped the quick start")
