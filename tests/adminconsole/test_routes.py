from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from hisp.models import AuditEvent, Route

SET = "adminconsole:route-set"


def test_staff_sets_a_route_and_it_is_audited(staff_client: Client, sam: Any) -> None:
    response = staff_client.post(
        reverse(SET),
        {"domain": "Partner.Example.NET", "host": "mx1.partner.example.net", "port": "2525",
         "require_tls": "on"},
    )
    assert response.status_code == 302
    route = Route.objects.get(domain="partner.example.net")
    assert (route.host, route.port, route.require_tls, route.hold_pending_certificate) == (
        "mx1.partner.example.net", 2525, True, False
    )
    event = AuditEvent.objects.get(action="route.set")
    assert event.actor == sam
    assert event.detail["target"] == "mx1.partner.example.net:2525"
    assert event.client_address == "127.0.0.1"  # the test client's REMOTE_ADDR


def test_setting_a_route_again_replaces_it_once_confirmed(staff_client: Client, world: Any) -> None:
    asked = staff_client.post(
        reverse(SET), {"domain": world.route.domain, "host": "10.0.0.5", "port": "25"}
    )
    assert asked.status_code == 200
    assert Route.objects.get(domain=world.route.domain).host == "mx.partner.example.net"
    form = asked.context["form"]
    data = {name: form[name].value() for name in form.fields}
    staff_client.post(reverse(SET), {**data, "reason": "partner moved", "confirm": "on"})
    route = Route.objects.get(domain=world.route.domain)
    assert route.host == "10.0.0.5"
    assert Route.objects.count() == 1


def test_a_route_without_host_keeps_the_mx_records_with_its_policies(
    staff_client: Client, sam: Any
) -> None:
    response = staff_client.post(
        reverse(SET),
        {"domain": "clinic.example.net", "host": "", "port": "25", "require_tls": "on",
         "hold_pending_certificate": "on"},
    )
    assert response.status_code == 302
    route = Route.objects.get(domain="clinic.example.net")
    assert (route.host, route.require_tls, route.hold_pending_certificate) == ("", True, True)
    assert AuditEvent.objects.get(action="route.set").detail["target"] == "MX"
    page = staff_client.get(reverse("adminconsole:route-list"))
    assert b"MX records" in page.content


def test_staff_deletes_a_route_and_it_is_audited(staff_client: Client, world: Any, sam: Any) -> None:
    response = staff_client.post(
        reverse("adminconsole:route-delete", kwargs={"pk": world.route.pk}),
        {"reason": "partner moved", "confirm": "on"},
    )
    assert response.status_code == 302
    assert not Route.objects.exists()
    event = AuditEvent.objects.get(action="route.delete")
    assert (event.actor, event.client_address) == (sam, "127.0.0.1")
    assert event.detail["reason"] == "partner moved"
    assert event.detail["target"] == f"{world.route.host}:{world.route.port}"


@pytest.mark.parametrize(
    "fields,field",
    [
        ({"host": "<script>alert(1)</script>"}, "host"),
        ({"host": "h" * 300}, "host"),
        ({"port": "0"}, "port"),
        ({"port": "70000"}, "port"),
        ({"port": "twenty-five"}, "port"),
        ({"domain": "not a domain"}, "domain"),
    ],
)
def test_route_form_rejects_hostile_input(
    staff_client: Client, fields: dict[str, str], field: str
) -> None:
    data = {"domain": "partner.example.net", "host": "mx.partner.example.net", "port": "25", **fields}
    response = staff_client.post(reverse(SET), data)
    assert response.status_code == 400
    assert response.context["form"].errors[field]
    assert b"<script>alert" not in response.content
    assert not Route.objects.exists()
    assert not AuditEvent.objects.filter(action="route.set").exists()
