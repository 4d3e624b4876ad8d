"""Running Django database work from the SMTP event loop without blocking it."""

from __future__ import annotations

import asyncio
import functools
import gc
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.conf import settings
from django.db import close_old_connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

T = TypeVar("T")

# Bounded: each thread holds one database connection (reused within CONN_MAX_AGE).
MAX_THREADS = 8
THREAD_PREFIX = "smtp-db"
_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _bound_statements(sender: object, connection: BaseDatabaseWrapper, **_: Any) -> None:
    """Every statement of the SMTP threads ends within HISP_SMTP_DB_TIMEOUT. A session waits
    for its DATA commit without an idle timer (no commit may go unanswered), so a database
    that hangs (a lock held, a full disk) must turn into an error, which the client gets as
    a 451 and retries, rather than into sessions and threads held for ever."""
    if (
        connection.vendor == "postgresql"
        and threading.current_thread().name.startswith(THREAD_PREFIX)
    ):
        limit = int(settings.HISP_SMTP_DB_TIMEOUT.total_seconds() * 1000)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('statement_timeout', %s, false)", [f"{limit}ms"]
            )


connection_created.connect(_bound_statements, dispatch_uid="hisp.smtp.threads.bound")


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix=THREAD_PREFIX)
        return _pool


def shutdown() -> None:
    """Stop the threads; their database connections close with them (listener shutdown)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True)
        gc.collect()  # drop the finished threads' connection objects now, closing them


def _run(func: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    close_old_connections()
    try:
        return func(*args, **kwargs)
    finally:
        close_old_connections()


async def in_thread(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor(), functools.partial(_run, func, args, kwargs))
