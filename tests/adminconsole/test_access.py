"""Every console URL: anonymous -> sign-in, non-staff -> 404, staff without the second factor
-> OTP step, verified staff -> the page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, reverse

from adminconsole import access
from adminconsole.urls import urlpatterns
from tests.adminconsole.world import World

Kwargs = Callable[[World], dict[str, Any]]
NONE: Kwargs = lambda w: {}  # noqa: E731

# name -> (method, URL kwargs). POST actions are checked for access here and for their
# effect in the screen tests. A destructive action's URL is listed with GET, its confirmation
# page; its POST is checked in test_confirmations.
VIEWS: dict[str, tuple[str, Kwargs]] = {
    "dashboard": ("GET", NONE),
    "domain-list": ("GET", NONE),
    "domain-add": ("POST", NONE),
    "domain-detail": ("GET", lambda w: {"pk": w.domain.pk}),
    "domain-ca-rollover": ("GET", lambda w: {"pk": w.domain.pk}),
    "address-list": ("GET", NONE),
    "address-add": ("POST", NONE),
    "address-detail": ("GET", lambda w: {"pk": w.address.pk}),
    "address-proofing": ("POST", lambda w: {"pk": w.address.pk}),
    "address-status": ("POST", lambda w: {"pk": w.address.pk}),
    "address-status-confirm": ("GET", lambda w: {"pk": w.address.pk, "transition": "disable"}),
    "address-grant": ("POST", lambda w: {"pk": w.address.pk}),
    "address-revoke-grant": ("GET", lambda w: {"pk": w.address.pk, "grant_pk": w.grant.pk}),
    "address-reset-password": ("GET", lambda w: {"pk": w.address.pk}),
    "address-invite": ("GET", lambda w: {"pk": w.address.pk}),
    "address-invitation-revoke": ("POST", lambda w: {"pk": w.address.pk, "invitation_pk": 1}),
    "certificate-list": ("GET", NONE),
    "certificate-detail": ("GET", lambda w: {"pk": w.certificate.pk}),
    "certificate-pem": ("GET", lambda w: {"pk": w.certificate.pk}),
    "certificate-issue": ("GET", NONE),
    "certificate-import": ("GET", NONE),
    "certificate-revoke": ("GET", lambda w: {"pk": w.certificate.pk}),
    "certificate-renew": ("POST", lambda w: {"pk": w.certificate.pk}),
    # GET of the form; 404 for verified staff here (the world's certificate has no key held),
    # 200 for one with a key in test_certificates.
    "certificate-pkcs12": ("POST", lambda w: {"pk": w.certificate.pk}),
    "anchor-list": ("GET", NONE),
    "anchor-import": ("GET", NONE),
    "anchor-confirm": ("POST", NONE),
    "anchor-remove": ("GET", lambda w: {"pk": w.anchor.pk}),
    "anchor-export": ("GET", lambda w: {"pk": w.domain.pk}),
    "bundle-list": ("GET", NONE),
    "bundle-add": ("POST", NONE),
    "bundle-detail": ("GET", lambda w: {"pk": w.bundle.pk}),
    "bundle-refresh": ("POST", lambda w: {"pk": w.bundle.pk}),
    "bundle-remove": ("GET", lambda w: {"pk": w.bundle.pk}),
    "route-list": ("GET", NONE),
    "route-set": ("POST", NONE),
    "route-delete": ("GET", lambda w: {"pk": w.route.pk}),
    "message-list": ("GET", NONE),
    "message-detail": ("GET", lambda w: {"pk": w.message.pk}),
    "delivery-list": ("GET", NONE),
    "delivery-detail": ("GET", lambda w: {"pk": w.delivery.pk}),
    "delivery-retry": ("POST", lambda w: {"pk": w.delivery.pk}),
    "delivery-fail": ("GET", lambda w: {"pk": w.delivery.pk}),
    "discovery": ("GET", NONE),
    "discovery-flush": ("POST", NONE),
    "audit-log": ("GET", NONE),
    "audit-export": ("GET", NONE),
}
GET_VIEWS = sorted(name for name, (method, _) in VIEWS.items() if method == "GET")
ALL_VIEWS = sorted(VIEWS)


def _url(world: World, name: str) -> str:
    return reverse(f"adminconsole:{name}", kwargs=VIEWS[name][1](world))


def _call(client: Client, world: World, name: str) -> Any:
    url = _url(world, name)
    return client.get(url) if VIEWS[name][0] == "GET" else client.post(url, {})


def test_every_console_url_is_covered_by_the_access_table() -> None:
    names = {p.name for p in urlpatterns if isinstance(p, URLPattern)}
    assert names == set(VIEWS)


@pytest.mark.parametrize("name", ALL_VIEWS)
def test_anonymous_visitor_is_sent_to_sign_in(client: Client, world: World, name: str) -> None:
    response = _call(client, world, name)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse(access.SIGN_IN_URL_NAME) + "?next=")


@pytest.mark.parametrize("name", ALL_VIEWS)
def test_signed_in_non_staff_user_gets_404(
    outsider_client: Client, world: World, name: str
) -> None:
    assert _call(outsider_client, world, name).status_code == 404


@pytest.mark.parametrize("name", ALL_VIEWS)
def test_staff_without_second_factor_is_sent_to_otp_step(
    unverified_staff_client: Client, world: World, name: str
) -> None:
    response = _call(unverified_staff_client, world, name)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse(access.OTP_URL_NAME) + "?next=")


@pytest.mark.parametrize("name", GET_VIEWS)
def test_verified_staff_sees_the_page(staff_client: Client, world: World, name: str) -> None:
    response = staff_client.get(_url(world, name))
    assert response.status_code == 200
    body = b"".join(response.streaming_content) if response.streaming else response.content
    # No key material, no message content, on any page.
    assert b"PRIVATE KEY" not in body
    assert b"SECRET-BODY-TEXT" not in body
    assert b"Jane Roe" not in body


def test_inactive_staff_user_gets_404(staff_client: Client, sam: Any, world: World) -> None:
    sam.is_active = False
    sam.save()
    # An inactive user's session no longer authenticates; either way the console is closed.
    response = staff_client.get(reverse("adminconsole:dashboard"))
    assert response.status_code in (302, 404)
    assert response.status_code != 200


def test_unknown_object_id_is_404_for_staff(staff_client: Client, world: World) -> None:
    for name in ("domain-detail", "address-detail", "certificate-detail", "bundle-detail",
                 "message-detail", "delivery-detail"):
        assert staff_client.get(reverse(f"adminconsole:{name}", kwargs={"pk": 999999})).status_code == 404


def test_console_pages_send_a_csp_without_inline_scripts(staff_client: Client, world: World) -> None:
    response = staff_client.get(reverse("adminconsole:dashboard"))
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert b"<script>" not in response.content


@pytest.mark.parametrize("name", sorted(n for n, (m, _) in VIEWS.items() if m == "POST"))
def test_non_staff_get_of_an_action_url_is_404_not_405(
    outsider_client: Client, world: World, name: str
) -> None:
    # The console must not even confirm its action URLs exist to a non-staff user.
    assert outsider_client.get(_url(world, name)).status_code == 404


def test_staff_get_of_an_action_url_is_405(staff_client: Client, world: World) -> None:
    assert staff_client.get(_url(world, "address-status")).status_code == 405
