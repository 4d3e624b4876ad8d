"""Garbage arguments end in a clear one-line error and a non-zero exit, never a traceback: a
recipient the email package cannot parse, arguments that were not UTF-8 (Python passes them on
as lone surrogates, which PostgreSQL, the resolver and sockets refuse), NUL characters (from
in-process callers: PostgreSQL and every system call refuse them)."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from hisp.models import AuditEvent, Domain, Message, TrustBundle
from hisp.services import identity
from tests.hisp.cli.conftest import Run

ROOT = Path(__file__).resolve().parents[3]
NOT_UTF8 = "dr.\udcff\udcfe"  # what Python makes of the argument bytes b"dr.\xff\xfe"


@pytest.fixture
def sender(provider: Domain) -> str:
    return identity.add_address(f"dr.adams@{provider.name}", address_cert=True).address


def _send(sender: str, *extra: str) -> None:
    call_command("send", "--from", sender, "--subject", "s", *extra, stdout=io.StringIO(),
                 stdin=io.StringIO(""))


# --- send --to -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "shown"),
    [
        ("a@", "'a@'"),  # the email package's header parser failed with an IndexError
        ("dr adams@hospital.example.org", "'dr adams@hospital.example.org'"),
        ("a@x.org;b@y.org", "'a@x.org;b@y.org'"),
        ("x" * 5000 + "@", "'" + "x" * 100 + "...'"),
    ],
)
def test_send_refuses_a_recipient_that_is_not_an_address(
    sender: str, to: str, shown: str
) -> None:
    with pytest.raises(CommandError) as error:
        _send(sender, "--to", to)
    assert str(error.value) == f"--to: not a Direct address: {shown}"
    assert not Message.objects.exists()


def test_send_still_takes_a_recipient_with_a_display_name_and_a_list(sender: str) -> None:
    _send(sender, "--to", f"Dr Adams <{sender}>", "--to", f"{sender}, {sender.upper()}")
    assert Message.objects.count() == 1


# --- arguments that are not UTF-8 or hold NUL ------------------------------------------------


@pytest.mark.parametrize("bad", [NOT_UTF8, "dr\x00adams"])
@pytest.mark.parametrize(
    ("args", "name"),
    [
        (("mailbox", "{bad}@hospital.example.org", "--json"), "ADDRESS"),
        (("mailbox", "{bad}@hospital.example.org"), "ADDRESS"),
        (("discovery", "lookup", "{bad}@hospital.example.org"), "ADDRESS"),
        (("discovery", "flush", "{bad}@hospital.example.org"), "ADDRESS_OR_DOMAIN"),
        (("staff", "roles", "{bad}", "--none"), "USERNAME"),
        (("staff", "disable", "{bad}"), "USERNAME"),
        (("bundle", "add", "https://{bad}.example/b.p7b", "--domain", "hospital.example.org"),
         "URL"),
        (("runsmtp", "--bind", "{bad}"), "--bind"),
        (("rundns", "--bind", "{bad}", "--port", "5353"), "--bind"),
    ],
)
def test_a_name_argument_that_is_not_text_is_a_clear_error(
    run: Run, db: None, args: tuple[str, ...], name: str, bad: str
) -> None:
    with pytest.raises(CommandError) as error:
        run(*(arg.format(bad=bad) for arg in args))
    assert str(error.value) == f"{name} must be UTF-8 text without NUL characters"
    assert not TrustBundle.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="discovery.").exists()


def test_send_from_an_argument_that_is_not_text_is_a_clear_error(sender: str) -> None:
    with pytest.raises(CommandError, match="^--from must be UTF-8 text without NUL"):
        _send(f"{NOT_UTF8}@hospital.example.org", "--to", sender)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (("anchor", "import", "{nul}", "--domain", "hospital.example.org"), "FILE"),
        (("anchor", "export", "hospital.example.org", "--out", "{nul}"), "--out"),
        (("bundle", "add", "{nul}", "--domain", "hospital.example.org"), "FILE"),
        (("cert", "import", "{nul}"), "FILE"),
        (("cert", "import", "{cert}", "--key", "{nul}"), "--key"),
        (("cert", "export", "hospital.example.org", "--out", "{nul}"), "--out"),
        (("keys", "rotate-kek", "--new-key-file", "{nul}"), "--new-key-file"),
    ],
)
def test_a_file_name_with_a_nul_is_a_clear_error(
    run: Run, db: None, tmp_path: Path, args: tuple[str, ...], name: str
) -> None:
    cert = tmp_path / "partner.pem"
    cert.write_bytes(b"checked after the file names")
    with pytest.raises(CommandError) as error:
        run(*(arg.format(nul=f"{tmp_path}/a\x00b", cert=cert) for arg in args))
    assert str(error.value) == f"{name}: a file name cannot hold a NUL character"


@pytest.mark.parametrize("option", ["--body-file", "--attach"])
def test_send_with_a_file_name_holding_a_nul_is_a_clear_error(sender: str, option: str) -> None:
    with pytest.raises(CommandError, match=f"^{option}: a file name cannot hold a NUL"):
        _send(sender, "--to", sender, option, "/tmp/a\x00b")
    assert not Message.objects.exists()


def test_a_mailbox_argument_that_is_not_utf8_exits_with_one_line(tmp_path: Path) -> None:
    """Through manage.py as an operator's shell runs it: before, 73 lines of traceback."""
    env = {**os.environ, "HISP_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "hisp.settings"}
    env.pop("DATABASE_URL", None)  # the check comes before any query
    result = subprocess.run(
        [sys.executable, b"manage.py", b"mailbox", b"\xff\xfe@hospital.example.org"],
        cwd=ROOT, env=env, capture_output=True, timeout=120,
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.decode().splitlines() if "WARNING: generated" not in line]
    assert lines == ["CommandError: ADDRESS must be UTF-8 text without NUL characters"]


def test_quickstart_with_a_bind_that_is_not_utf8_exits_with_one_line(tmp_path: Path) -> None:
    """Before, it migrated, started every service (each failing on the address with its own
    traceback) and then failed itself waiting for their listeners."""
    env = {**os.environ, "HISP_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "hisp.settings"}
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL"):
        env.pop(name, None)
    argv = [sys.executable, b"manage.py", b"quickstart", b"--no-demo", b"--bind", b"\xff\xfe"]
    argv += [b"--web-port", b"0", b"--smtp-port", b"0", b"--submission-port", b"0"]
    argv += [b"--dns-port", b"0"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1
    lines = [line for line in err.decode().splitlines() if "WARNING: generated" not in line]
    assert lines == ["CommandError: --bind must be UTF-8 text without NUL characters"]
    with closing(sqlite3.connect(tmp_path / "hisp.sqlite3")) as database:  # nothing migrated
        assert database.execute("SELECT name FROM sqlite_master").fetchall() == []
