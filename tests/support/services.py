"""Reaching the real services the tests use, and failing loudly in CI when one is missing."""

from __future__ import annotations

import os
import shutil
import socket
import ssl

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(what: str) -> None:
    """Skip locally, fail in CI: under CI=true a missing service is never a skip."""
    message = f"{what} is not available"
    if in_ci():
        pytest.fail(message + " (required under CI=true)", pytrace=False)
    pytest.skip(message)


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_binary(name: str, path: str | None = None) -> str:
    found = path if path and os.path.exists(path) else shutil.which(name)
    if not found:
        missing(f"the {name} binary")
    assert found is not None
    return found


def unverified_tls() -> ssl.SSLContext:
    """A client TLS context for our own listeners, whose certificate is self-signed in tests."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_url() -> str:
    url = os.environ.get("HISP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    if not port_open(host or "127.0.0.1", int(port or 6379)):
        missing(f"Redis at {host_port}")
    return url
