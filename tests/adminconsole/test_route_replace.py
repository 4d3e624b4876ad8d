"""Setting a route for a domain that has one replaces where its mail goes: the console shows
old -> new and acts only once confirmed with a reason (audited). A new route is one step, and a
confirmation of a route that changed meanwhile is refused."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from adminconsole.forms.confirm import CONFIRM_REQUIRED
from hisp.models import AuditEvent, Route
from hisp.services import routes
from tests.adminconsole.world import World

SET = "adminconsole:route-set"
WHERE = "198.51.100.23"
NEW = {"host": "10.0.0.5", "port": "2525", "require_tls": "on"}


def _ask(client: Client, world: World, **fields: str) -> Any:
    return client.post(reverse(SET), {"domain": world.route.domain, **NEW, **fields})


def _confirmation(response: Any, **extra: str) -> dict[str, str]:
    """What the confirmation page's form posts, with ``extra`` (reason, the box) added."""
    form = response.context["form"]
    data = {name: form[name].value() for name in form.fields if name not in ("reason", "confirm")}
    return {name: str(value) for name, value in data.items()} | extra


def _unchanged(world: World) -> bool:
    route = Route.objects.get(pk=world.route.pk)
    return (route.host, route.port, route.require_tls) == ("mx.partner.example.net", 25, False)


def test_a_route_for_a_domain_without_one_needs_no_confirmation(
    staff_client: Client, world: World, sam: Any
) -> None:
    response = staff_client.post(
        reverse(SET), {"domain": "clinic.example.net", "host": "mx.clinic.example.net", "port": "25"}
    )
    assert response.status_code == 302
    assert Route.objects.get(domain="clinic.example.net").host == "mx.clinic.example.net"
    event = AuditEvent.objects.get(action="route.set")
    assert event.actor == sam and event.detail["created"] is True
    assert "previous" not in event.detail and "reason" not in event.detail


def test_replacing_a_route_shows_old_and_new_and_changes_nothing(
    staff_client: Client, world: World
) -> None:
    response = _ask(staff_client, world)
    assert response.status_code == 200
    body = response.content.decode()
    assert "Replace the route for partner.example.net" in body
    assert "mx.partner.example.net:25 → 10.0.0.5:2525" in body
    assert "no → yes" in body  # STARTTLS required
    assert "Mail for partner.example.net goes to 10.0.0.5:2525 instead of mx.partner.example.net:25" in body
    assert "STARTTLS is required from now on" in body
    assert "1 delivery to partner.example.net waiting in the queue" in body
    assert 'name="reason"' in body and 'name="confirm"' in body
    assert f'action="{reverse(SET)}"' in body
    assert "<script" not in body
    assert response.context["form"]["confirm"].label == (
        "I understand that the route for partner.example.net is replaced now."
    )
    assert _unchanged(world)
    assert not AuditEvent.objects.filter(action="route.set").exists()


def test_confirmed_replacement_acts_and_is_audited_with_the_old_route_and_the_reason(
    staff_client: Client, world: World, sam: Any
) -> None:
    data = _confirmation(_ask(staff_client, world), reason="partner moved", confirm="on")
    response = staff_client.post(reverse(SET), data, REMOTE_ADDR=WHERE)
    assert response.status_code == 302
    route = Route.objects.get(pk=world.route.pk)
    assert (route.host, route.port, route.require_tls) == ("10.0.0.5", 2525, True)
    event = AuditEvent.objects.get(action="route.set")
    assert (event.actor, event.client_address) == (sam, WHERE)
    assert event.detail["reason"] == "partner moved"
    assert event.detail["created"] is False
    assert event.detail["target"] == "10.0.0.5:2525"
    assert event.detail["previous"] == {
        "target": "mx.partner.example.net:25", "require_tls": False,
        "hold_pending_certificate": False,
    }


@pytest.mark.parametrize(
    "extra,field",
    [
        ({"reason": "partner moved"}, "confirm"),
        ({"confirm": "on"}, "reason"),
        ({"reason": "   ", "confirm": "on"}, "reason"),
        ({"reason": "<script>alert(1)</script>", "confirm": "on"}, "reason"),
        ({"reason": "r" * 201, "confirm": "on"}, "reason"),
    ],
)
def test_replacement_needs_the_box_and_a_plain_reason(
    staff_client: Client, world: World, extra: dict[str, str], field: str
) -> None:
    data = _confirmation(_ask(staff_client, world), **extra)
    response = staff_client.post(reverse(SET), data)
    assert response.status_code == 400
    assert response.context["form"].errors[field]
    if field == "confirm":
        assert CONFIRM_REQUIRED in response.content.decode()
    assert b"<script>alert" not in response.content
    assert "mx.partner.example.net:25 → 10.0.0.5:2525" in response.content.decode()
    assert _unchanged(world)
    assert not AuditEvent.objects.filter(action="route.set").exists()


def test_a_stale_confirmation_is_refused_and_shows_the_route_as_it_is_now(
    staff_client: Client, world: World
) -> None:
    data = _confirmation(_ask(staff_client, world), reason="partner moved", confirm="on")
    # Another operator (here the CLI) points the domain elsewhere in between.
    routes.set_route(world.route.domain, "backup.partner.example.net:25", actor="cli")
    response = staff_client.post(reverse(SET), data)
    assert response.status_code == 400
    body = response.content.decode()
    assert "was changed meanwhile: nothing was changed" in body
    assert "backup.partner.example.net:25 → 10.0.0.5:2525" in body
    assert Route.objects.get(pk=world.route.pk).host == "backup.partner.example.net"
    assert not AuditEvent.objects.filter(action="route.set", actor_label="sam").exists()
    # The page asks again, for the route as it is now; the reason is kept, the box is not.
    again = _confirmation(response, confirm="on")
    assert again["previous"] != data["previous"]
    assert response.context["form"]["reason"].value() == "partner moved"
    done = staff_client.post(reverse(SET), {**again, "reason": "partner moved"})
    assert done.status_code == 302
    assert Route.objects.get(pk=world.route.pk).host == "10.0.0.5"


def test_a_policy_change_alone_is_stale_too(staff_client: Client, world: World) -> None:
    data = _confirmation(_ask(staff_client, world), reason="partner moved", confirm="on")
    Route.objects.filter(pk=world.route.pk).update(hold_pending_certificate=True)
    assert staff_client.post(reverse(SET), data).status_code == 400
    assert Route.objects.get(pk=world.route.pk).host == "mx.partner.example.net"


def test_confirming_a_replacement_of_a_deleted_route_is_refused(
    staff_client: Client, world: World
) -> None:
    data = _confirmation(_ask(staff_client, world), reason="partner moved", confirm="on")
    Route.objects.filter(pk=world.route.pk).delete()
    response = staff_client.post(reverse(SET), data)
    assert response.status_code == 400
    assert "was deleted meanwhile: nothing was changed" in response.content.decode()
    assert not Route.objects.exists()
    assert not AuditEvent.objects.filter(action="route.set").exists()


def test_the_same_confirmation_twice_acts_once(staff_client: Client, world: World) -> None:
    data = _confirmation(_ask(staff_client, world), reason="partner moved", confirm="on")
    assert staff_client.post(reverse(SET), data).status_code == 302
    assert staff_client.post(reverse(SET), data).status_code in (302, 400)
    assert AuditEvent.objects.filter(action="route.set").count() == 1


def test_setting_the_route_it_already_has_changes_nothing_and_says_so(
    staff_client: Client, world: World
) -> None:
    response = staff_client.post(
        reverse(SET),
        {"domain": world.route.domain, "host": "mx.partner.example.net", "port": "25"},
        follow=True,
    )
    assert "already set so: nothing was changed" in response.content.decode()
    assert not AuditEvent.objects.filter(action="route.set").exists()


@pytest.mark.parametrize(
    "tamper",
    [{"host": "<script>alert(1)</script>"}, {"port": "0"}, {"previous": ""},
     {"domain": "not a domain"}],
)
def test_a_tampered_confirmation_changes_nothing(
    staff_client: Client, world: World, tamper: dict[str, str]
) -> None:
    data = _confirmation(_ask(staff_client, world), reason="partner moved", confirm="on")
    response = staff_client.post(reverse(SET), {**data, **tamper})
    assert response.status_code == 400
    assert b"<script>alert" not in response.content
    assert _unchanged(world)
    assert not AuditEvent.objects.filter(action="route.set").exists()


def test_a_confirmation_cannot_carry_a_route_other_than_the_one_shown(
    staff_client: Client, world: World
) -> None:
    # The stamp names the route that was shown; a confirmation for another domain's route
    # (or a forged stamp) is stale, never applied.
    other = Route.objects.create(domain="clinic.example.net", host="mx.clinic.example.net")
    data = _confirmation(_ask(staff_client, world), reason="partner moved", confirm="on")
    response = staff_client.post(
        reverse(SET), {**data, "previous": routes.state(other)}
    )
    assert response.status_code == 400
    assert _unchanged(world)
    assert not AuditEvent.objects.filter(action="route.set").exists()


def test_outsiders_can_neither_ask_nor_confirm(
    outsider_client: Client, client: Client, world: World
) -> None:
    data = {"domain": world.route.domain, **NEW, "previous": routes.state(world.route),
            "reason": "x", "confirm": "on"}
    assert outsider_client.post(reverse(SET), data).status_code == 404
    assert client.post(reverse(SET), data).status_code == 302  # to sign-in
    assert _unchanged(world)
    assert not AuditEvent.objects.filter(action="route.set").exists()


def test_the_route_page_says_a_replacement_is_confirmed(staff_client: Client, world: World) -> None:
    body = staff_client.get(reverse("adminconsole:route-list")).content.decode()
    assert "asks you to confirm" in body
