"""The HISP Django project: settings, core models, services, tasks, SMTP, CA and DNS."""

from hisp.celery import app as celery_app

__all__ = ["celery_app"]
