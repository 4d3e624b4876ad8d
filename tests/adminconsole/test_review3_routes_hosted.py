"""Routes are for other HISPs' domains: one of our own hosted domains never gets a route (its
mail would leave for elsewhere, or loop back), in the console or at the command line, and a
route left from before its domain was hosted here is not used."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse

from hisp.models import AuditEvent, Domain, Route
from hisp.services import routes

SET = "adminconsole:route-set"
REFUSAL = "is hosted here: its mail is delivered to its own mailboxes, so it cannot have a route"


def _no_route_written() -> bool:
    return not Route.objects.exists() and not AuditEvent.objects.filter(action="route.set").exists()


@pytest.mark.parametrize("typed", ["direct.example.org", "DIRECT.Example.ORG."])
def test_the_console_refuses_a_route_for_a_hosted_domain(
    staff_client: Client, domain: Domain, typed: str
) -> None:
    response = staff_client.post(
        reverse(SET), {"domain": typed, "host": "10.0.0.5", "port": "25"}
    )
    assert response.status_code == 400
    assert response.context["form"].errors["domain"] == [f"direct.example.org {REFUSAL}"]
    assert REFUSAL in response.content.decode()
    assert _no_route_written()


def test_the_console_refuses_an_mx_policy_route_for_a_hosted_domain(
    staff_client: Client, domain: Domain
) -> None:
    response = staff_client.post(
        reverse(SET), {"domain": domain.name, "host": "", "port": "25",
                       "hold_pending_certificate": "on"}
    )
    assert response.status_code == 400
    assert _no_route_written()


def test_the_service_refuses_even_a_confirmed_replacement(domain: Domain) -> None:
    # A confirmation built for a domain that became hosted since is refused too.
    with pytest.raises(routes.HostedDomainRoute, match=REFUSAL):
        routes.change_route(domain.name, "10.0.0.5:25", expected=routes.NONE,
                            require_tls=False, hold_pending_certificate=False)
    assert _no_route_written()


def test_the_cli_refuses_it_on_one_line_and_writes_nothing(domain: Domain) -> None:
    out = io.StringIO()
    with pytest.raises(CommandError) as error:
        call_command("route", "set", "Direct.Example.Org", "127.0.0.1:2526", stdout=out)
    assert str(error.value) == f"direct.example.org {REFUSAL}"
    assert out.getvalue() == ""
    assert _no_route_written()


def test_a_route_older_than_its_hosted_domain_is_not_used_and_staff_are_told(
    staff_client: Client, settings: Any, db: None
) -> None:
    settings.HISP_CA_KEY_BITS = 2048
    routes.set_route("clinic.example.com", "10.0.0.5:25", hold_pending_certificate=True)
    assert routes.lookup("clinic.example.com") is not None
    added = staff_client.post(
        reverse("adminconsole:domain-add"), {"name": "clinic.example.com", "kind": "provider"},
        follow=True,
    )
    assert added.status_code == 200
    told = [str(m) for m in added.context["messages"]]
    assert any("route set for clinic.example.com is no longer used" in m for m in told), told
    # Its mail is delivered here: neither the route's host nor its hold applies any more.
    assert routes.lookup("clinic.example.com") is None
    listing = staff_client.get(reverse("adminconsole:route-list")).content.decode()
    assert "hosted here: this route is not used; delete it" in listing
    # Replacing it is refused at the first step, before any confirmation page.
    again = staff_client.post(reverse(SET), {"domain": "clinic.example.com", "host": "10.0.0.6",
                                             "port": "25"})
    assert again.status_code == 400
    assert REFUSAL in again.content.decode()
    # The CLI still lists and deletes it, in its usual shapes.
    listed = io.StringIO()
    call_command("route", "list", "--json", stdout=listed)
    assert json.loads(listed.getvalue()) == [
        {"domain": "clinic.example.com", "host": "10.0.0.5", "port": 25,
         "require_tls": False, "hold_pending_certificate": True}
    ]
    call_command("route", "delete", "clinic.example.com", stdout=io.StringIO())
    assert not Route.objects.exists()


def test_routes_for_other_domains_are_still_set(domain: Domain, staff_client: Client) -> None:
    # Not a prefix or suffix match: a partner under the same parent is not hosted here.
    response = staff_client.post(
        reverse(SET), {"domain": "partner.direct.example.org", "host": "10.0.0.5", "port": "25"}
    )
    assert response.status_code == 302
    assert routes.lookup("partner.direct.example.org") is not None
