"""The Celery application. Tasks take primary keys, never message bodies."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger, task_postrun, task_prerun

from hisp import broker, logsafety

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hisp.settings")
broker.register()

app = Celery("hisp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The worker replaces Django's logging handlers with its own: they get the same filter.
after_setup_logger.connect(logsafety.protect_handlers, weak=False)
after_setup_task_logger.connect(logsafety.protect_handlers, weak=False)


@task_prerun.connect
@task_postrun.connect
def _recycle_database_connections(**_: Any) -> None:
    """Around each task, what Django does around each request: drop connections that are past
    CONN_MAX_AGE or were left unusable by an error, and health-check the rest on next use
    (settings.CELERY_DB_REUSE_MAX says why Celery's own per-task close is off)."""
    from django.db import close_old_connections

    close_old_connections()
