from __future__ import annotations

from django.apps import AppConfig


class HispConfig(AppConfig):
    name = "hisp"
    verbose_name = "HISP core"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the start-up checks (a wrong key-encryption key fails clearly).
        from hisp import checks  # noqa: F401
