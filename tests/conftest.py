"""Personas and shared fixtures. alice and bob are clinicians, charlie is an outsider."""

from __future__ import annotations

import pytest
from django.conf import settings

from tests.support.services import in_ci, missing


@pytest.fixture(scope="session", autouse=True)
def _database_is_what_ci_promised() -> None:
    # CI runs against the real PostgreSQL; a silent fall-back to SQLite would hide that.
    if in_ci() and settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        missing("PostgreSQL (DATABASE_URL is not a postgres:// URL)")


@pytest.fixture(autouse=True)
def _forget_directory_rows() -> None:
    # Each test's database is rolled back afterwards, but a worker process's remembered rows
    # (hisp.agent_env.cached_rows) would outlive it: start every test from the database.
    from django.core.cache import cache

    from hisp.agent_env import forget_cached_rows

    forget_cached_rows()
    # The same for the shared cache (this worker's own folder, tests/settings.py): discovery
    # remembers a failed lookup for a short while, so a test whose DNS server never answered
    # left the next test in the process (tests of the same partner address) failing its
    # lookups too; throttling counts and the PKI stamp would leak the same way.
    cache.clear()
