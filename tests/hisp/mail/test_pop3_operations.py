"""Running POP3S: its settings are checked at start-up, runsmtp --pop3-port opens it, and the
quick start runs it and says where it is."""

from __future__ import annotations

import os
import poplib
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hisp.mail.pop3client import tls
from tests.hisp.test_quickstart import _wait_for
from tests.support.services import free_port

ROOT = Path(__file__).resolve().parents[3]


def _settings_error(**variables: str) -> str:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "hisp.settings", **variables}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    return result.stderr


@pytest.mark.parametrize(
    ("variables", "complaint"),
    [
        ({"HISP_POP3_IDLE_TIMEOUT": "9m"}, "HISP_POP3_IDLE_TIMEOUT must be at least 10 minutes"),
        ({"HISP_POP3_PORT": "70000"}, "HISP_POP3_PORT must be between 0 and 65535"),
        ({"HISP_POP3_PORT": "-1"}, "HISP_POP3_PORT must be a whole number of at least 0"),
        ({"HISP_POP3_MAX_SESSIONS": "0"}, "HISP_POP3_MAX_SESSIONS must be a whole number"),
        ({"HISP_POP3_SESSION_COMMAND_LIMIT": "x"}, "HISP_POP3_SESSION_COMMAND_LIMIT must be"),
    ],
)
def test_bad_pop3_settings_stop_the_start_naming_the_variable(tmp_path, variables, complaint):
    assert complaint in _settings_error(HISP_DATA_DIR=str(tmp_path), **variables)


def test_runsmtp_refuses_a_pop3_port_out_of_range(tmp_path):
    env = {**os.environ, "HISP_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "manage.py", "runsmtp", "--pop3-port", "70000"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "--pop3-port must be between 0 and 65535" in result.stderr


@pytest.mark.slow
def test_the_quick_start_serves_pop3s_and_names_its_port(tmp_path: Path) -> None:
    pop3 = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "DATABASE_URL",
            "CELERY_BROKER_URL",
            "REDIS_URL",
            "DJANGO_SETTINGS_MODULE",
            "SECRET_KEY",
            "HISP_KEY_ENCRYPTION_KEY",
            "HISP_WEB_URL",
        }
    }
    env["HISP_DATA_DIR"] = str(tmp_path / "var")
    log_path = tmp_path / "quickstart.log"
    log = log_path.open("w+")
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "quickstart",
            "--web-port",
            "0",
            "--smtp-port",
            "0",
            "--submission-port",
            "0",
            "--dns-port",
            "0",
            "--pop3-port",
            str(pop3),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: "Demo login" in log_path.read_text(), 120, "the banner", proc)
        banner = log_path.read_text()
        assert f"POP3S (implicit TLS):      127.0.0.1:{pop3}" in banner
        assert "SMTP (backbone" not in banner  # the SMTP ports stay closed as asked
        login, password = re.search(r"Demo login:\s+(\S+)\s+password: (\S+)", banner).groups()
        client = poplib.POP3_SSL("127.0.0.1", pop3, context=tls(), timeout=10)
        client.user(login)
        client.pass_(password)
        assert client.stat() == (0, 0)
        client.quit()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
