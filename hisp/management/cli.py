"""Small shared helpers for the operator CLI (a stable public interface, see README).

Every command exits non-zero with a one-line error on bad input (``CommandError``), and with
``--json`` prints exactly one JSON array or object on stdout and nothing else.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from hisp.mailtext import printable

# The actor recorded in the audit log for actions taken at the command line.
CLI_ACTOR = "cli"


def _default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_json(command: BaseCommand, data: list[Any] | dict[str, Any]) -> None:
    command.stdout.write(json.dumps(data, default=_default, indent=2), ending="\n")


def one_line(message: str) -> str:
    return " ".join(str(message).split())


def shown(text: str) -> str:
    """A stranger's words (a partner's certificate subject, a discovered certificate) as one
    line for the operator's terminal: a control character could move the cursor, recolour or
    rewrite what the operator reads, so each becomes U+FFFD (JSON output escapes them anyway)."""
    return printable(str(text)).replace("\r", "\ufffd").replace("\n", "\ufffd").replace(
        "\t", " ")


@contextmanager
def user_errors(*kinds: type[Exception]) -> Iterator[None]:
    """Turn the services' typed errors (bad input) into a one-line ``CommandError``."""
    handled: tuple[type[Exception], ...] = (ValueError, *kinds)
    try:
        yield
    except CommandError:
        raise
    except handled as exc:
        raise CommandError(one_line(str(exc))) from None


def read_file(path: str) -> bytes:
    """The file's bytes, up to the message size limit: nothing the CLI reads (a certificate, a
    key, a bundle, a message or an attachment) is larger, and a device such as /dev/zero given
    by mistake must end in an error, not fill the memory."""
    limit = settings.HISP_MAX_MESSAGE_BYTES
    try:
        with open(path, "rb") as stream:
            data = stream.read(limit + 1)
    except OSError as exc:
        raise CommandError(one_line(f"cannot read {path}: {exc.strerror or exc}")) from None
    if len(data) > limit:
        raise CommandError(one_line(f"cannot read {path}: larger than {limit} bytes "
                                    "(HISP_MAX_MESSAGE_BYTES)"))
    return data


def write_output(command: BaseCommand, data: bytes, out: str | None) -> None:
    """Write to ``out`` (a file) or to stdout."""
    if out:
        try:
            Path(out).write_bytes(data)
        except OSError as exc:
            raise CommandError(one_line(f"cannot write {out}: {exc.strerror or exc}")) from None
        return
    command.stdout.write(data.decode("ascii"), ending="")


def read_secret(stream: IO[str] | None = None) -> str:
    """A password given on stdin (``--password-stdin``): its first line, without the newline."""
    line = (stream or sys.stdin).readline().rstrip("\r\n")
    if not line:
        raise CommandError("--password-stdin: no password on standard input")
    return line
