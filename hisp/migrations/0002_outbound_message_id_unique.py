from django.db import migrations, models


def _set_duplicates_apart(apps, schema_editor):
    """Before the constraint: outbound rows sharing a Message-ID (the race it closes could make
    them) keep it only on the newest, which is the one delivery tracking matched reports to;
    the older ones get a suffix, so the constraint can be added and nothing is deleted."""
    Message = apps.get_model("hisp", "Message")
    shared = (
        Message.objects.filter(direction="out")
        .exclude(message_id="")
        .values("message_id")
        .annotate(n=models.Count("id"))
        .filter(n__gt=1)
        .values_list("message_id", flat=True)
    )
    for message_id in list(shared):
        older = Message.objects.filter(direction="out", message_id=message_id).order_by("-id")[1:]
        for row in older:
            Message.objects.filter(pk=row.pk).update(
                message_id=f"{message_id} (duplicate {row.pk})"[:998]
            )


class Migration(migrations.Migration):

    dependencies = [
        ("hisp", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(_set_duplicates_apart, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="message",
            constraint=models.UniqueConstraint(
                condition=models.Q(("direction", "out"), models.Q(("message_id", ""), _negated=True)),
                fields=("message_id",),
                name="one_outbound_message_per_message_id",
            ),
        ),
    ]
