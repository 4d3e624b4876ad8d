"""Start-up checks (Django system checks run by every management command and the dev server)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import DatabaseError, connections

from hisp.keystore import KeystoreError, verify_configured_kek

# Where the operator finds how the KEK is set and rotated (the README has no such section).
KEK_HINT = "see docs/pki.md, section 'Private keys'"


@register("security")
def key_encryption_key_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    try:
        verify_configured_kek()
    except KeystoreError as exc:
        return [Error(str(exc), id="hisp.E001", hint=KEK_HINT)]
    return []


@register()
def crl_timing_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    # A CRL due for renewal as soon as it is signed would be signed and stored again on every
    # anonymous fetch of the distribution point.
    if settings.HISP_CRL_REFRESH_BEFORE >= settings.HISP_CRL_VALIDITY:
        return [Error(
            f"HISP_CRL_REFRESH_BEFORE ({settings.HISP_CRL_REFRESH_BEFORE}) must be shorter than "
            f"HISP_CRL_VALIDITY ({settings.HISP_CRL_VALIDITY})",
            id="hisp.E002",
            hint="the defaults are 7d and 2d: a CRL lasts a week and is renewed two days early",
        )]
    return []


# Each stale row is one warning; past this many of a kind, one more says how many were left out
# (an upgrade that tightened a rule may flag thousands, and the first ones show what to fix).
_LONGEST_STALE_LIST = 20
_STALE_HINT = (
    "made under an older rule: mail, discovery and certificates use today's spelling, so this "
    "row may receive nothing or be refused. It is not changed for you (its certificates and "
    "audit history name it as stored): add it as today's rules take it (manage.py domain add, "
    "address add) and take this one out of service"
)


@register(Tags.database)
def identity_rules_check(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """Hosted domains and addresses stored under older rules (a domain ``1.2.3.4``, a
    64-character label in a local part, an IDNA 2003 spelling) that ``identity`` refuses or
    spells differently today. Database checks run with ``manage.py migrate`` (so on every
    upgrade) and ``manage.py check --database default``, not with every command."""
    found: list[CheckMessage] = []
    for alias in databases or ():
        found.extend(_stale_identities(alias))
    return found


def _stale_identities(alias: str) -> list[CheckMessage]:
    # Imported here: checks load in AppConfig.ready(), before the services are wanted.
    from hisp.models import Address, Domain
    from hisp.services import identity

    connection = connections[alias]
    try:
        tables = set(connection.introspection.table_names())
        if not {Domain._meta.db_table, Address._meta.db_table} <= tables:
            return []  # a database not migrated yet (migrate checks before it migrates)
        domains = list(Domain.objects.using(alias).order_by("name").values_list("name", flat=True))
        addresses = list(
            Address.objects.using(alias).order_by("address").values_list("address", flat=True)
        )
    except DatabaseError as exc:
        return [Warning(f"hosted domains and addresses could not be checked: {exc}",
                        id="hisp.W003")]
    return [
        *_stale("hosted domain", domains, identity.normalise_domain, "hisp.W001"),
        *_stale("hosted address", addresses, identity.normalise_address, "hisp.W002"),
    ]


def _stale(
    what: str, values: list[str], normalise: Callable[[str], str], check_id: str
) -> list[CheckMessage]:
    stale = [(value, why) for value in values if (why := _refusal(value, normalise))]
    shown = [
        Warning(f"{what} {value!r} does not meet today's rules: {why}", id=check_id,
                hint=_STALE_HINT)
        for value, why in stale[:_LONGEST_STALE_LIST]
    ]
    if len(stale) > _LONGEST_STALE_LIST:
        shown.append(Warning(f"{len(stale) - _LONGEST_STALE_LIST} more {what}s do not meet "
                             "today's rules", id=check_id, hint=_STALE_HINT))
    return shown


def _refusal(value: str, normalise: Callable[[str], str]) -> str:
    """Why ``value`` as stored is not what identity would store today ("" when it is)."""
    from hisp.services.identity import IdentityError

    try:
        today = normalise(value)
    except IdentityError as exc:
        return str(exc)
    if today != value:
        return f"today it is stored as {today!r}"
    return ""
