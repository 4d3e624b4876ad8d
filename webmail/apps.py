from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class WebmailConfig(AppConfig):
    name = "webmail"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from webmail.search import ensure_search_index

        # Schema, not business logic: the search index is vendor-specific (see webmail.search).
        post_migrate.connect(ensure_search_index, sender=self, dispatch_uid="webmail-search-index")
