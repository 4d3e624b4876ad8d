"""Third review: the listeners' limits are settings an operator can raise (HISP_SMTP_...), with
the protocol module's values as defaults, checked when the process starts, and the listeners
built by hisp.smtp.server use them."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from hisp.smtp import protocol, server
from tests.hisp.mail.conftest import _start
from tests.hisp.mail.test_smtp_hostile_clients import _connect, _reply, _say
from tests.support.services import free_port

ROOT = Path(__file__).resolve().parents[3]

DEFAULTS = {
    "HISP_SMTP_MAX_SESSIONS": protocol.MAX_SESSIONS,
    "HISP_SMTP_MAX_SESSIONS_PER_ADDRESS": protocol.MAX_CONNECTIONS_PER_ADDRESS,
    "HISP_SMTP_STRESS_SHARE": protocol.STRESS_SHARE,
    "HISP_SMTP_DATA_BUDGET_MESSAGES": protocol.DATA_BUDGET_MESSAGES,
    "HISP_SMTP_MAX_RECIPIENTS": protocol.MAX_RECIPIENTS,
    "HISP_SMTP_JUNK_COMMAND_LIMIT": protocol.JUNK_COMMAND_LIMIT,
    "HISP_SMTP_SESSION_COMMAND_LIMIT": protocol.SESSION_COMMAND_LIMIT,
    "HISP_SMTP_FAST_REFUSALS": protocol.FAST_REFUSALS,
    "HISP_SMTP_REFUSED_RECIPIENT_LIMIT": protocol.REFUSED_RECIPIENT_LIMIT,
}
DURATION_DEFAULTS = {
    "HISP_SMTP_IDLE_TIMEOUT": protocol.IDLE_TIMEOUT,
    "HISP_SMTP_STRESS_TIMEOUT": protocol.STRESS_TIMEOUT,
    "HISP_SMTP_REFUSED_RECIPIENT_DELAY": protocol.REFUSED_RECIPIENT_DELAY,
}


def _settings_in_a_new_process(tmp_path: Path, **environment: str) -> subprocess.CompletedProcess:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("HISP_SMTP_") and key != "DJANGO_SETTINGS_MODULE"
    }
    env.update(HISP_DATA_DIR=str(tmp_path), **environment)
    return subprocess.run(
        [sys.executable, "-c", "import hisp.settings"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


def test_the_defaults_are_the_protocol_modules_values():
    """Read with nothing set (tests/settings.py takes hisp.settings as it is)."""
    for name, value in DEFAULTS.items():
        assert getattr(django_settings, name) == value, name
    for name, seconds in DURATION_DEFAULTS.items():
        assert getattr(django_settings, name).total_seconds() == seconds, name


BAD_VALUES = [
    ("HISP_SMTP_MAX_SESSIONS", "lots", "HISP_SMTP_MAX_SESSIONS must be a whole number"),
    ("HISP_SMTP_MAX_SESSIONS_PER_ADDRESS", "0", "HISP_SMTP_MAX_SESSIONS_PER_ADDRESS must be"),
    ("HISP_SMTP_DATA_BUDGET_MESSAGES", "-3", "HISP_SMTP_DATA_BUDGET_MESSAGES must be"),
    ("HISP_SMTP_MAX_RECIPIENTS", "50", "HISP_SMTP_MAX_RECIPIENTS must be a whole number of at "
     "least 100"),
    ("HISP_SMTP_STRESS_SHARE", "1.5", "HISP_SMTP_STRESS_SHARE must be a fraction"),
    ("HISP_SMTP_STRESS_TIMEOUT", "0s", "HISP_SMTP_STRESS_TIMEOUT must be longer than 0"),
    ("HISP_SMTP_IDLE_TIMEOUT", "5 minutes", "HISP_SMTP_IDLE_TIMEOUT: not a duration"),
    ("HISP_SMTP_REFUSED_RECIPIENT_DELAY", "soon", "HISP_SMTP_REFUSED_RECIPIENT_DELAY: not a"),
]


# Reads hisp.settings afresh once per "NAME=value" argument, printing what stopped it: one
# process for every case (a process each took ten seconds).
_READ_EACH = """
import importlib, os, sys
from django.core.exceptions import ImproperlyConfigured
for case in sys.argv[1:]:
    name, _, value = case.partition("=")
    os.environ[name] = value
    sys.modules.pop("hisp.settings", None)
    try:
        importlib.import_module("hisp.settings")
        print("started")
    except ImproperlyConfigured as error:
        print(f"{type(error).__name__}: {error}")
    del os.environ[name]
"""


def start_outcomes(tmp_path, cases: list[str], *, unset: str) -> list[str]:
    """What reading the settings says for each ``NAME=value`` of ``cases`` in turn, in one new
    process (``started``, or the error that stops the start), with every variable whose name
    starts with ``unset`` taken out of the environment first."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(unset)}
    env["HISP_DATA_DIR"] = str(tmp_path)
    ran = subprocess.run(
        [sys.executable, "-c", _READ_EACH, *cases],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
    )
    outcomes = ran.stdout.splitlines()
    assert len(outcomes) == len(cases), ran.stderr
    return outcomes


def test_a_bad_limit_stops_the_start_naming_the_variable(tmp_path):
    cases = [f"{name}={value}" for name, value, _ in BAD_VALUES]
    outcomes = start_outcomes(tmp_path, cases, unset="HISP_SMTP_")
    for (name, _, message), outcome in zip(BAD_VALUES, outcomes, strict=True):
        assert outcome.startswith("ImproperlyConfigured: ") and message in outcome, (name, outcome)


def test_a_raised_limit_is_read(tmp_path):
    started = _settings_in_a_new_process(
        tmp_path, HISP_SMTP_MAX_SESSIONS="2000", HISP_SMTP_REFUSED_RECIPIENT_DELAY="0"
    )
    assert started.returncode == 0, started.stderr


def test_the_listeners_take_their_limits_from_the_settings(settings):
    settings.HISP_SMTP_MAX_SESSIONS = 1500
    settings.HISP_SMTP_MAX_SESSIONS_PER_ADDRESS = 200
    settings.HISP_SMTP_DATA_BUDGET_MESSAGES = 40
    settings.HISP_SMTP_STRESS_SHARE = 0.9
    settings.HISP_SMTP_MAX_RECIPIENTS = 500
    settings.HISP_SMTP_FAST_REFUSALS = 3
    for build in (server.backbone, server.submission):
        controller = build(bind="127.0.0.1", port=0)
        assert controller.connections.total == 1500
        assert controller.connections.limit == 200
        assert controller.connections.stress_share == 0.9
        assert controller.budget.limit == 40 * settings.HISP_MAX_MESSAGE_BYTES
        session = controller.factory()
        assert session.max_recipients == 500
        assert session._fast_refusals == 3


@pytest.mark.django_db(transaction=True)
def test_a_listener_refuses_sessions_past_the_configured_total(settings):
    settings.HISP_SMTP_MAX_SESSIONS = 1
    for controller in _start(server.backbone):
        first = _connect(controller)
        try:
            assert _reply(first).startswith(b"220 ")
            second = _connect(controller, "127.0.0.2")
            assert _reply(second) == protocol.TOO_BUSY.encode()
            second.close()
        finally:
            first.close()


@pytest.mark.django_db(transaction=True)
def test_a_message_takes_the_configured_number_of_recipients(settings, bob):
    settings.HISP_SMTP_MAX_RECIPIENTS = 2  # below RFC 5321's 100 only here, to count quickly
    for controller in _start(server.backbone):
        sock = _connect(controller)
        try:
            _reply(sock)
            _say(sock, b"EHLO partner.example.net\r\n")
            _say(sock, b"MAIL FROM:<doc@partner.example.net>\r\n")
            for _ in range(2):
                assert _say(sock, f"RCPT TO:<{bob.address}>\r\n".encode()).startswith(b"250")
            reply = _say(sock, f"RCPT TO:<{bob.address}>\r\n".encode())
            assert reply == protocol.TOO_MANY_RECIPIENTS.encode()
        finally:
            sock.close()


# --- descriptors for the sessions -------------------------------------------------------------


@pytest.fixture
def descriptor_limit():
    """The process's descriptor limits, put back afterwards."""
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield limits
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def test_a_session_total_beyond_the_descriptors_stops_the_start(settings, descriptor_limit):
    """Past the descriptor limit accept() fails under load, and with it the database and
    broker connections the listener needs: said at start instead."""
    settings.HISP_SMTP_MAX_SESSIONS = 10**9
    with pytest.raises(server.TooFewDescriptors, match="lower HISP_SMTP_MAX_SESSIONS"):
        server.start(bind="127.0.0.1", port=free_port(), submission_port=free_port())


def test_the_start_raises_the_soft_descriptor_limit_as_far_as_needed(settings, descriptor_limit):
    soft, hard = descriptor_limit
    if hard != resource.RLIM_INFINITY and hard < 1100:
        pytest.skip(f"the hard descriptor limit ({hard}) leaves no room to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (400, hard))
    settings.HISP_SMTP_MAX_SESSIONS = 450
    listeners = server.start(bind="127.0.0.1", port=free_port(), submission_port=free_port())
    try:
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 2 * 450
    finally:
        listeners.stop()
