"""Real processes for the end-to-end tests: ``manage.py runsmtp``, ``celery -A hisp worker``
(with its embedded beat) and, for the durability test, a private ``redis-server``.

They share this test run's database (see conftest.py for why that needs PostgreSQL), its data
folder and key-encryption key, and a broker queue named for this run only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import connection

from tests.support.services import free_port, missing, port_open, require_binary

ROOT = Path(__file__).resolve().parents[3]


def database_url() -> str:
    """The URL of the database pytest-django created for this run (PostgreSQL only)."""
    params = connection.settings_dict
    if params["ENGINE"] != "django.db.backends.postgresql":
        missing("PostgreSQL for the worker tests (set DATABASE_URL=postgres://...)")
    user = params.get("USER") or "postgres"
    password = f":{params['PASSWORD']}" if params.get("PASSWORD") else ""
    host = params.get("HOST") or "127.0.0.1"
    port = params.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{params['NAME']}"


def environment(broker: str, queue: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "CELERY_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=database_url(),
        HISP_DATA_DIR=str(settings.DATA_DIR),
        SECRET_KEY=settings.SECRET_KEY,
        HISP_KEY_ENCRYPTION_KEY=settings.HISP_KEY_ENCRYPTION_KEY,
        CELERY_BROKER_URL=broker,
        CELERY_TASK_DEFAULT_QUEUE=queue,
        HISP_HOSTNAME=settings.HISP_HOSTNAME,
        HISP_CA_KEY_BITS="2048",
        LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Process:
    """A child in its own session, so it and its children die together."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole group: no clean shutdown, no chance to ack or requeue."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def smtp(env: dict[str, str], folder: Path, port: int) -> Process:
    process = Process(
        "smtp",
        [sys.executable, "manage.py", "runsmtp", "--bind", "127.0.0.1", "--port", str(port),
         "--submission-port", "0"],
        env, folder / "smtp.log",
    ).start()
    wait_for(lambda: port_open("127.0.0.1", port) or not process.alive(), timeout=60,
             what="runsmtp to listen")
    assert process.alive(), process.tail()
    return process


def worker(env: dict[str, str], folder: Path, queue: str, *, concurrency: int = 2) -> Process:
    return Process(
        "worker",
        [sys.executable, "-m", "celery", "-A", "hisp", "worker", "--beat", "--loglevel",
         "WARNING", "--concurrency", str(concurrency), "-Q", queue, "--without-gossip",
         "--without-mingle", "--schedule", str(folder / f"beat-{uuid.uuid4().hex}")],
        env, folder / "worker.log",
    ).start()


class PrivateRedis:
    """A redis-server of our own, without persistence, that a test may restart."""

    def __init__(self, folder: Path) -> None:
        self.binary = require_binary("redis-server")
        self.folder = folder
        self.port = free_port()
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = Process(
            "redis",
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            dict(os.environ), self.folder / "redis.log",
        ).start()
        wait_for(lambda: port_open("127.0.0.1", self.port), timeout=20, what="redis-server")

    def restart(self) -> None:
        assert self.process is not None
        self.process.kill()
        wait_for(lambda: not port_open("127.0.0.1", self.port), timeout=10, what="redis to stop")
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def queue_name() -> str:
    return f"hisp-test-{uuid.uuid4().hex[:12]}"
