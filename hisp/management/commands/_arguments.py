"""Checks on the operator's arguments shared by the commands (not a command itself: Django
skips modules whose names start with an underscore).

Bytes that are not UTF-8 reach Python as lone surrogates, which no database driver, resolver
or socket accepts, and a NUL is refused by PostgreSQL and every system call: either used to
end in a codec or driver traceback far from the argument that caused it."""

from __future__ import annotations

import re
from email.utils import getaddresses

from django.core.management.base import CommandError

from hisp.management.cli import LONGEST_ECHOED_WORD
from hisp.services import compose

_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")
_LONGEST_SHOWN = LONGEST_ECHOED_WORD  # an echoed argument of 100 KB would bury the error line


def text(value: str, *, name: str) -> str:
    """``value`` for an argument that names something (an address, a user, a host, a URL)."""
    if _NOT_TEXT.search(value):
        raise CommandError(f"{name} must be UTF-8 text without NUL characters")
    return value


def path(value: str, *, name: str) -> str:
    """A file name: any bytes but NUL (a name that is not UTF-8 is a valid file name)."""
    if "\x00" in value:
        raise CommandError(f"{name}: a file name cannot hold a NUL character")
    return value


def recipient(value: str, *, name: str) -> str:
    """A recipient as the webmail's compose form and the submission port take it: ``a@x.org``
    or ``Dr A <a@x.org>``, one or more separated by commas, each passing the same rule
    (``compose.recipient_refusal``; Django's ``validate_email`` let through an address literal
    such as ``a@[127.0.0.1]``). The email package's header parser fails on some malformed ones
    (``a@`` ends in an IndexError)."""
    text(value, name=name)
    found = [address.strip() for _name, address in getaddresses([value])]
    if not found or not all(found):
        raise CommandError(f"{name}: not a Direct address: {_shown(value)}")
    for address in found:
        if compose.recipient_refusal(address):
            raise CommandError(f"{name}: not a Direct address: {_shown(address)}")
    return value


def _shown(value: str) -> str:
    value = value if len(value) <= _LONGEST_SHOWN else value[:_LONGEST_SHOWN] + "..."
    return repr(value)
