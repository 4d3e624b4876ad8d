"""Settings with embedded defaults, first-run secrets, durations and the audit log."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from hisp.durations import parse_duration

ROOT = Path(__file__).resolve().parents[2]


def _settings_process(data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in {"SECRET_KEY", "HISP_KEY_ENCRYPTION_KEY", "DATABASE_URL",
                          "HISP_REQUIRE_SECRETS", "DJANGO_SETTINGS_MODULE"}}
    clean.update({"HISP_DATA_DIR": str(data_dir), **env})
    code = "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='hisp.settings'; " \
           "from django.conf import settings; print(settings.DATABASES['default']['ENGINE'])"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean,
                          capture_output=True, text=True, timeout=60)


def test_it_generates_private_secrets_on_first_run(tmp_path: Path) -> None:
    result = _settings_process(tmp_path / "var")
    assert result.returncode == 0, result.stderr
    assert "sqlite3" in result.stdout
    for name in ("secret_key", "key_encryption_key"):
        path = tmp_path / "var" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert "production must set its own" in result.stderr
    first = (tmp_path / "var" / "key_encryption_key").read_text()
    again = _settings_process(tmp_path / "var")
    assert again.returncode == 0 and "generated" not in again.stderr
    assert (tmp_path / "var" / "key_encryption_key").read_text() == first


def test_it_refuses_to_start_without_secrets_when_required(tmp_path: Path) -> None:
    result = _settings_process(tmp_path / "var", HISP_REQUIRE_SECRETS="1")
    assert result.returncode != 0
    assert "SECRET_KEY is not set and HISP_REQUIRE_SECRETS=1" in result.stderr
    assert not (tmp_path / "var" / "secret_key").exists()


def test_it_reads_secrets_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "sk"
    secret.write_text("from-a-file")
    kek = tmp_path / "kek"
    kek.write_text("A" * 43 + "=")
    result = _settings_process(tmp_path / "var", HISP_REQUIRE_SECRETS="1",
                               SECRET_KEY_FILE=str(secret), HISP_KEY_ENCRYPTION_KEY_FILE=str(kek))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("text", "expected"), [
    ("30s", timedelta(seconds=30)), ("15m", timedelta(minutes=15)), ("1h", timedelta(hours=1)),
    ("3d", timedelta(days=3)), ("1h30m", timedelta(minutes=90)), ("45", timedelta(seconds=45)),
])
def test_durations_parse_operator_forms(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "1x", "h", "1h 5", "-1h", "1.5h"])
def test_durations_reject_nonsense_with_a_clear_error(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.django_db
def test_the_audit_log_is_append_only() -> None:
    from hisp.models import AuditEvent
    from hisp.services.audit import record

    event = record(action="test.action", obj=("thing", 7), actor="system", reason="x")
    assert event.actor_label == "system" and event.object_id == "7"
    event.detail = {"changed": True}
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(pk=event.pk).update(action="other")
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get(pk=event.pk).detail == {"reason": "x"}
