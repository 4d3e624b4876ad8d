"""``manage.py keys rotate-kek --new-key-file F``: re-wrap every private key under a new KEK."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from hisp.keystore import KeystoreError, parse_kek, rotate_kek
from hisp.management.cli import CLI_ACTOR, read_file, user_errors
from hisp.management.commands import _arguments
from hisp.services import audit


class Command(BaseCommand):
    help = "Key custody operations."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        rotate = sub.add_parser(
            "rotate-kek", help="re-wrap every private key under a new key-encryption key"
        )
        rotate.add_argument(
            "--new-key-file",
            required=True,
            help="file holding the new KEK: 32 random bytes, URL-safe base64",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        raw = read_file(_arguments.path(opts["new_key_file"], name="--new-key-file"))
        with user_errors(KeystoreError):
            try:
                text = raw.decode("ascii")
            except UnicodeDecodeError:
                raise KeystoreError("the new key file is not URL-safe base64 text") from None
            new = parse_kek(text)
            # The staff action that decides which key opens every private key: recorded in the
            # same transaction as the re-wrap, so the log and the keys cannot disagree.
            with transaction.atomic():
                count = rotate_kek(new=new)
                audit.record(
                    action="kek.rotate", obj=("keystore", "kek"), actor=CLI_ACTOR, keys=count
                )
        self.stdout.write(
            f"re-wrapped {count} private keys under the new key-encryption key. Now set "
            f"HISP_KEY_ENCRYPTION_KEY (or HISP_KEY_ENCRYPTION_KEY_FILE) to the new key (or replace "
            f"the generated key_encryption_key file in the data folder) and restart every process: "
            f"the old key no longer opens anything."
        )
