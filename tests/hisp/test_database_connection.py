"""The database connection gives up on a vanished host in about a minute: keepalives and a TCP
user timeout reach libpq, and DATABASE_URL's own query parameters still win."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_the_connection_to_postgresql_uses_keepalives_and_timeouts() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("libpq parameters are PostgreSQL's")
    connection.ensure_connection()
    used = connection.connection.info.get_parameters()
    assert used["connect_timeout"] == "10"
    assert used["keepalives"] == "1"
    assert used["keepalives_idle"] == "30"
    assert used["keepalives_count"] == "3"
    assert used["tcp_user_timeout"] == "60000"


def test_database_url_parameters_override_the_defaults() -> None:
    url = "postgres://hisp@db.invalid:5432/hisp?connect_timeout=3&keepalives_idle=5"
    code = ("import django; django.setup(); from django.conf import settings; "
            "o = settings.DATABASES['default']['OPTIONS']; "
            "print(o['connect_timeout'], o['keepalives_idle'], o['keepalives_count'])")
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "hisp.settings"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    assert out == ["3", "5", "3"]
