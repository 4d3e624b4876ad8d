"""First-run secrets for the embedded quick start.

Only used when a secret is not configured and ``HISP_REQUIRE_SECRETS`` is off: the value is
generated once into the data folder (mode 0600) with a loud warning, so a restart keeps the same
keys. Production sets its own (the Docker image sets ``HISP_REQUIRE_SECRETS=1``).
"""

from __future__ import annotations

import base64
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path


class MissingSecret(RuntimeError):
    pass


def _write_private(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(data)


def generated_secret(
    path: Path, *, name: str, make: Callable[[], str], require: bool
) -> str:
    if path.exists():
        return path.read_text().strip()
    if require:
        raise MissingSecret(
            f"{name} is not set and HISP_REQUIRE_SECRETS=1: set {name} or {name}_FILE"
        )
    try:
        _write_private(path, make() + "\n")
        print(
            f"WARNING: generated {name} into {path} for the embedded quick start; "
            f"production must set its own {name}.",
            file=sys.stderr,
        )
    except FileExistsError:  # another process of the quick start won the race
        pass
    return path.read_text().strip()


def new_secret_key() -> str:
    return secrets.token_urlsafe(50)


def new_kek() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
