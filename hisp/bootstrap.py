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
import tempfile
from collections.abc import Callable
from pathlib import Path


class MissingSecret(RuntimeError):
    pass


def _write_private(path: Path, data: str) -> None:
    """Publish ``data`` at ``path`` whole or not at all: written to a private temporary file
    first, then linked into place (which fails if ``path`` exists). A process starting at the
    same moment never reads the file created but not yet written, which would give it an empty
    secret (another SECRET_KEY, or no key-encryption key at all)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:  # mkstemp makes it 0600
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            raise
        except OSError:  # a filesystem without hard links: create-exclusive, then write
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(data)
    finally:
        os.unlink(temporary)


def _read_secret(path: Path, name: str) -> str:
    value = path.read_text().strip()
    if not value:
        raise MissingSecret(
            f"{path} holds no {name}: set {name} or {name}_FILE, or remove the "
            "empty file to generate a new one"
        )
    return value


def generated_secret(path: Path, *, name: str, make: Callable[[], str], require: bool) -> str:
    if path.exists():
        return _read_secret(path, name)
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
    return _read_secret(path, name)


def new_secret_key() -> str:
    return secrets.token_urlsafe(50)


def new_kek() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def create_private_database(name: object, *, data_dir: Path | None) -> bool:
    """Create an SQLite database file that does not exist yet as an empty file of mode 0600,
    before SQLite creates it with 0644 less the umask: it will hold every message in clear once
    decrypted and every wrapped private key. SQLite gives its -wal, -shm and -journal files the
    database file's mode, so they are private too. A database created in the data folder also
    closes the folder (0700): it is this HISP's first run there, and a reader who opened a
    file before its mode was tightened would keep reading it. Only a file this call creates is
    changed; the quick start tightens one made before (hisp.management.commands.quickstart).
    An empty file is a valid empty database to SQLite. Whether it was created is returned."""
    text = str(name or "")
    if not text or text == ":memory:" or text.startswith("file:"):
        return False
    path = Path(text)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError:  # it exists, or no folder or a read-only one: SQLite says so on connecting
        return False
    try:
        os.fchmod(fd, 0o600)  # exactly: a umask such as 0277 would leave it unwritable
    finally:
        os.close(fd)
    folder = path.resolve().parent
    if data_dir is not None and folder == Path(data_dir).resolve():
        folder.chmod(0o700)
    return True
