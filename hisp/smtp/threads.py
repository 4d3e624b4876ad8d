"""Running Django database work from the SMTP event loop without blocking it."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.conf import settings
from django.db import close_old_connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

T = TypeVar("T")

log = logging.getLogger(__name__)

# Bounded: each thread holds one database connection (reused within CONN_MAX_AGE).
MAX_THREADS = 8
THREAD_PREFIX = "smtp-db"
_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()
# Each pool thread's connection wrappers and the thread, for shutdown() to close. Recorded
# when a connection opens (not per call), so the hot path pays nothing for it.
_opened: dict[BaseDatabaseWrapper, threading.Thread] = {}


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


def _record(sender: object, connection: BaseDatabaseWrapper, **_: Any) -> None:
    thread = threading.current_thread()
    if thread.name.startswith(THREAD_PREFIX):
        with _lock:
            _opened[connection] = thread


connection_created.connect(_bound_statements, dispatch_uid="hisp.smtp.threads.bound")
connection_created.connect(_record, dispatch_uid="hisp.smtp.threads.record")


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix=THREAD_PREFIX)
        return _pool


def shutdown() -> None:
    """Stop the threads and close their database connections (listener shutdown).

    Left to the garbage collector, a connection stayed open as long as anything referenced
    it, such as the traceback of a logged database error: its PostgreSQL session then
    outlived the listener (and kept a test database from being dropped)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True)
    _close_orphans()


def _close_orphans() -> None:
    """Close the connections of pool threads that have ended (a newer pool's stay open).

    Django refuses to close a connection from a thread other than its own, to keep two
    threads from using one at once; the owner has ended, so none can, and sharing is
    allowed for the close alone."""
    with _lock:
        ended = [wrapper for wrapper, thread in _opened.items() if not thread.is_alive()]
        for wrapper in ended:
            del _opened[wrapper]
    for wrapper in ended:
        wrapper.inc_thread_sharing()
        try:
            wrapper.close()
        except Exception:  # the connection already broken: nothing left to close
            log.warning("closing an SMTP thread's database connection failed", exc_info=True)
        finally:
            wrapper.dec_thread_sharing()


def _run(func: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    close_old_connections()
    try:
        return func(*args, **kwargs)
    finally:
        close_old_connections()


async def in_thread(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor(), functools.partial(_run, func, args, kwargs))
