"""Every console URL, as the resolver lists it, meets hostile input from staff holding every
role and from staff holding none: never a 500, and never a message body on any page (the
input: tests/webmail/test_review3_hostile_requests.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from adminconsole.urls import urlpatterns
from hisp.models import Address, AddressGrant, Invitation, TrustBundle
from tests.adminconsole.sessions import verified_client
from tests.adminconsole.world import World
from tests.webmail import test_review3_hostile_requests as hostile

ROUTES = hostile.routes_of(urlpatterns, "adminconsole")
BODY = "SECRET-BODY-TEXT"  # the world's message body: no console page ever shows it
SUBJECT = "Patient Jane Roe"  # its subject: not for staff without the queue roles


def _invitation(address: Address) -> Invitation:
    return Invitation.objects.create(
        address=address, token_hash=hashlib.sha256(address.address.encode()).hexdigest(),
        expires_at=timezone.now() + timedelta(days=1),
    )


def _kwargs(route: hostile.Route, world: World, extra: dict[str, Any]) -> dict[str, Any]:
    """Ids of real objects for the URL's arguments, chosen by the URL's name."""
    kind = route.name.split(":")[1].split("-")[0]
    objects = {
        "domain": world.domain, "address": world.address, "certificate": world.certificate,
        "anchor": world.anchor, "bundle": world.bundle, "route": world.route,
        "message": world.message, "delivery": world.delivery,
    }
    if route.name == "adminconsole:anchor-export":
        kind = "domain"  # exports the anchors a domain trusts
    values: dict[str, Any] = {}
    for name in route.arguments:
        if name == "pk":
            values[name] = objects[kind].pk if kind in objects else 1
        else:
            values[name] = extra.get(name, 1)
    return values


@pytest.fixture
def people(world: World, make_user: Callable[..., Any], staff_client: Client) -> dict[str, Any]:
    other = Address.objects.create(address="zed@direct.example.org", domain=world.domain,
                                   display_name="Zed", status=Address.Status.ACTIVE)
    other_grant = AddressGrant.objects.create(user=make_user("zed"), address=other,
                                              role=AddressGrant.Role.OWNER)
    # A refresh fetches the bundle: from a loopback address, which the fetcher refuses at once.
    TrustBundle.objects.filter(pk=world.bundle.pk).update(url="https://127.0.0.1:9/b.p7b")
    return {
        "valid": {"grant_pk": world.grant.pk, "invitation_pk": _invitation(world.address).pk,
                  "transition": "disable"},
        # Another address's grant and invitation, under this address's URL.
        "foreign": {"grant_pk": other_grant.pk, "invitation_pk": _invitation(other).pk},
        "right": staff_client,
        # Staff without a role (a non-staff user gets 404 before any view: test_access).
        "wrong": [verified_client(make_user("nora", staff=True, roles=()))],
    }


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.id)
def test_no_console_url_answers_hostile_input_with_a_500(
    route: hostile.Route, world: World, people: dict[str, Any]
) -> None:
    valid = _kwargs(route, world, people["valid"])
    foreign = {k: v for k, v in people["foreign"].items() if k in route.arguments}
    right: Client = people["right"]
    for label, path in hostile.url_variants(route, valid, foreign):
        hostile.check(right.get(path), f"GET {label}", secrets=(BODY,))
        if label == "valid" or label.endswith("=foreign"):
            posted = right.post(path, {})
            hostile.check(posted, f"POST {label}", secrets=(BODY,))
            if label.endswith("=foreign"):  # another address's grant or invitation: not found
                assert posted.status_code == 404, f"POST {label}: {posted.status_code}"
            for client in people["wrong"]:
                for method in (client.get, client.post):
                    hostile.check(method(path), f"wrong user {label}", secrets=(BODY, SUBJECT))
    path = hostile.url(route, valid)
    page = right.get(path)
    names, files = hostile.field_names(page)
    more, more_files = hostile.field_names(right.post(path, {}))
    names |= more
    files |= more_files
    for label, request in hostile.hostile_requests(path, names, files):
        hostile.check(request(right), label, secrets=(BODY,))
        for client in people["wrong"]:
            if label in ("POST duplicates", "GET duplicates"):
                hostile.check(request(client), f"wrong user {label}", secrets=(BODY, SUBJECT))
