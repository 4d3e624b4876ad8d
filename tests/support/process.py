"""Starting and stopping the private server processes the tests run (named, slapd)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar


class Server(Protocol):
    def start(self) -> None:
        """Start and wait until serving; raises ``RuntimeError`` when it could not."""
        ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=Server)


@contextmanager
def running(name: str, make: Callable[[int], S], *, attempts: int = 3) -> Iterator[S]:
    """``make(attempt)`` started, stopped on exit; tried again on a ``RuntimeError`` because a
    free port can be taken between choosing and binding it."""
    last_error: Exception | None = None
    for attempt in range(attempts):
        server = make(attempt)
        try:
            server.start()
        except RuntimeError as exc:
            server.stop()
            last_error = exc
            continue
        try:
            yield server
        finally:
            server.stop()
        return
    raise RuntimeError(f"could not start {name}: {last_error}")


def stop_process(process: subprocess.Popen[bytes] | None, *, timeout: float = 10) -> None:
    """Terminate ``process`` and reap it, killing it if it does not exit within ``timeout``."""
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
