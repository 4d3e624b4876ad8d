"""Settings for the test suite: the production settings, with a private data folder.

Each test process, and each pytest-xdist worker, gets its own data folder (secrets, filesystem
broker, cache), so concurrent runs never share state. The database is whatever DATABASE_URL says (bin/test points it at the
real PostgreSQL); without it, SQLite in the data folder.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HISP_DATA_DIR", tempfile.mkdtemp(prefix="hisp-test-"))
# pytest-xdist workers inherit the controller's environment, and with it its data folder: one
# worker's cache.clear() (or the file cache's culling) would then empty the cache under a test
# running in the other. Each worker takes a folder of its own inside it, once (its child
# processes inherit both variables and keep the worker's folder).
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker and os.environ.get("HISP_TEST_WORKER_DIR") != _worker:
    os.environ["HISP_DATA_DIR"] = tempfile.mkdtemp(
        prefix=f"{_worker}-", dir=os.environ["HISP_DATA_DIR"]
    )
    os.environ["HISP_TEST_WORKER_DIR"] = _worker
os.environ.setdefault("HISP_WEB_URL", "http://testserver")

from hisp.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast; tests only
AXES_ENABLED = True
