from __future__ import annotations

from django.apps import AppConfig


class HispConfig(AppConfig):
    name = "hisp"
    verbose_name = "HISP core"
    default_auto_field = "django.db.models.BigAutoField"
