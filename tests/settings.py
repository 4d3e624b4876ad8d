"""Settings for the test suite: the production settings, with a private data folder.

Each test process gets its own data folder (secrets, filesystem broker, cache), so concurrent
runs never share state. The database is whatever DATABASE_URL says (bin/test points it at the
real PostgreSQL); without it, SQLite in the data folder.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HISP_DATA_DIR", tempfile.mkdtemp(prefix="hisp-test-"))
os.environ.setdefault("HISP_WEB_URL", "http://testserver")

from hisp.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast; tests only
AXES_ENABLED = True
