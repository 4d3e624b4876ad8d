"""The message and delivery lists show who wrote to whom (mail metadata), so every showing is
audited, as opening one message is: before, paging through the plain lists (or a search whose
filters were refused, which shows the plain list) left no trace at all."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from hisp.models import AuditEvent, Delivery, Message
from tests.adminconsole.world import World

WHERE = "198.51.100.31"
LISTS = {
    "message-list": ("message.console-list", "message.console-search", "messages"),
    "delivery-list": ("delivery.console-list", "delivery.console-search", "deliveries"),
}


def _shown(world: World, name: str) -> int:
    return world.message.pk if name == "message-list" else world.delivery.pk


@pytest.mark.parametrize("name", sorted(LISTS))
def test_the_plain_list_is_audited_with_the_rows_shown(
    staff_client: Client, world: World, sam: Any, name: str
) -> None:
    action, search, listing = LISTS[name]
    response = staff_client.get(reverse(f"adminconsole:{name}"), REMOTE_ADDR=WHERE)
    assert response.status_code == 200
    event = AuditEvent.objects.get(action=action)
    assert (event.actor, event.client_address) == (sam, WHERE)
    assert (event.object_type, event.object_id) == ("console-list", listing)
    assert event.detail == {"results": 1, "page": 1, "shown": [_shown(world, name)]}
    assert not AuditEvent.objects.filter(action=search).exists()


@pytest.mark.parametrize("name", sorted(LISTS))
def test_paging_through_the_plain_list_is_audited_page_by_page(
    staff_client: Client, world: World, name: str
) -> None:
    action, _, _ = LISTS[name]
    for n in range(60):
        message = Message.objects.create(
            direction=Message.Direction.OUTBOUND, state=Message.State.SENT,
            message_id=f"<bulk{n}@direct.example.org>", envelope_from="alice@direct.example.org",
            envelope_to=[f"p{n}@partner.example.net"], raw=b"x",
        )
        Delivery.objects.create(message=message, recipient=f"p{n}@partner.example.net")
    staff_client.get(reverse(f"adminconsole:{name}"), {"page": "2"})
    event = AuditEvent.objects.get(action=action)
    assert event.detail["page"] == 2
    assert event.detail["results"] == 61
    assert len(event.detail["shown"]) == 11


@pytest.mark.parametrize("name", sorted(LISTS))
def test_a_refused_search_shows_the_plain_list_and_that_is_audited(
    staff_client: Client, world: World, name: str
) -> None:
    action, _, _ = LISTS[name]
    response = staff_client.get(reverse(f"adminconsole:{name}"), {"q": "<x>", "state": "bogus"})
    assert response.context["form"].errors
    assert AuditEvent.objects.get(action=action).detail["shown"] == [_shown(world, name)]


@pytest.mark.parametrize("name", sorted(LISTS))
def test_a_search_is_recorded_once_as_a_search(
    staff_client: Client, world: World, name: str
) -> None:
    action, search, _ = LISTS[name]
    staff_client.get(reverse(f"adminconsole:{name}"), {"q": "zoe@"})
    assert AuditEvent.objects.filter(action=search).count() == 1
    assert not AuditEvent.objects.filter(action=action).exists()


@pytest.mark.parametrize("name", sorted(LISTS))
def test_the_rows_are_read_once_for_the_page_and_the_record(
    staff_client: Client, world: World, name: str
) -> None:
    table = "hisp_message" if name == "message-list" else "hisp_delivery"
    with CaptureQueriesContext(connection) as queries:
        staff_client.get(reverse(f"adminconsole:{name}"))
    reads = [q["sql"] for q in queries if q["sql"].startswith("SELECT")
             and f'FROM "{table}"' in q["sql"] and "COUNT(" not in q["sql"]]
    assert len(reads) == 1
