"""Staff searching messages, deliveries, addresses and certificates is recorded with what they looked for;
the plain unfiltered lists are not recorded as searches (showing the message and delivery lists
is recorded as a listing instead: test_review_mail_listing_audit.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from hisp.models import AuditEvent
from tests.adminconsole.world import World

WHERE = "198.51.100.11"

# list URL name -> (audit action, a search that finds the world's row, the filters recorded)
SEARCHES: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {
    "message-list": (
        "message.console-search",
        {"q": "alice@direct", "direction": "out", "state": ""},
        {"q": "alice@direct", "direction": "out"},
    ),
    "delivery-list": (
        "delivery.console-search",
        {"q": "zoe@", "state": "deferred"},
        {"q": "zoe@", "state": "deferred"},
    ),
    "address-list": (
        "address.console-search",
        {"q": "Alice", "kind": "", "status": "pending"},
        {"q": "Alice", "status": "pending"},
    ),
    "certificate-list": (
        "certificate.console-search",
        {"q": "alice@direct", "binding": "address", "source": "", "revoked": "no"},
        {"q": "alice@direct", "binding": "address", "revoked": "no"},
    ),
}
NAMES = sorted(SEARCHES)


@pytest.mark.parametrize("name", NAMES)
def test_a_search_is_audited_with_its_filters(
    staff_client: Client, world: World, sam: Any, name: str
) -> None:
    action, params, recorded = SEARCHES[name]
    response = staff_client.get(reverse(f"adminconsole:{name}"), params, REMOTE_ADDR=WHERE)
    assert response.status_code == 200
    assert len(response.context["page"]) == 1
    event = AuditEvent.objects.get(action=action)
    assert (event.actor, event.client_address) == (sam, WHERE)
    assert event.object_type == "console-search"
    assert event.detail == {"filters": recorded, "results": 1, "page": 1}


@pytest.mark.parametrize("name", NAMES)
def test_one_filter_alone_is_a_search(staff_client: Client, world: World, name: str) -> None:
    action, _, _ = SEARCHES[name]
    staff_client.get(reverse(f"adminconsole:{name}"), {"q": "nobody-matches-this"})
    event = AuditEvent.objects.get(action=action)
    assert event.detail["filters"] == {"q": "nobody-matches-this"}
    assert event.detail["results"] == 0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "params", [{}, {"page": "2"}, {"q": "", "state": ""}], ids=["plain", "page", "empty"]
)
def test_the_plain_list_is_not_audited(
    staff_client: Client, world: World, name: str, params: dict[str, str]
) -> None:
    action, _, _ = SEARCHES[name]
    assert staff_client.get(reverse(f"adminconsole:{name}"), params).status_code == 200
    assert not AuditEvent.objects.filter(action=action).exists()


@pytest.mark.parametrize("name", NAMES)
def test_a_refused_search_shows_the_plain_list_and_is_not_audited(
    staff_client: Client, world: World, name: str
) -> None:
    action, _, _ = SEARCHES[name]
    response = staff_client.get(reverse(f"adminconsole:{name}"), {"q": "<script>", "state": "x"})
    assert response.status_code == 200
    assert response.context["form"].errors
    assert not AuditEvent.objects.filter(action=action).exists()


def test_searches_can_be_found_in_the_audit_log(staff_client: Client, world: World) -> None:
    staff_client.get(reverse("adminconsole:message-list"), {"q": "m1@"})
    response = staff_client.get(reverse("adminconsole:audit-log"), {"object_type": "console-search"})
    assert [e.action for e in response.context["page"]] == ["message.console-search"]


@pytest.mark.parametrize("name", NAMES)
def test_a_non_staff_user_cannot_search(
    outsider_client: Client, world: World, name: str
) -> None:
    action, params, _ = SEARCHES[name]
    assert outsider_client.get(reverse(f"adminconsole:{name}"), params).status_code == 404
    assert not AuditEvent.objects.filter(action=action).exists()


def test_the_expiring_certificates_filter_is_recorded_as_a_search(
    staff_client: Client, world: World
) -> None:
    staff_client.get(reverse("adminconsole:certificate-list"), {"expiring": "on"})
    event = AuditEvent.objects.get(action="certificate.console-search")
    assert event.detail["filters"] == {"expiring": "True"}
    assert event.object_id == "certificates"
