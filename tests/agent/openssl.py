"""Drive the `openssl cms` CLI, the independent S/MIME peer in these tests."""

from __future__ import annotations

import subprocess
from pathlib import Path


def cms(*args: str | Path, data: bytes = b"") -> bytes:
    result = subprocess.run(
        ["openssl", "cms", *map(str, args)], input=data, capture_output=True, timeout=60
    )
    if result.returncode != 0:
        raise AssertionError(f"openssl cms {args[0]} failed: {result.stderr.decode()[-800:]}")
    return result.stdout


def cms_fails(*args: str | Path, data: bytes = b"") -> bool:
    result = subprocess.run(
        ["openssl", "cms", *map(str, args)], input=data, capture_output=True, timeout=60
    )
    return result.returncode != 0
