"""The quick start's data folder on a shared machine: the database holds every message in
clear once decrypted, so what the quick start writes is its owner's alone."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import stat
import subprocess
import sys
import time
import urllib.request
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.hisp.test_quickstart import _wait_for
from tests.support.services import free_port, port_open

ROOT = Path(__file__).resolve().parents[3]
_UNSET = {
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "REDIS_URL",
    "DJANGO_SETTINGS_MODULE",
    "SECRET_KEY",
    "HISP_KEY_ENCRYPTION_KEY",
    "HISP_WEB_URL",
}


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _UNSET}
    env["HISP_DATA_DIR"] = str(tmp_path / "var")
    return env


def _shell_umask() -> None:
    os.umask(0o022)  # the usual login shell's


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _quickstart(
    log: Path,
    env: dict[str, str],
    *,
    web: int = 0,
    submission: int = 0,
    demo: bool = False,
    bind: str | None = None,
    cwd: Path = ROOT,
    **popen: Any,
) -> subprocess.Popen[str]:
    """``manage.py quickstart`` in a process group of its own, every port but ``web`` and
    ``submission`` left to the system, its output in ``log``."""
    argv = [sys.executable, str(ROOT / "manage.py"), "quickstart"]
    argv += [] if demo else ["--no-demo"]
    argv += ["--bind", bind] if bind else []
    argv += [
        "--web-port",
        str(web),
        "--smtp-port",
        "0",
        "--submission-port",
        str(submission),
        "--dns-port",
        "0",
    ]
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **popen,
    )


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_quickstart_keeps_the_database_and_what_its_services_write_private(tmp_path: Path) -> None:
    env = _env(tmp_path)
    database = tmp_path / "var" / "hisp.sqlite3"
    # A database made before the HISP created it private (an older release's manage.py
    # migrate under the usual umask) is world-readable: the quick start closes it.
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
        preexec_fn=_shell_umask,
    )
    database.chmod(0o644)
    log = tmp_path / "quickstart.log"
    proc = _quickstart(log, env, preexec_fn=_shell_umask)
    try:
        _wait_for(lambda: "Data folder" in log.read_text(), 120, "the banner", proc)
        # The scheduler (a child) writes its state file: the children share the umask.
        schedule = tmp_path / "var"
        _wait_for(
            lambda: any(schedule.glob("celerybeat-schedule*")),
            60,
            "the scheduler's state file",
            proc,
        )
        for path in [
            database,
            *schedule.glob("celerybeat-schedule*"),
            *tmp_path.joinpath("var").glob("hisp.sqlite3-*"),
        ]:
            assert _mode(path) & 0o077 == 0, (path, oct(_mode(path)))
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        _kill(proc)


def _group(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` still running (zombies left out)."""
    members = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat_file.parent.name))
    return members


@pytest.mark.slow
def test_sigterm_before_the_banner_stops_every_service_it_started(tmp_path: Path) -> None:
    """A service manager (or a script's ``proc.terminate()``) may stop the quick start while
    it still waits for its listeners: the services go too, not left holding their ports."""
    web = free_port()
    log = tmp_path / "quickstart.log"
    proc = _quickstart(log, _env(tmp_path), web=web)
    try:
        _wait_for(lambda: len(_group(proc.pid)) > 1, 120, "the first service", proc)
        proc.terminate()  # the quick start alone, as a service manager's stop does
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 30
        while _group(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _group(proc.pid) == []
        assert not port_open("127.0.0.1", web)
    finally:
        if _group(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(timeout=30)


def _submit(port: int, password: str, subjects: list[str]) -> list[str]:
    """Alice's mail client: STARTTLS, AUTH with her password, one message per subject. Returns
    the subjects answered 250."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # self-signed, local
    accepted = []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.starttls(context=context)
        client.login("alice@direct.demo.test", password)
        for subject in subjects:
            message = EmailMessage()
            message["From"], message["To"] = "alice@direct.demo.test", "bob@direct.demo.test"
            message["Subject"] = subject
            message.set_content("Referral notes.\n")
            client.send_message(message)  # raises unless 250
            accepted.append(subject)
    return accepted


@pytest.mark.slow
def test_mail_accepted_before_ctrl_c_arrives_once_after_the_next_run(tmp_path: Path) -> None:
    """The user's path through the quick start: alice's mail client submits, Ctrl-C comes
    while the worker is still busy, the next run keeps the data (and says the demo passwords
    are unchanged) and delivers every message answered 250 to bob, once each."""
    submission = free_port()
    env = _env(tmp_path)

    def start(log: Path) -> subprocess.Popen[str]:
        return _quickstart(log, env, submission=submission, demo=True)

    first_log = tmp_path / "first.log"
    proc = start(first_log)
    try:
        _wait_for(lambda: "Demo login" in first_log.read_text(), 180, "the banner", proc)
        password = re.search(r"alice@direct\.demo\.test  password: (\S+)", first_log.read_text())[1]  # type: ignore[index]
        accepted = _submit(submission, password, [f"referral {n}" for n in range(30)])
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal reaches the whole group
        assert proc.wait(timeout=60) == 0
    finally:
        _kill(proc)
    assert len(accepted) == 30

    second_log = tmp_path / "second.log"
    proc = start(second_log)
    try:
        _wait_for(lambda: "Data folder" in second_log.read_text(), 180, "the banner", proc)
        assert "bob@direct.demo.test  password: (unchanged since the first run)" in (
            second_log.read_text()
        )

        def inbox() -> list[str]:
            out = subprocess.run(
                [sys.executable, "manage.py", "mailbox", "bob@direct.demo.test", "--json"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            return sorted(row["subject"] for row in json.loads(out.stdout))

        _wait_for(lambda: len(inbox()) >= len(accepted), 180, "every accepted message", proc)
        assert inbox() == sorted(accepted)  # each once
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        _kill(proc)


@pytest.mark.slow
def test_the_web_access_log_leaves_out_query_strings_and_referers(tmp_path: Path) -> None:
    """A webmail search is a GET with the words in the query string: a patient's name must not
    end up in the quick start's output (often kept in a file)."""
    web = free_port()
    log = tmp_path / "quickstart.log"
    proc = _quickstart(log, _env(tmp_path), web=web)
    try:
        _wait_for(lambda: "Data folder" in log.read_text(), 120, "the banner", proc)
        request = urllib.request.Request(
            f"http://127.0.0.1:{web}/mail/login/?q=Jane+Roe+HIV",
            headers={"Referer": f"http://localhost:{web}/mail/1/search/?q=John+Doe+oncology"},
        )
        with urllib.request.urlopen(request, timeout=30) as page:
            assert page.status == 200
        _wait_for(
            lambda: '"GET /mail/login/' in log.read_text(),
            30,
            "the access log line",
            proc,
        )
        text = log.read_text()
        assert '"GET /mail/login/ HTTP/1.1" 200' in text
        assert "Jane" not in text and "Doe" not in text and "q=" not in text
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        _kill(proc)


def _free_ipv6_port() -> int:
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_quickstart_serves_the_web_ui_on_an_ipv6_bind(tmp_path: Path) -> None:
    """``--bind ::1``: gunicorn reads ``::1:PORT`` as no port at all and the start failed."""
    web = _free_ipv6_port()
    log = tmp_path / "quickstart.log"
    proc = _quickstart(log, _env(tmp_path), web=web, bind="::1")
    try:
        _wait_for(lambda: "Data folder" in log.read_text(), 120, "the banner", proc)
        with urllib.request.urlopen(f"http://[::1]:{web}/mail/login/", timeout=30) as page:
            assert page.status == 200
        assert f"(listening on [::1]:{web})" in log.read_text()
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        _kill(proc)


@pytest.mark.slow
def test_a_relative_data_folder_is_the_same_for_every_service(tmp_path: Path) -> None:
    """``HISP_DATA_DIR=var python /path/to/manage.py quickstart`` from another folder: the
    services run in the project folder, where ``var`` named another data folder (an empty
    database and other secrets) than the one the quick start had migrated."""
    name = f"qs-review-{os.getpid()}-{time.monotonic_ns()}"
    env = _env(tmp_path)
    env["HISP_DATA_DIR"] = name
    log = tmp_path / "quickstart.log"
    proc = _quickstart(log, env, cwd=tmp_path)
    try:
        _wait_for(lambda: "Data folder" in log.read_text(), 120, "the banner", proc)
        # The scheduler, a child, keeps its state in the data folder.
        _wait_for(
            lambda: any((tmp_path / name).glob("celerybeat-schedule*")) or (ROOT / name).exists(),
            60,
            "the scheduler's state file",
            proc,
        )
        assert not (ROOT / name).exists()
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        _kill(proc)
        shutil.rmtree(ROOT / name, ignore_errors=True)
