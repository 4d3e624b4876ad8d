"""``manage.py cert export ADDRESS_OR_DOMAIN [--out FILE]``,
``manage.py cert import FILE [--key FILE] [--password-stdin]`` and
``manage.py cert issue ADDRESS_OR_DOMAIN``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from hisp.certificates import display_fingerprint, load, to_pem
from hisp.management.cli import (
    CLI_ACTOR,
    read_file,
    read_secret,
    user_errors,
    write_output,
)
from hisp.management.commands import _arguments
from hisp.services import audit, outside_revocation, pki


class Command(BaseCommand):
    help = (
        "Export public certificates; import a partner's certificate or a hosted one with its "
        "key; issue a hosted address's or domain's certificate from its domain's CA."
    )
    stealth_options = ("stdin",)  # tests pass a stream instead of the process's stdin

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        exp = sub.add_parser("export", help="PEM of the certificates used for an address/domain")
        exp.add_argument("name", metavar="ADDRESS_OR_DOMAIN")
        exp.add_argument("--out", help="write to this file instead of stdout")
        imp = sub.add_parser("import", help="import a certificate (PEM, DER or PKCS#12)")
        imp.add_argument("file")
        imp.add_argument("--key", help="the private key (PEM or DER) of a hosted certificate")
        imp.add_argument(
            "--password-stdin", action="store_true", help="password of the PKCS#12 file or key"
        )
        issue = sub.add_parser(
            "issue", help="issue an address-bound (ADDRESS) or domain-bound (DOMAIN) certificate"
        )
        issue.add_argument("name", metavar="ADDRESS_OR_DOMAIN")

    def handle(self, *args: Any, **opts: Any) -> None:
        for option, name in (("file", "FILE"), ("key", "--key"), ("out", "--out")):
            if opts.get(option):
                _arguments.path(opts[option], name=name)
        if opts["action"] == "export":
            with user_errors():
                rows = pki.current_certificates(opts["name"])
            if not rows:
                raise CommandError(f"no certificate in use for {opts['name']}")
            write_output(self, to_pem(load(row) for row in rows), opts["out"])
            for row in rows:  # as the console records a certificate's PEM download
                audit.record(
                    action="certificate.export_pem",
                    obj=row,
                    actor=CLI_ACTOR,
                    fingerprint_sha256=row.fingerprint_sha256,
                )
            return
        if opts["action"] == "issue":
            with user_errors():
                issued = pki.issue_for(opts["name"], actor=CLI_ACTOR)
            for row in issued:
                self.stdout.write(
                    f"issued {row.get_binding_display().lower()} certificate for "
                    f"{row.bound_name} ({row.get_usage_display().lower()}); SHA-256 fingerprint "
                    f"{display_fingerprint(row.fingerprint_sha256)}"
                )
            return
        data = read_file(opts["file"])
        key = read_file(opts["key"]) if opts["key"] else None
        password = read_secret(opts.get("stdin")) if opts["password_stdin"] else None
        if password is not None and any("\ud800" <= ch <= "\udfff" for ch in password):
            # Bytes that were not UTF-8 reach Python as surrogates: say so, not "codec can't
            # encode" from deep inside the import.
            raise CommandError("--password-stdin: the password is not UTF-8 text")
        with user_errors():
            row = pki.import_certificate(data, key_data=key, password=password, actor=CLI_ACTOR)
        kind = "with its key" if row.private_key_id else "without key"
        self.stdout.write(
            f"imported {row.get_binding_display().lower()} certificate for {row.bound_name} "
            f"({kind}); SHA-256 fingerprint {display_fingerprint(row.fingerprint_sha256)}"
        )
        # An outside CA that could not be asked at import is not a refusal, but the operator
        # should know now, not at the next look at the console.
        checked = outside_revocation.check_state(row) if outside_revocation.applies(row) else None
        if checked is not None and checked.result is not outside_revocation.Result.GOOD:
            self.stderr.write(f"warning: revocation not confirmed: {checked.problem}")
