from __future__ import annotations

from django.apps import AppConfig


class AdminConsoleConfig(AppConfig):
    name = "adminconsole"
    verbose_name = "Admin console"
    default_auto_field = "django.db.models.BigAutoField"
