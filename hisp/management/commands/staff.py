"""``manage.py staff add USERNAME --email EMAIL --role ROLE [--role ROLE ...] [--password-stdin]``,
``staff roles USERNAME (--role ROLE [...] | --none)``, ``staff disable USERNAME`` and
``staff list [--json]``: admin console accounts and their roles (docs/console-roles.md).

A new account gets a one-time password, printed once (or read from stdin), and enrols its
authenticator at first sign-in as every account does. Roles are the console's Groups; a
superuser holds every role and is made with ``createsuperuser``, not here."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser, Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Q

from hisp.management.cli import CLI_ACTOR, one_line, print_json, read_secret, shown
from hisp.management.commands import _arguments
from hisp.services import audit

# The console's roles, in its order (adminconsole.roles.Role: hisp may not import the console;
# tests/hisp/cli/test_staff.py holds the two equal).
ROLES = ("registration", "certificates", "operations", "audit")
_PASSWORD_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read out by phone


class Command(BaseCommand):
    help = "Admin console staff accounts and their roles: " + ", ".join(ROLES) + "."
    stealth_options = ("stdin",)  # tests pass a stream instead of the process's stdin

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="create a staff account with a one-time password")
        add.add_argument("username")
        add.add_argument("--email", required=True)
        add.add_argument(
            "--role",
            action="append",
            required=True,
            metavar="ROLE",
            help="one of " + ", ".join(ROLES) + "; repeat for more",
        )
        add.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the one-time password from stdin instead of generating one",
        )
        roles = sub.add_parser("roles", help="replace the roles of a staff account")
        roles.add_argument("username")
        which = roles.add_mutually_exclusive_group(required=True)
        which.add_argument(
            "--role",
            action="append",
            metavar="ROLE",
            help="one of " + ", ".join(ROLES) + "; repeat for more",
        )
        which.add_argument("--none", action="store_true", help="remove every role")
        disable = sub.add_parser("disable", help="disable a staff account (it can sign in no more)")
        disable.add_argument("username")
        listing = sub.add_parser("list", help="list staff accounts and their roles")
        listing.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **opts: Any) -> None:
        action = opts["action"]
        if action == "add":
            self._add(opts)
        elif action == "roles":
            self._roles(opts)
        elif action == "disable":
            self._disable(opts["username"])
        else:
            self._list(opts["json"])

    def _add(self, opts: dict[str, Any]) -> None:
        roles = _roles(opts["role"])
        email = _email(opts["email"])
        username = _new_username(opts["username"])
        users = get_user_model()
        if opts["password_stdin"]:
            password = read_secret(opts.get("stdin"))
            candidate = users(username=username, email=email)
            try:
                validate_password(password, user=candidate)
            except ValidationError as exc:
                raise CommandError(
                    one_line("password rejected: " + " ".join(exc.messages))
                ) from None
            generated = False
        else:
            password = "-".join(
                "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(4)) for _ in range(4)
            )
            generated = True
        with transaction.atomic():
            user = users.objects.create_user(
                username=username, email=email, password=password, is_staff=True
            )
            user.groups.set(_groups(roles))
            audit.record(action="staff.add", obj=user, actor=CLI_ACTOR, roles=list(roles))
        self.stdout.write(f"added staff {username} with roles {', '.join(roles)}")
        if generated:
            # Printed this once and never stored in clear: hand it over, then it is gone.
            self.stdout.write(f"one-time password (shown once): {password}")

    def _roles(self, opts: dict[str, Any]) -> None:
        roles = () if opts["none"] else _roles(opts["role"])
        with transaction.atomic():
            user = _staff(opts["username"], lock=True)
            if user.is_superuser:
                raise CommandError(
                    f"{user.get_username()} is a superuser and holds every role; "
                    "remove superuser status first"
                )
            before = _held(user)
            user.groups.remove(*user.groups.filter(name__in=ROLES))
            user.groups.add(*_groups(roles))
            audit.record(
                action="staff.roles", obj=user, actor=CLI_ACTOR, before=before, after=list(roles)
            )
        self.stdout.write(f"{user.get_username()}: roles {', '.join(roles) if roles else 'none'}")

    def _disable(self, username: str) -> None:
        with transaction.atomic():
            user = _staff(username, lock=True)
            if not user.is_active:
                self.stdout.write(f"{user.get_username()} is already disabled")
                return
            user.is_active = False
            user.save(update_fields=["is_active"])  # the session middleware signs it out
            audit.record(action="staff.disable", obj=user, actor=CLI_ACTOR, roles=_held(user))
        self.stdout.write(f"{user.get_username()} disabled")

    def _list(self, as_json: bool) -> None:
        rows = []
        staff = (
            get_user_model()
            .objects.filter(Q(is_staff=True) | Q(is_superuser=True))
            .prefetch_related("groups")
            .order_by("username")
        )
        for user in staff:
            names = {group.name for group in user.groups.all()}
            rows.append(
                {
                    "username": user.get_username(),
                    "email": user.email,
                    "active": user.is_active,
                    "superuser": user.is_superuser,
                    "roles": list(ROLES) if user.is_superuser else [r for r in ROLES if r in names],
                }
            )
        if as_json:
            print_json(self, rows)
            return
        for row in rows:
            flags = ("" if row["active"] else " (disabled)") + (
                " (superuser)" if row["superuser"] else ""
            )
            self.stdout.write(
                f"{shown(row['username'])}\t{shown(row['email']) or '-'}\t"
                f"{','.join(row['roles']) or 'no role'}{flags}"
            )


def _roles(given: list[str]) -> tuple[str, ...]:
    """The roles named, in the console's order, each once; an unknown one is refused whole."""
    wanted = {value.strip().lower() for value in given}
    unknown = sorted(wanted - set(ROLES))
    if unknown:
        raise CommandError(f"unknown role {shown(unknown[0])!r}: choose from {', '.join(ROLES)}")
    return tuple(role for role in ROLES if role in wanted)


def _groups(roles: tuple[str, ...]) -> list[Group]:
    # get_or_create: the groups come from a migration, but one deleted by hand comes back.
    return [Group.objects.get_or_create(name=role)[0] for role in roles]


def _held(user: AbstractUser) -> list[str]:
    names = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
    return [role for role in ROLES if role in names]


def _staff(username: str, *, lock: bool = False) -> AbstractUser:
    _arguments.text(username, name="USERNAME")
    users = get_user_model().objects
    found = (users.select_for_update() if lock else users).filter(username=username).first()
    if found is None:
        raise CommandError(f"no such user: {shown(username)}")
    if not (found.is_staff or found.is_superuser):
        # Mailbox users are managed through their addresses, not as staff.
        raise CommandError(f"{shown(username)} is not a staff account")
    return found


def _new_username(value: str) -> str:
    users = get_user_model()
    username = value.strip()
    limit = users._meta.get_field("username").max_length
    try:
        users.username_validator(username)
    except ValidationError:
        raise CommandError(
            f"invalid username {shown(value)!r}: letters, digits and @ . + - _ only"
        ) from None
    if not username or (limit is not None and len(username) > limit):
        raise CommandError(f"invalid username: 1 to {limit} characters")
    # Case-insensitive: "Sam" beside "sam" would be two accounts that read as one in the log.
    if users.objects.filter(username__iexact=username).exists():
        raise CommandError(f"a user named {shown(username)} exists already")
    return username


def _email(value: str) -> str:
    email = value.strip()
    try:
        validate_email(email)
    except ValidationError:
        raise CommandError(f"invalid email address {shown(value)!r}") from None
    return email
