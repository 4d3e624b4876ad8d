"""``manage.py staff``: console accounts and their roles from the command line, every change in
the audit log, bad input refused on one line with nothing changed."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import CommandError

from adminconsole.roles import Role, roles_of
from hisp.management.commands import staff
from hisp.models import AuditEvent
from tests.hisp.cli.conftest import Run

ROOT = Path(__file__).resolve().parents[3]
ONE_TIME = re.compile(r"^one-time password \(shown once\): ([a-z2-9]{4}(?:-[a-z2-9]{4}){3})$", re.M)
GOOD_PASSWORD = "a long and unusual passphrase 7"


def _user(username: str) -> Any:
    return get_user_model().objects.get(username=username)


def _roles(username: str) -> set[str]:
    return set(_user(username).groups.values_list("name", flat=True))


def _state() -> list[tuple[Any, ...]]:
    """Every account with its flags and groups, and the audit log's length: what a refused
    command must leave as it was."""
    users = [
        (
            u.username,
            u.email,
            u.is_active,
            u.is_staff,
            u.is_superuser,
            u.password,
            sorted(u.groups.values_list("name", flat=True)),
        )
        for u in get_user_model().objects.order_by("username")
    ]
    return [*users, ("audit", AuditEvent.objects.count())]


def test_the_cli_knows_the_consoles_roles() -> None:
    assert staff.ROLES == tuple(Role.values)


@pytest.mark.django_db
def test_add_creates_active_staff_with_the_roles_and_prints_the_password_once(run: Run) -> None:
    out, err = run(
        "staff",
        "add",
        "rita",
        "--email",
        "rita@hisp.example",
        "--role",
        "registration",
        "--role",
        "audit",
    )
    assert err == ""
    passwords = ONE_TIME.findall(out)
    assert len(passwords) == 1
    assert out.count(passwords[0]) == 1
    rita = _user("rita")
    assert rita.is_active and rita.is_staff and not rita.is_superuser
    assert rita.email == "rita@hisp.example"
    assert rita.check_password(passwords[0])
    assert _roles("rita") == {"registration", "audit"}
    held = roles_of(rita)
    assert held.registration and held.audit and not held.certificates and not held.operations
    event = AuditEvent.objects.get(action="staff.add")
    assert event.actor_label == "cli" and event.actor is None
    assert event.object_id == str(rita.pk)
    assert event.detail == {"roles": ["registration", "audit"]}
    assert passwords[0] not in json.dumps(event.detail)


@pytest.mark.django_db
def test_add_reads_the_password_from_stdin_and_prints_none(run: Run) -> None:
    out, _ = run(
        "staff",
        "add",
        "carl",
        "--email",
        "carl@hisp.example",
        "--role",
        "certificates",
        "--password-stdin",
        stdin=GOOD_PASSWORD + "\n",
    )
    assert "password" not in out
    assert GOOD_PASSWORD not in out
    assert _user("carl").check_password(GOOD_PASSWORD)
    assert _roles("carl") == {"certificates"}


@pytest.mark.django_db
def test_add_works_when_the_role_groups_were_deleted(run: Run) -> None:
    Group.objects.filter(name__in=staff.ROLES).delete()
    run("staff", "add", "otto", "--email", "otto@hisp.example", "--role", "operations")
    assert _roles("otto") == {"operations"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args,stdin,error",
    [
        (
            ["rita", "--email", "r@hisp.example", "--role", "registrar"],
            None,
            "unknown role 'registrar': choose from registration, certificates, operations, audit",
        ),
        (
            ["rita", "--email", "r@hisp.example", "--role", "audit", "--role", "root"],
            None,
            "unknown role 'root'",
        ),
        (
            ["sam", "--email", "s@hisp.example", "--role", "audit"],
            None,
            "a user named sam exists already",
        ),
        (
            ["SAM", "--email", "s@hisp.example", "--role", "audit"],
            None,
            "a user named SAM exists already",
        ),
        (["rita", "--email", "not an email", "--role", "audit"], None, "invalid email address"),
        (["ri ta", "--email", "r@hisp.example", "--role", "audit"], None, "invalid username"),
        (
            ["rita", "--email", "r@hisp.example", "--role", "audit", "--password-stdin"],
            "",
            "no password on standard input",
        ),
        (
            ["rita", "--email", "r@hisp.example", "--role", "audit", "--password-stdin"],
            "rita\n",
            "password rejected",
        ),
    ],
)
def test_add_refuses_bad_input_and_changes_nothing(
    run: Run, args: list[str], stdin: str | None, error: str
) -> None:
    run("staff", "add", "sam", "--email", "sam@hisp.example", "--role", "audit")
    before = _state()
    with pytest.raises(CommandError, match=re.escape(error)) as raised:
        run("staff", "add", *args, stdin=stdin)
    assert "\n" not in str(raised.value)
    assert _state() == before


@pytest.mark.django_db
def test_add_needs_a_role(run: Run) -> None:
    with pytest.raises(CommandError, match="--role"):
        run("staff", "add", "rita", "--email", "r@hisp.example")
    assert not get_user_model().objects.filter(username="rita").exists()


@pytest.mark.django_db
def test_roles_replaces_the_roles_and_none_removes_them(run: Run) -> None:
    run(
        "staff",
        "add",
        "sam",
        "--email",
        "sam@hisp.example",
        "--role",
        "registration",
        "--role",
        "audit",
    )
    bystander = Group.objects.create(name="newsletter")
    _user("sam").groups.add(bystander)  # a group that is not a role is left alone
    out, _ = run("staff", "roles", "sam", "--role", "certificates")
    assert out.strip() == "sam: roles certificates"
    assert _roles("sam") == {"certificates", "newsletter"}
    event = AuditEvent.objects.filter(action="staff.roles").latest("id")
    assert event.actor_label == "cli"
    assert event.detail == {"before": ["registration", "audit"], "after": ["certificates"]}
    out, _ = run("staff", "roles", "sam", "--none")
    assert out.strip() == "sam: roles none"
    assert _roles("sam") == {"newsletter"}
    assert not roles_of(_user("sam")).any
    assert AuditEvent.objects.filter(action="staff.roles").latest("id").detail == {
        "before": ["certificates"],
        "after": [],
    }


@pytest.mark.django_db
def test_roles_refuses_bad_input_and_changes_nothing(run: Run) -> None:
    run("staff", "add", "sam", "--email", "sam@hisp.example", "--role", "audit")
    get_user_model().objects.create_user("alice")  # a mailbox user, not staff
    get_user_model().objects.create_superuser("root", "root@hisp.example", "x" * 20)
    before = _state()
    for args, error in [
        (["sam", "--role", "superuser"], "unknown role 'superuser'"),
        (["nobody", "--role", "audit"], "no such user: nobody"),
        (["alice", "--role", "audit"], "alice is not a staff account"),
        (["root", "--none"], "root is a superuser and holds every role"),
    ]:
        with pytest.raises(CommandError, match=re.escape(error)):
            run("staff", "roles", *args)
        assert _state() == before, args
    with pytest.raises(CommandError):
        run("staff", "roles", "sam")  # neither --role nor --none
    with pytest.raises(CommandError):
        run("staff", "roles", "sam", "--none", "--role", "audit")
    assert _state() == before


@pytest.mark.django_db
def test_disable_closes_the_account_and_is_audited(run: Run) -> None:
    run("staff", "add", "sam", "--email", "sam@hisp.example", "--role", "operations")
    out, _ = run("staff", "disable", "sam")
    assert out.strip() == "sam disabled"
    assert not _user("sam").is_active
    assert not roles_of(_user("sam")).any
    event = AuditEvent.objects.get(action="staff.disable")
    assert event.actor_label == "cli"
    assert event.detail == {"roles": ["operations"]}
    out, _ = run("staff", "disable", "sam")
    assert out.strip() == "sam is already disabled"
    assert AuditEvent.objects.filter(action="staff.disable").count() == 1


@pytest.mark.django_db
def test_disable_refuses_unknown_and_non_staff_users(run: Run) -> None:
    get_user_model().objects.create_user("alice")
    before = _state()
    with pytest.raises(CommandError, match="no such user: ghost"):
        run("staff", "disable", "ghost")
    with pytest.raises(CommandError, match="alice is not a staff account"):
        run("staff", "disable", "alice")
    assert _state() == before


@pytest.mark.django_db
def test_list_json_is_sorted_with_effective_roles(run: Run) -> None:
    run(
        "staff",
        "add",
        "zed",
        "--email",
        "zed@hisp.example",
        "--role",
        "audit",
        "--role",
        "registration",
    )
    run("staff", "add", "nora", "--email", "nora@hisp.example", "--role", "audit")
    run("staff", "roles", "nora", "--none")
    run("staff", "add", "bea", "--email", "bea@hisp.example", "--role", "operations")
    run("staff", "disable", "bea")
    get_user_model().objects.create_superuser("root", "root@hisp.example", "x" * 20)
    get_user_model().objects.create_user("alice")  # not staff: not listed
    out, err = run("staff", "list", "--json")
    assert err == ""
    assert json.loads(out) == [
        {
            "username": "bea",
            "email": "bea@hisp.example",
            "active": False,
            "superuser": False,
            "roles": ["operations"],
        },
        {
            "username": "nora",
            "email": "nora@hisp.example",
            "active": True,
            "superuser": False,
            "roles": [],
        },
        {
            "username": "root",
            "email": "root@hisp.example",
            "active": True,
            "superuser": True,
            "roles": ["registration", "certificates", "operations", "audit"],
        },
        {
            "username": "zed",
            "email": "zed@hisp.example",
            "active": True,
            "superuser": False,
            "roles": ["registration", "audit"],
        },
    ]
    text, _ = run("staff", "list")
    assert text.splitlines()[1] == "nora\tnora@hisp.example\tno role"


def test_a_real_process_refuses_an_unknown_role_on_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL"}}
    env.update(
        {
            "HISP_DATA_DIR": str(tmp_path / "var"),
            "DJANGO_SETTINGS_MODULE": "hisp.settings",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "HISP_KEY_ENCRYPTION_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        }
    )
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "staff",
            "add",
            "rita",
            "--email",
            "r@hisp.example",
            "--role",
            "admin",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "CommandError: unknown role 'admin': choose from registration, certificates, "
        "operations, audit"
    ]
    assert result.stdout == ""
