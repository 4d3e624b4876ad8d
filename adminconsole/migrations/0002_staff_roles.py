"""The console's four roles (adminconsole.roles), and every staff member who could do
everything before keeps doing it: an upgrade changes no one's access. Administrators then
narrow each account with ``manage.py staff roles``."""

from django.conf import settings
from django.db import migrations

# Frozen here as they were when this ran: the module's Role may change, this migration may not.
ROLES = ("registration", "certificates", "operations", "audit")


def create_roles(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    groups = [Group.objects.get_or_create(name=name)[0] for name in ROLES]
    for user in User.objects.filter(is_active=True, is_staff=True, is_superuser=False):
        user.groups.add(*groups)


def remove_roles(apps, schema_editor):
    # Back to the console before roles, where verified staff could do everything.
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("adminconsole", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
