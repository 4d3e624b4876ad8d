"""Celery tasks, one module per subsystem. Celery's autodiscovery imports this package, so each
module is imported here."""

from hisp.tasks import mail, pki  # noqa: F401
