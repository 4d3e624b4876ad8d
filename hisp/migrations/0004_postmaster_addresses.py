"""Every hosted domain gets its ``postmaster@`` mailbox (RFC 5321 section 4.5.1, RFC 2142).

New domains get it from ``identity.add_domain`` together with an address-bound certificate.
Domains made before that get the address here, without a certificate: issuing one needs the
CA's private key (unwrapped with the key-encryption key), RSA key generation and today's
certificate models, none of which a migration may rely on (it runs with historical models, may
be replayed years later, and may run where the live key-encryption key is absent). Mail to the
address works without it: partners encrypt to the domain-bound certificate that every domain
has. ``manage.py cert issue postmaster@DOMAIN`` (or the console's "Issue an address-bound
certificate") adds the address's own certificate.

An existing postmaster address, in any case and any status, is left as staff made it.
"""

from __future__ import annotations

from django.db import migrations

MIGRATION = "0004_postmaster_addresses"


def add_postmasters(apps, schema_editor) -> None:
    Domain = apps.get_model("hisp", "Domain")
    Address = apps.get_model("hisp", "Address")
    AuditEvent = apps.get_model("hisp", "AuditEvent")
    alias = schema_editor.connection.alias
    added = 0
    for domain in Domain.objects.using(alias).order_by("pk"):
        value = f"postmaster@{domain.name}"
        if Address.objects.using(alias).filter(address__iexact=value).exists():
            continue
        row = Address.objects.using(alias).create(
            address=value,
            domain=domain,
            display_name="Postmaster",
            kind="system",
            status="active",
        )
        AuditEvent.objects.using(alias).create(
            actor_label="migration",
            action="address.add",
            object_type="hisp.address",
            object_id=str(row.pk),
            detail={"kind": "system", "user": False, "certificates": [], "migration": MIGRATION},
        )
        added += 1
    if added:
        # Running listeners may remember "no such address": the shared stamp makes every
        # process read the directory again (the same call every writer of addresses makes).
        from hisp.agent_env import bump_pki_version

        bump_pki_version()


class Migration(migrations.Migration):

    dependencies = [
        ("hisp", "0003_route_by_mx"),
    ]

    # Reversing keeps the addresses: they may hold delivered mail and audit history by now.
    operations = [migrations.RunPython(add_postmasters, migrations.RunPython.noop)]
