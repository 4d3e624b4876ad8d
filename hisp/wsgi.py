from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hisp.settings")
application = get_wsgi_application()

# gunicorn runs no system checks: refuse to serve with a wrong key-encryption key.
from hisp.keystore import verify_configured_kek  # noqa: E402

verify_configured_kek()
