"""The SQLite database is private whichever command creates it: ``manage.py migrate`` run alone,
under the usual umask, made it world-readable (it holds every message in clear and the wrapped
private keys)."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hisp.bootstrap import create_private_database

ROOT = Path(__file__).resolve().parents[3]
_UNSET = {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE",
          "SECRET_KEY", "HISP_KEY_ENCRYPTION_KEY"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _shell_umask() -> None:
    os.umask(0o022)  # the usual login shell's


def test_a_command_run_alone_creates_the_database_and_its_folder_private(tmp_path: Path) -> None:
    data = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k not in _UNSET}
    env["HISP_DATA_DIR"] = str(data)
    # showmigrations opens the database as migrate does, in a fraction of its time.
    subprocess.run(
        [sys.executable, "manage.py", "showmigrations", "hisp"],
        cwd=ROOT, env=env, check=True, capture_output=True, timeout=120,
        preexec_fn=_shell_umask,
    )
    database = data / "hisp.sqlite3"
    assert _mode(database) == 0o600
    assert _mode(data) == 0o700
    # SQLite gives its WAL and shared-memory files the database's mode, whoever writes next.
    with _umask(0o022):
        connection = sqlite3.connect(database)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("CREATE TABLE phi (x)")
            connection.commit()
            for suffix in ("-wal", "-shm"):
                assert _mode(data / f"hisp.sqlite3{suffix}") == 0o600, suffix
        finally:
            connection.close()


def test_a_database_is_created_exactly_private_even_under_a_stricter_umask(
    tmp_path: Path,
) -> None:
    """0600 less a umask of 0277 is 0400: SQLite could no longer write its own database."""
    with _umask(0o277):
        assert create_private_database(tmp_path / "hisp.sqlite3", data_dir=tmp_path)
    assert _mode(tmp_path / "hisp.sqlite3") == 0o600


def test_an_existing_database_and_a_folder_not_the_data_folder_are_left_alone(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    existing = shared / "existing.sqlite3"
    existing.write_bytes(b"")
    existing.chmod(0o640)  # an operator's choice, e.g. for a backup group
    assert not create_private_database(existing, data_dir=tmp_path / "var")
    assert _mode(existing) == 0o640
    assert create_private_database(shared / "new.sqlite3", data_dir=tmp_path / "var")
    assert _mode(shared / "new.sqlite3") == 0o600
    assert _mode(shared) == 0o755  # /tmp or a home folder must not be closed
    for name in ("", ":memory:", "file:memdb?mode=memory&cache=shared", None):
        assert not create_private_database(name, data_dir=tmp_path)
    assert not create_private_database(tmp_path / "missing" / "db.sqlite3", data_dir=tmp_path)
    assert not (tmp_path / "missing").exists()  # SQLite reports the missing folder itself


def test_the_data_folder_is_private_with_a_postgresql_database_too(tmp_path: Path) -> None:
    """The folder holds the generated SECRET_KEY and key-encryption key whatever the
    database: it was made 0755 under the usual umask when no SQLite file was created in it."""
    data = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k not in _UNSET}
    env["HISP_DATA_DIR"] = str(data)
    env["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/postgres"
    subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT, env=env, check=True, capture_output=True, timeout=120,
        preexec_fn=_shell_umask,
    )
    assert _mode(data) == 0o700
    assert not (data / "hisp.sqlite3").exists()
