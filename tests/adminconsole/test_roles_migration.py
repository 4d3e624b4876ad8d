"""Upgrading to the console roles changes no one's access: every active staff member who could
do everything before holds the four roles after migration 0002; nobody else gains one."""

from __future__ import annotations

import pytest

ROLE_NAMES = {"registration", "certificates", "operations", "audit"}


@pytest.mark.django_db(transaction=True)
def test_existing_active_staff_get_every_role_and_no_one_else_gets_any() -> None:
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before = [("adminconsole", "0001_initial")]
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes("adminconsole")
    executor.migrate(before)
    try:
        old = MigrationExecutor(connection).loader.project_state(before).apps
        User = old.get_model("auth", "User")
        Group = old.get_model("auth", "Group")
        assert not Group.objects.filter(name__in=ROLE_NAMES).exists()
        for username, flags in {
            "sam": {"is_staff": True},
            "tess": {"is_staff": True},
            "gone": {"is_staff": True, "is_active": False},
            "root": {"is_staff": True, "is_superuser": True},
            "alice": {},
        }.items():
            User.objects.create(username=username, password="!", **flags)
        MigrationExecutor(connection).migrate(latest)
    finally:
        MigrationExecutor(connection).migrate(latest)
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group as CurrentGroup

    from adminconsole.roles import Role, roles_of

    assert set(CurrentGroup.objects.values_list("name", flat=True)) >= set(Role.values)
    users = {u.username: u for u in get_user_model().objects.all()}

    def held(name: str) -> set[str]:
        return set(users[name].groups.values_list("name", flat=True))

    assert held("sam") == held("tess") == ROLE_NAMES
    assert held("gone") == set()  # disabled: not handed roles it would carry if re-enabled
    assert held("root") == set()  # a superuser holds every role without a group
    assert held("alice") == set()
    assert roles_of(users["root"]).any
    assert all(roles_of(users["sam"]).holds(role) for role in Role)


@pytest.mark.django_db(transaction=True)
def test_the_roles_migration_can_be_reversed() -> None:
    from django.contrib.auth.models import Group
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes("adminconsole")
    try:
        executor.migrate([("adminconsole", "0001_initial")])
        assert not Group.objects.filter(name__in=ROLE_NAMES).exists()
    finally:
        MigrationExecutor(connection).migrate(latest)
    assert set(Group.objects.filter(name__in=ROLE_NAMES).values_list("name", flat=True)) == (
        ROLE_NAMES
    )
