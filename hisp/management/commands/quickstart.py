"""Run the whole HISP on one machine with embedded defaults, until Ctrl-C.

Migrates, creates a demo domain and users (unless --no-demo), then runs web, SMTP ingress and
submission, POP3S retrieval (when --pop3-port or HISP_POP3_PORT opens it), the DNS responder, a
Celery worker and the scheduler as one process group. A port given as 0 leaves that service
closed. Without --bind and the SMTP and DNS port options, those listeners follow HISP_SMTP_BIND,
HISP_SMTP_PORT, HISP_SUBMISSION_PORT, HISP_POP3_PORT, HISP_DNS_BIND and HISP_DNS_PORT, as
runsmtp and rundns do. A service that stops by itself stops the others and
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

from hisp.management.commands import _arguments

DEMO_DOMAIN = "direct.demo.test"
# Binds whose web address, for a browser on this machine, is http://localhost (all interfaces
# included: reaching the quick start from elsewhere needs HISP_WEB_URL set to a real name).
_LOCAL_NAMES = frozenset({"127.0.0.1", "::1", "localhost", "0.0.0.0", "::"})  # noqa: S104
# Gunicorn's default access log line carries the query string and the Referer, and with them
# what people type into GET forms (a webmail search for a patient's name, a console filter):
# here the path alone (%(U)s), as the logs carry ids and never such words.
_ACCESS_LOG_FORMAT = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s'
DEMO_USERS = (("alice", "Alice Adams, MD"), ("bob", "Bob Brown, RN"))


class Command(BaseCommand):
    help = "Run web, SMTP, submission, POP3S, DNS, worker and scheduler with embedded defaults."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--bind",
            default=None,
            help="address of every listener (default 127.0.0.1 for the web UI, "
            "HISP_SMTP_BIND and HISP_DNS_BIND for the others)",
        )
        parser.add_argument("--web-port", type=int, default=8000)
        parser.add_argument(
            "--smtp-port", type=int, default=None, help="default HISP_SMTP_PORT (2525)"
        )
        parser.add_argument(
            "--submission-port", type=int, default=None, help="default HISP_SUBMISSION_PORT (2587)"
        )
        parser.add_argument(
            "--pop3-port",
            type=int,
            default=None,
            help="POP3S, implicit TLS (default HISP_POP3_PORT: 0, closed)",
        )
        parser.add_argument(
            "--dns-port", type=int, default=None, help="default HISP_DNS_PORT (5353)"
        )
        parser.add_argument("--no-demo", action="store_true", help="create no demo domain/users")

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["bind"] is not None:
            # Checked here: the services would each fail with a traceback of their own, and the
            # wait for their listeners with one more.
            _arguments.text(opts["bind"], name="--bind")
        _listeners_from_settings(opts)
        for name in ("web_port", "smtp_port", "submission_port", "pop3_port", "dns_port"):
            if not 0 <= opts[name] <= 65535:
                raise CommandError(f"--{name.replace('_', '-')} must be between 0 and 65535")
        self._web_url(opts)
        _private_files()
        call_command("migrate", interactive=False, verbosity=0)
        _private_database()
        logins = [] if opts["no_demo"] else self._demo()
        # From the first child on, Ctrl-C or a service manager's SIGTERM stops the children
        # too: at any time, and before the banner as well (left to the default action there,
        # SIGTERM would end this process alone and leave every service running on its port).
        stop = _Stop()
        children = self._start(opts)
        if not stop.requested:
            _wait_until_listening(opts, children, stop)
        if not stop.requested:
            self._banner(opts, logins)
        self._supervise(children, stop)

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
        # The children run in the project folder: a relative HISP_DATA_DIR would name another
        # folder there (another database, other secrets) than the one this process migrated.
        os.environ["HISP_DATA_DIR"] = str(settings.DATA_DIR)
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        venv_bin = os.path.dirname(sys.executable)
        plan: list[tuple[str, list[str]]] = []
        if opts["web_port"]:
            plan.append(
                (
                    "web",
                    [
                        os.path.join(venv_bin, "gunicorn"),
                        "hisp.wsgi",
                        "--bind",
                        _host_port(opts["web_bind"], opts["web_port"]),
                        "--workers",
                        "2",
                        "--access-logfile",
                        "-",
                        "--access-logformat",
                        _ACCESS_LOG_FORMAT,
                    ],
                )
            )
        if opts["smtp_port"] or opts["submission_port"] or opts["pop3_port"]:
            plan.append(
                (
                    "smtp",
                    [
                        *manage,
                        "runsmtp",
                        "--bind",
                        opts["smtp_bind"],
                        "--port",
                        str(opts["smtp_port"]),
                        "--submission-port",
                        str(opts["submission_port"]),
                        "--pop3-port",
                        str(opts["pop3_port"]),
                    ],
                )
            )
        if opts["dns_port"]:
            plan.append(
                (
                    "dns",
                    [
                        *manage,
                        "rundns",
                        "--bind",
                        opts["dns_bind"],
                        "--port",
                        str(opts["dns_port"]),
                    ],
                )
            )
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
            lines.append(
                f"  Web UI:      {settings.HISP_WEB_URL}/  (listening on "
                f"{_host_port(opts['web_bind'], opts['web_port'])})"
            )
        if opts["smtp_port"]:
            lines.append(f"  SMTP (backbone, STARTTLS): {smtp_bind}:{opts['smtp_port']}")
        if opts["submission_port"]:
            lines.append(f"  Submission (STARTTLS+AUTH): {smtp_bind}:{opts['submission_port']}")
        if opts["pop3_port"]:
            lines.append(f"  POP3S (implicit TLS):      {smtp_bind}:{opts['pop3_port']}")
        if opts["dns_port"]:
            lines.append(
                f"  DNS (CERT records):        {dns_bind}:{opts['dns_port']} (UDP and TCP)"
            )
        lines.append(f"  Data folder: {settings.DATA_DIR}")
        for address, password in logins:
            lines.append(f"  Demo login:  {address}  password: {password}")
        if logins:
            lines.append("  (first sign-in asks you to enrol an authenticator app for TOTP)")
        self.stdout.write("\n".join(lines) + "\n")
        self.stdout.flush()

    def _supervise(self, children: list[tuple[str, subprocess.Popen[bytes]]], stop: _Stop) -> None:
        failed = ""
        try:
            while not stop.requested:
                for name, child in children:
                    if child.poll() is not None:
                        if not stop.requested:  # not one that the same Ctrl-C stopped first
                            failed = f"{name} exited with status {child.returncode}"
                        stop.requested = True
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


def _private_files() -> None:
    """Whatever the quick start and its services create is its owner's alone: the SQLite
    database holds every message in clear once decrypted (protected health information), and
    the default umask (022) would leave it readable by every account on the machine. The
    children inherit the umask."""
    os.umask(0o077)


def _private_database() -> None:
    """Close a database an earlier run (or ``manage.py migrate``) created readable by others,
    with its WAL and journal files. Only the files: the data folder may be one the operator
    shares on purpose."""
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.sqlite3":
        return
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = f"{database['NAME']}{suffix}"
        try:
            if os.stat(path).st_mode & 0o077:
                os.chmod(path, 0o600)
        except FileNotFoundError:
            continue
        except OSError as exc:  # not ours to change: say so rather than fail the start
            print(
                f"WARNING: {path} is readable by other accounts and could not be made "
                f"private ({exc.strerror or exc})",
                file=sys.stderr,
            )


class _Stop:
    """Set by SIGINT (Ctrl-C) or SIGTERM once installed."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGINT, self._request)
        signal.signal(signal.SIGTERM, self._request)

    def _request(self, signum: int, frame: object) -> None:
        self.requested = True


def _host_port(host: str, port: int) -> str:
    """``host:port`` as gunicorn's --bind reads it: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listeners_from_settings(opts: dict[str, Any]) -> None:
    """Fill in the listeners not given as options: --bind for all, else each service's own
    setting (the web UI has none: 127.0.0.1), like runsmtp and rundns on their own."""
    bind = opts["bind"]
    opts["web_bind"] = bind or "127.0.0.1"
    opts["smtp_bind"] = bind or settings.HISP_SMTP_BIND
    opts["dns_bind"] = bind or settings.HISP_DNS_BIND
    for option, setting in (
        ("smtp_port", "HISP_SMTP_PORT"),
        ("submission_port", "HISP_SUBMISSION_PORT"),
        ("pop3_port", "HISP_POP3_PORT"),
        ("dns_port", "HISP_DNS_PORT"),
    ):
        if opts[option] is None:
            opts[option] = getattr(settings, setting)


# How long the banner waits for the listeners (the first run migrates before it starts them).
LISTEN_WAIT = 60.0


def _wait_until_listening(
    opts: dict[str, Any], children: list[tuple[str, subprocess.Popen[bytes]]], stop: _Stop
) -> None:
    """Return once every TCP listener accepts a connection, a service has stopped (supervising
    then reports it), a stop is requested or ``LISTEN_WAIT`` has passed: the banner tells people
    to connect, so it is printed when they can."""
    wanted = [
        (opts[bind], opts[port])
        for bind, port in (
            ("web_bind", "web_port"),
            ("smtp_bind", "smtp_port"),
            ("smtp_bind", "submission_port"),
            ("smtp_bind", "pop3_port"),
            ("dns_bind", "dns_port"),
        )
        if opts[port]
    ]
    deadline = time.monotonic() + LISTEN_WAIT
    while wanted and time.monotonic() < deadline:
        if stop.requested or any(child.poll() is not None for _name, child in children):
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
