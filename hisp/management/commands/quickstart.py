"""Run the whole HISP on one machine with embedded defaults, until Ctrl-C.

Migrates, creates a demo domain and users (unless --no-demo), then runs web, SMTP ingress and
submission, the DNS responder, a Celery worker and the scheduler as one process group. A port
given as 0 leaves that service closed. Without --bind and the SMTP and DNS port options, those
listeners follow HISP_SMTP_BIND, HISP_SMTP_PORT, HISP_SUBMISSION_PORT, HISP_DNS_BIND and
HISP_DNS_PORT, as runsmtp and rundns do. A service that stops by itself stops the others and
the command fails.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

DEMO_DOMAIN = "direct.demo.test"
# Binds whose web address, for a browser on this machine, is http://localhost (all interfaces
# included: reaching the quick start from elsewhere needs HISP_WEB_URL set to a real name).
_LOCAL_NAMES = frozenset({"127.0.0.1", "::1", "localhost", "0.0.0.0", "::"})  # noqa: S104
DEMO_USERS = (("alice", "Alice Adams, MD"), ("bob", "Bob Brown, RN"))


class Command(BaseCommand):
    help = "Run web, SMTP, submission, DNS, worker and scheduler with embedded defaults."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bind", default=None,
                            help="address of every listener (default 127.0.0.1 for the web UI, "
                                 "HISP_SMTP_BIND and HISP_DNS_BIND for the others)")
        parser.add_argument("--web-port", type=int, default=8000)
        parser.add_argument("--smtp-port", type=int, default=None,
                            help="default HISP_SMTP_PORT (2525)")
        parser.add_argument("--submission-port", type=int, default=None,
                            help="default HISP_SUBMISSION_PORT (2587)")
        parser.add_argument("--dns-port", type=int, default=None,
                            help="default HISP_DNS_PORT (5353)")
        parser.add_argument("--no-demo", action="store_true", help="create no demo domain/users")

    def handle(self, *args: Any, **opts: Any) -> None:
        _listeners_from_settings(opts)
        for name in ("web_port", "smtp_port", "submission_port", "dns_port"):
            if not 0 <= opts[name] <= 65535:
                raise CommandError(f"--{name.replace('_', '-')} must be between 0 and 65535")
        self._web_url(opts)
        call_command("migrate", interactive=False, verbosity=0)
        logins = [] if opts["no_demo"] else self._demo()
        children = self._start(opts)
        _wait_until_listening(opts, children)
        self._banner(opts, logins)
        self._supervise(children)

    def _web_url(self, opts: dict[str, Any]) -> None:
        """Unless HISP_WEB_URL is set, the web address follows --bind and --web-port: it is
        written into certificates (CRL, CA and OCSP URLs) and is the origin security keys are
        bound to, so it must be where the quick start really answers. A loopback bind is named
        ``localhost``: browsers treat it as a secure context, and a WebAuthn relying party must
        be a name, never an IP address."""
        if "HISP_WEB_URL" in os.environ or not opts["web_port"]:
            return
        bind = opts["web_bind"]
        host = "localhost" if bind in _LOCAL_NAMES else bind
        if ":" in host:
            host = f"[{host}]"
        url = f"http://{host}:{opts['web_port']}"
        os.environ["HISP_WEB_URL"] = url  # for every child process
        settings.HISP_WEB_URL = url  # for the demo certificates issued here
        hostname = host.strip("[]")
        if hostname not in settings.ALLOWED_HOSTS:
            settings.ALLOWED_HOSTS.append(hostname)

    def _demo(self) -> list[tuple[str, str]]:
        from hisp.models import Address, Domain
        from hisp.services import identity

        logins: list[tuple[str, str]] = []
        if not Domain.objects.filter(name=DEMO_DOMAIN).exists():
            identity.add_domain(DEMO_DOMAIN)
        for local, name in DEMO_USERS:
            address = f"{local}@{DEMO_DOMAIN}"
            if Address.objects.filter(address=address).exists():
                logins.append((address, "(unchanged since the first run)"))
                continue
            password = secrets.token_urlsafe(12)
            identity.add_address(address, name=name, password=password, address_cert=True)
            logins.append((address, password))
        return logins

    def _start(self, opts: dict[str, Any]) -> list[tuple[str, subprocess.Popen[bytes]]]:
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        venv_bin = os.path.dirname(sys.executable)
        plan: list[tuple[str, list[str]]] = []
        if opts["web_port"]:
            plan.append(("web", [os.path.join(venv_bin, "gunicorn"), "hisp.wsgi",
                                 "--bind", f"{opts['web_bind']}:{opts['web_port']}",
                                 "--workers", "2", "--access-logfile", "-"]))
        if opts["smtp_port"] or opts["submission_port"]:
            plan.append(("smtp", [*manage, "runsmtp", "--bind", opts["smtp_bind"],
                                  "--port", str(opts["smtp_port"]),
                                  "--submission-port", str(opts["submission_port"])]))
        if opts["dns_port"]:
            plan.append(("dns", [*manage, "rundns", "--bind", opts["dns_bind"],
                                 "--port", str(opts["dns_port"])]))
        celery = [sys.executable, "-m", "celery", "-A", "hisp"]
        plan.append(("worker", [*celery, "worker", "--loglevel", "INFO", "--concurrency", "2"]))
        plan.append(("beat", [*celery, "beat", "--loglevel", "INFO"]))
        children = []
        for name, argv in plan:
            children.append((name, subprocess.Popen(argv, cwd=settings.BASE_DIR)))
        return children

    def _banner(self, opts: dict[str, Any], logins: list[tuple[str, str]]) -> None:
        smtp_bind, dns_bind = opts["smtp_bind"], opts["dns_bind"]
        lines = ["", "HISP quick start is running (Ctrl-C stops everything)."]
        if opts["web_port"]:
            # The address the certificates and security keys name (see _web_url), which may
            # differ from the bind address (0.0.0.0, or a host name in HISP_WEB_URL).
            lines.append(f"  Web UI:      {settings.HISP_WEB_URL}/  (listening on "
                         f"{opts['web_bind']}:{opts['web_port']})")
        if opts["smtp_port"]:
            lines.append(f"  SMTP (backbone, STARTTLS): {smtp_bind}:{opts['smtp_port']}")
        if opts["submission_port"]:
            lines.append(f"  Submission (STARTTLS+AUTH): {smtp_bind}:{opts['submission_port']}")
        if opts["dns_port"]:
            lines.append(f"  DNS (CERT records):        {dns_bind}:{opts['dns_port']} "
                         "(UDP and TCP)")
        lines.append(f"  Data folder: {settings.DATA_DIR}")
        for address, password in logins:
            lines.append(f"  Demo login:  {address}  password: {password}")
        if logins:
            lines.append("  (first sign-in asks you to enrol an authenticator app for TOTP)")
        self.stdout.write("\n".join(lines) + "\n")
        self.stdout.flush()

    def _supervise(self, children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
        stopping = False
        failed = ""

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping:
                for name, child in children:
                    if child.poll() is not None:
                        if not stopping:  # not one that the same Ctrl-C stopped first
                            failed = f"{name} exited with status {child.returncode}"
                        stopping = True
                        break
                time.sleep(0.5)
        finally:
            for _, child in children:
                if child.poll() is None:
                    child.terminate()
            deadline = time.monotonic() + 10
            for _, child in children:
                try:
                    child.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()
        if failed:
            # A service that stopped by itself (a port in use, a bad setting) is a failure,
            # for a script or service manager too: its own error is in the output above.
            raise CommandError(f"{failed}; stopped the quick start (see its error above)")


def _listeners_from_settings(opts: dict[str, Any]) -> None:
    """Fill in the listeners not given as options: --bind for all, else each service's own
    setting (the web UI has none: 127.0.0.1), like runsmtp and rundns on their own."""
    bind = opts["bind"]
    opts["web_bind"] = bind or "127.0.0.1"
    opts["smtp_bind"] = bind or settings.HISP_SMTP_BIND
    opts["dns_bind"] = bind or settings.HISP_DNS_BIND
    for option, setting in (("smtp_port", "HISP_SMTP_PORT"),
                            ("submission_port", "HISP_SUBMISSION_PORT"),
                            ("dns_port", "HISP_DNS_PORT")):
        if opts[option] is None:
            opts[option] = getattr(settings, setting)


# How long the banner waits for the listeners (the first run migrates before it starts them).
LISTEN_WAIT = 60.0


def _wait_until_listening(
    opts: dict[str, Any], children: list[tuple[str, subprocess.Popen[bytes]]]
) -> None:
    """Return once every TCP listener accepts a connection, a service has stopped (supervising
    then reports it) or ``LISTEN_WAIT`` has passed: the banner tells people to connect, so it
    is printed when they can."""
    wanted = [
        (opts[bind], opts[port])
        for bind, port in (("web_bind", "web_port"), ("smtp_bind", "smtp_port"),
                           ("smtp_bind", "submission_port"), ("dns_bind", "dns_port"))
        if opts[port]
    ]
    deadline = time.monotonic() + LISTEN_WAIT
    while wanted and time.monotonic() < deadline:
        if any(child.poll() is not None for _name, child in children):
            return
        wanted = [(host, port) for host, port in wanted if not _accepts(host, port)]
        if wanted:
            time.sleep(0.2)


def _accepts(bind: str, port: int) -> bool:
    # A wildcard bind is reached on loopback.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(bind, bind)  # noqa: S104
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False
