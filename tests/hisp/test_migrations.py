"""The committed migrations describe the models exactly (nothing left for makemigrations)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_models_and_migrations_agree() -> None:
    out = StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit:  # --check exits 1 when a migration is missing
        pytest.fail(f"models changed without a migration:\n{out.getvalue()}", pytrace=False)


@pytest.mark.django_db(transaction=True)
def test_outbound_rows_sharing_a_message_id_are_set_apart_before_the_constraint() -> None:
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before = [("hisp", "0001_initial")]
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes("hisp")
    executor.migrate(before)
    try:
        old = MigrationExecutor(connection).loader.project_state(before).apps
        Message = old.get_model("hisp", "Message")

        def row(direction: str, message_id: str) -> int:
            return Message.objects.create(
                direction=direction, state="sent", raw=b"x", message_id=message_id
            ).pk

        raced = [row("out", "<raced@hisp.example>") for _ in range(3)]
        inbound = row("in", "<raced@hisp.example>")
        alone = row("out", "<alone@hisp.example>")
        executor = MigrationExecutor(connection)
        executor.migrate(latest)
    finally:
        MigrationExecutor(connection).migrate(latest)
    from hisp.models import Message as Current

    ids = dict(Current.objects.values_list("pk", "message_id"))
    assert ids[raced[2]] == ids[inbound] == "<raced@hisp.example>"  # the newest keeps it
    assert [ids[pk] for pk in raced[:2]] == [
        f"<raced@hisp.example> (duplicate {pk})" for pk in raced[:2]
    ]
    assert ids[alone] == "<alone@hisp.example>"


@pytest.mark.django_db(transaction=True)
def test_every_existing_domain_gets_its_postmaster_address() -> None:
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before = [("hisp", "0003_route_by_mx")]
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes("hisp")
    executor.migrate(before)
    try:
        old = MigrationExecutor(connection).loader.project_state(before).apps
        Domain = old.get_model("hisp", "Domain")
        Address = old.get_model("hisp", "Address")
        bare = Domain.objects.create(name="old.example.org")
        kept = Domain.objects.create(name="kept.example.org")
        # Made by hand earlier (README used to say so), in another case and held by staff.
        Address.objects.create(
            address="PostMaster@kept.example.org", domain=kept, status="suspended"
        )
        MigrationExecutor(connection).migrate(latest)
    finally:
        MigrationExecutor(connection).migrate(latest)
    from hisp.models import Address as Current
    from hisp.models import AuditEvent
    from hisp.services.mail import Verdict, recipient_verdict

    added = Current.objects.get(address="postmaster@old.example.org")
    assert added.domain_id == bare.pk
    assert (added.kind, added.status) == (Current.Kind.SYSTEM, Current.Status.ACTIVE)
    assert not added.certificates.exists()  # see the migration: issued later, by an operator
    event = AuditEvent.objects.get(action="address.add", object_id=str(added.pk))
    assert event.actor_label == "migration"
    assert recipient_verdict("Postmaster@old.example.org") is Verdict.ACCEPT
    # An existing postmaster is left as staff made it: no second spelling beside it.
    [existing] = Current.objects.filter(domain_id=kept.pk)
    assert (existing.address, existing.status) == ("PostMaster@kept.example.org", "suspended")


def test_every_migration_applies_and_unapplies_on_sqlite(tmp_path) -> None:
    """The quick start runs on SQLite: a PostgreSQL-only operation (CREATE INDEX
    CONCURRENTLY) must fall back to the plain one there, both ways."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'hisp.sqlite3'}",
           "HISP_DATA_DIR": str(tmp_path)}
    root = Path(__file__).resolve().parents[2]
    for args in (["migrate"], ["migrate", "hisp", "0007"], ["migrate"]):
        done = subprocess.run([sys.executable, "manage.py", *args, "--no-input"], cwd=root,
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
