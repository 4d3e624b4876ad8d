"""Words from outside cannot forge or disguise a log line: a real runsmtp process logs what a
hostile SMTP client sends, and a real Celery logging set-up logs a hostile reply."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys

import pytest

from hisp.logsafety import ControlCharacterFilter, escaped
from tests.hisp.mail import processes
from tests.support.services import free_port

ESCAPE = "\x1b[2J\x1b[31m"  # clear the screen, then red
FORGED = "\r\n2026-11-24 12:00:00,000 INFO hisp all is well"


def test_unsafe_characters_are_written_as_escapes():
    assert escaped("plain text, ünïcode, 日本") == "plain text, ünïcode, 日本"
    assert escaped(ESCAPE + "x") == "\\x1b[2J\\x1b[31mx"
    assert escaped("a\r\nb\tc\x00\x85") == "a\\x0d\\x0ab\\x09c\\x00\\x85"
    assert escaped("file\u202egnp.exe\u2028") == "file\\u202egnp.exe\\u2028"


def _record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("t", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_the_filter_escapes_the_message_and_keeps_a_traceback_readable():
    record = _record("reply from %s: %r", "mx" + ESCAPE, 42)
    assert ControlCharacterFilter().filter(record)
    text = logging.Formatter("%(message)s").format(record)
    assert text == "reply from mx\\x1b[2J\\x1b[31m: 42"
    try:
        raise ValueError("bad" + FORGED)
    except ValueError as error:
        record = _record("failed", exc=error)
    ControlCharacterFilter().filter(record)
    text = logging.Formatter("%(message)s").format(record)
    assert text.startswith("failed\nTraceback (most recent call last):\n")
    assert "\r" not in text
    assert "ValueError: bad\\x0d\\x0a2026-11-24" in text  # the forged line stays on its own
    # A message with a % and no unsafe character is left to format as usual.
    record = _record("100%% of %d", 3)
    ControlCharacterFilter().filter(record)
    assert record.getMessage() == "100% of 3"


def _lines(log: str) -> list[str]:
    return [line for line in log.split("\n") if line]


def test_runsmtp_logs_a_hostile_client_as_visible_characters(tmp_path, live_server_db):
    port = free_port()
    env = processes.environment("memory://", processes.queue_name(), LOG_LEVEL="INFO")
    smtp = processes.smtp(env, tmp_path, port)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            reader = sock.makefile("rb")
            reader.readline()
            for line in [b"EHLO client.example\r\n", ESCAPE.encode() + b"XYZZY\r\n",
                         b"MAIL FROM:<a" + ESCAPE.encode() + b"@example.org>\r\n",
                         b"QUIT\r\n"]:
                sock.sendall(line)
                while (reply := reader.readline()) and reply[3:4] == b"-":
                    pass
    finally:
        smtp.stop()
    log = smtp.log.read_text(errors="strict")
    # An unknown command may be a credential sent out of turn: logged by its length only
    # (hisp.smtp.protocol.StrayLineFilter), so its escapes never reach the log either.
    assert "unrecognised: <14 octets not shown>" in log, log[-2000:]
    assert "\x1b" not in log
    assert "\r" not in log


def test_a_celery_worker_logging_setup_escapes_too(tmp_path):
    """What ``celery worker`` does on start (``app.log.setup``: its own handlers on the root
    logger, then the after_setup_logger signal), in a child process, then a hostile line."""
    program = (
        "import logging, django, os\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'tests.settings')\n"
        "django.setup()\n"
        "from hisp.celery import app\n"
        "app.log.setup(loglevel='INFO', colorize=False)\n"
        f"logging.getLogger('hisp.egress').warning('reply: %s', {(ESCAPE + FORGED)!r})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=processes.ROOT, capture_output=True, timeout=120,
        env=processes.environment("memory://", processes.queue_name()) | {"LOG_LEVEL": "INFO"},
    )
    out = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, out
    [line] = [x for x in _lines(out) if "reply:" in x]
    assert "reply: \\x1b[2J\\x1b[31m\\x0d\\x0a2026-11-24 12:00:00,000 INFO hisp all is well" in line
    assert "\x1b" not in out


@pytest.fixture
def live_server_db(db):
    """processes.environment reads this run's database settings (PostgreSQL only)."""
    processes.database_url()


@pytest.mark.django_db
def test_a_request_for_another_host_is_one_warning_line_without_a_traceback(client, caplog):
    response = client.get("/mail/login/", HTTP_HOST="scanner.invalid")
    assert response.status_code == 400
    [record] = [r for r in caplog.records if r.name == "django.security.DisallowedHost"]
    assert (record.levelname, record.exc_info, record.exc_text) == ("WARNING", None, None)
    assert "scanner.invalid" in record.getMessage()
