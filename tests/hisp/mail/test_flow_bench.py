"""The end-to-end flow benchmark runs from a fresh clone: real runsmtp and Celery worker
processes, PostgreSQL and Redis, every message in the mailbox and its MDN sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.hisp.mail.processes import ROOT, database_url
from tests.support.services import redis_url

pytestmark = pytest.mark.services


def test_the_flow_benchmark_delivers_every_message_and_reports_ratios(db: None) -> None:
    parts = urlsplit(database_url())
    own = urlunsplit(parts._replace(path=f"/hisp_bench_flow_{uuid.uuid4().hex[:8]}"))
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("PYTEST", "CELERY_", "DJANGO_")) and k != "DATABASE_URL"
    }
    done = subprocess.run(
        [sys.executable, "-m", "hisp.bench.flow", "--json", "--messages", "12", "--clients", "2",
         "--worker-processes", "2", "--database-url", own, "--redis-url", redis_url(),
         "--warmup", "0", "--timeout", "120"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout[done.stdout.index("{"):])
    assert result["delivered_to_mailbox"] == 12
    assert result["end_to_end_msgs_per_s"] > 0 and result["agent_only_unprotect_msgs_per_s"] > 0
    assert 0 < result["ratio_end_to_end_to_agent"] < 1
    assert result["openssl_speed_rsa2048_signs_per_s"] > 0
    assert result["accept_to_mailbox_ms"]["p99"] >= result["accept_to_mailbox_ms"]["p50"] > 0
    # Where the time went, by process group: each worked, and the parts add up.
    spent = result["cpu_ms_per_message"]
    assert spent["celery_workers"] > 0 and spent["smtp_listener"] > 0 and spent["postgresql"] > 0
    parts = sum(ms for group, ms in spent.items() if group != "total")
    assert abs(spent["total"] - parts) < 0.05
    assert result["agent_only_unprotect_cpu_ms_per_message"] > 0
    # The flow's other cryptography (the MDN's protect), and the ratio it would reach were
    # everything but the agent free: above the real one, below 1.
    assert result["agent_only_mdn_protect_msgs_per_s"] > 0
    ceiling = result["ratio_ceiling_with_only_the_agents_cryptography"]
    assert result["ratio_end_to_end_to_agent"] < ceiling < 1
