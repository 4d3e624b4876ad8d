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
