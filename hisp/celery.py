"""The Celery application. Tasks take primary keys, never message bodies."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hisp.settings")

app = Celery("hisp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
