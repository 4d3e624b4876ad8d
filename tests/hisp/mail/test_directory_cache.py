"""The mail flow's per-process directory cache (hisp.agent_env.cached_rows): hosted domains,
addresses, routes and recipient-certificate rows are remembered, and every way they change
reaches the cache; and the storage settings the flow relies on."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import RequestFactory

from adminconsole import services as console
from hisp import egress
from hisp.agent_env import MISSING, bump_pki_version, peek_cached_rows
from hisp.models import Address, Domain
from hisp.services import mail, routes
from hisp.storage import LZ4_COLUMNS

pytestmark = pytest.mark.django_db

HOSTED = "cache.example.org"


@pytest.fixture
def bob() -> Address:
    domain = Domain.objects.create(name=HOSTED)
    return Address.objects.create(address=f"bob@{HOSTED}", domain=domain)


def test_rcpt_verdicts_are_answered_from_memory_once_read(bob: Address) -> None:
    address = f"bob@{HOSTED.upper()}"
    assert mail.remembered_verdict(address) is None  # nothing read yet: ask the database
    assert mail.recipient_verdict(address) is mail.Verdict.ACCEPT
    assert mail.remembered_verdict(address) is mail.Verdict.ACCEPT
    assert mail.recipient_verdict("nobody@" + HOSTED) is mail.Verdict.UNKNOWN
    assert mail.remembered_verdict("nobody@" + HOSTED) is mail.Verdict.UNKNOWN
    assert mail.recipient_verdict("x@elsewhere.example") is mail.Verdict.RELAY
    assert mail.remembered_verdict("x@elsewhere.example") is mail.Verdict.RELAY
    assert mail.remembered_verdict("no-at-sign") is mail.Verdict.RELAY


def test_a_status_change_by_staff_reaches_the_cache_at_once(bob: Address, admin_user) -> None:
    assert mail.recipient_verdict(bob.address) is mail.Verdict.ACCEPT
    request = RequestFactory().post("/")
    request.user = admin_user
    console.change_status(request=request, address=bob, transition="disable", note="left")
    assert peek_cached_rows(("address", bob.address)) is MISSING
    assert mail.recipient_verdict(bob.address) is mail.Verdict.UNKNOWN
    assert mail.find_address(bob.address).status == Address.Status.DISABLED


def test_found_rows_are_copies(bob: Address) -> None:
    first = mail.find_address(bob.address)
    first.status = Address.Status.SUSPENDED  # a caller changing its copy
    assert mail.find_address(bob.address).status == Address.Status.ACTIVE


def test_routes_follow_set_and_delete(db: None) -> None:
    routes.set_route("partner.example.net", "127.0.0.1:2525")
    assert egress.hops("partner.example.net") == [egress.Hop("127.0.0.1", 2525, False)]
    routes.set_route("partner.example.net", "127.0.0.1:2626", require_tls=True)
    assert egress.hops("partner.example.net") == [egress.Hop("127.0.0.1", 2626, True)]
    routes.delete_route("partner.example.net")
    assert routes.lookup("partner.example.net") is None


def test_an_update_without_signal_is_seen_after_a_bump(bob: Address) -> None:
    assert mail.recipient_verdict(bob.address) is mail.Verdict.ACCEPT
    Address.objects.filter(pk=bob.pk).update(status=Address.Status.DISABLED)
    bump_pki_version()  # what every writer using update() does
    assert mail.recipient_verdict(bob.address) is mail.Verdict.UNKNOWN


def test_large_columns_use_lz4_on_postgresql(db: None) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("column compression is PostgreSQL's")
    with connection.cursor() as cursor:
        for model, fields in LZ4_COLUMNS.items():
            for name in fields:
                cursor.execute(
                    "SELECT attcompression FROM pg_attribute "
                    "WHERE attrelid = %s::regclass AND attname = %s",
                    [model._meta.db_table, model._meta.get_field(name).column],
                )
                assert cursor.fetchone() == ("l",), (model, name)
