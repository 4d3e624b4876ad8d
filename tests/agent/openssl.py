"""Drive the `openssl cms` CLI, the independent S/MIME peer in these tests."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any


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


def signed_by_alice(files: Any, data: bytes, *options: str, certfile: Path | None = None) -> bytes:
    """``openssl cms -sign`` as alice (``files``: the agent tests' Files), carrying the chain or
    ``certfile``; ``options`` go before the signer (``-nodetach``, ``-stream``, ``-outform``)."""
    return cms(
        "-sign",
        *options,
        "-signer",
        files.alice_cert,
        "-inkey",
        files.alice_key,
        "-certfile",
        certfile or files.chain,
        data=data,
    )
