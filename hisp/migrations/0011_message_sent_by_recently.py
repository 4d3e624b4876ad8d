# The sending limit's index (compose.recent_recipients). Built CONCURRENTLY on PostgreSQL: a plain
# CREATE INDEX would hold back every insert into hisp_message (the SMTP listeners' included) for
# as long as it reads the table, which on a HISP that has run for years is all received mail.

from django.db import migrations, models

INDEX = models.Index(
    condition=models.Q(("direction", "out"), ("kind", "regular")),
    fields=["envelope_from", "created_at"],
    name="message_sent_by_recently",
)


def _concurrently(schema_editor) -> dict:
    return {"concurrently": True} if schema_editor.connection.vendor == "postgresql" else {}


def create(apps, schema_editor):
    schema_editor.add_index(apps.get_model("hisp", "Message"), INDEX, **_concurrently(schema_editor))


def drop(apps, schema_editor):
    schema_editor.remove_index(
        apps.get_model("hisp", "Message"), INDEX, **_concurrently(schema_editor)
    )


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("hisp", "0010_message_trace"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddIndex(model_name="message", index=INDEX)],
            database_operations=[migrations.RunPython(create, drop)],
        ),
    ]
