"""Running POP3S: its settings are checked at start-up and runsmtp refuses a bad --pop3-port
(the quick start test, tests/hisp/test_quickstart.py, reads mail through it)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.hisp.mail.test_smtp_review3_limits import ROOT, start_outcomes

BAD_VALUES = [
    ("HISP_POP3_IDLE_TIMEOUT", "9m", "HISP_POP3_IDLE_TIMEOUT must be at least 10 minutes"),
    ("HISP_POP3_PORT", "70000", "HISP_POP3_PORT must be between 0 and 65535"),
    ("HISP_POP3_PORT", "-1", "HISP_POP3_PORT must be a whole number of at least 0"),
    ("HISP_POP3_MAX_SESSIONS", "0", "HISP_POP3_MAX_SESSIONS must be a whole number"),
    ("HISP_POP3_SESSION_COMMAND_LIMIT", "x", "HISP_POP3_SESSION_COMMAND_LIMIT must be"),
]


def test_bad_pop3_settings_stop_the_start_naming_the_variable(tmp_path):
    cases = [f"{name}={value}" for name, value, _ in BAD_VALUES]
    outcomes = start_outcomes(tmp_path, cases, unset="HISP_POP3_")
    for (name, _, complaint), outcome in zip(BAD_VALUES, outcomes, strict=True):
        assert outcome.startswith("ImproperlyConfigured: ") and complaint in outcome, name


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
