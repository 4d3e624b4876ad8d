from __future__ import annotations

from django.apps import AppConfig


class HispConfig(AppConfig):
    name = "hisp"
    verbose_name = "HISP core"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # checks: registers the start-up checks (a wrong key-encryption key fails clearly).
        # agent_env: connects the PKI version stamp to certificate, anchor, bundle, address and
        # domain writes in every process, so workers' cached rows are invalidated whoever wrote.
        from django.db.models.signals import post_migrate

        from hisp import agent_env, checks  # noqa: F401
        from hisp.storage import use_lz4

        post_migrate.connect(use_lz4, sender=self, dispatch_uid="hisp-lz4-columns")
        _private_sqlite_database()


def _private_sqlite_database() -> None:
    """Every command (``manage.py migrate`` run alone, the web, a worker) that would create the
    SQLite database creates it private first, whatever its umask: no connection is opened
    before ready() runs. PostgreSQL is left alone."""
    from django.conf import settings

    from hisp.bootstrap import create_private_database

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        create_private_database(database["NAME"], data_dir=getattr(settings, "DATA_DIR", None))
