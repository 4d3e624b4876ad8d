"""Every destructive console action asks first: a GET page that names what happens and to what,
and a POST that acts only with the box ticked (and a reason, where one is asked for). A POST
without it changes nothing and answers 400 with the page again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from adminconsole import access
from adminconsole.forms.confirm import CONFIRM_REQUIRED
from hisp.models import (
    Address,
    AddressGrant,
    AuditEvent,
    Delivery,
    Domain,
    Message,
    Route,
    TrustAnchor,
)
from hisp.services import identity
from tests.adminconsole.conftest import PASSWORD
from tests.adminconsole.world import World

WHERE = "198.51.100.9"


@dataclass(frozen=True)
class Action:
    page: str  # URL name of the confirmation page
    kwargs: Callable[[World], dict[str, Any]]
    data: dict[str, str]  # the confirmed POST
    audit: str  # the audit action written when it acts
    done: Callable[[World], bool]  # whether it took effect (read from the database)
    shows: Callable[[World], list[str]]  # what the page must name (HTML-escaped)
    reason_key: str | None = None  # where the stated reason lands in the audit detail
    post: str = ""  # URL name the form posts to, when not the page itself
    acted_status: int = 302
    post_kwargs: Callable[[World], dict[str, Any]] | None = field(default=None)

    def page_url(self, world: World) -> str:
        return reverse(f"adminconsole:{self.page}", kwargs=self.kwargs(world))

    def post_url(self, world: World) -> str:
        if not self.post:
            return self.page_url(world)
        kwargs = (self.post_kwargs or self.kwargs)(world)
        return reverse(f"adminconsole:{self.post}", kwargs=kwargs)

    @property
    def unconfirmed(self) -> dict[str, str]:
        return {k: v for k, v in self.data.items() if k != "confirm"}


def _colons(fingerprint: str) -> str:
    upper = fingerprint.upper()
    return ":".join(upper[i : i + 2] for i in range(0, len(upper), 2))


def _alice_password_changed(world: World) -> bool:
    return not get_user_model().objects.get(username="alice").check_password(PASSWORD)


ACTIONS: dict[str, Action] = {
    "anchor-remove": Action(
        page="anchor-remove",
        kwargs=lambda w: {"pk": w.anchor.pk},
        data={"reason": "partner left the community", "confirm": "on"},
        audit="anchor.remove",
        reason_key="reason",
        done=lambda w: not TrustAnchor.objects.filter(pk=w.anchor.pk).exists(),
        shows=lambda w: [
            "Stop trusting",
            "direct.example.org",
            "Partner HISP CA",
            _colons(w.anchor.certificate.fingerprint_sha256),
            "Incoming mail signed under this anchor is refused for the 1 address of",
            "0 other hosted domains trust",
        ],
    ),
    "route-delete": Action(
        page="route-delete",
        kwargs=lambda w: {"pk": w.route.pk},
        data={"reason": "partner moved to a new mail host", "confirm": "on"},
        audit="route.delete",
        reason_key="reason",
        done=lambda w: not Route.objects.filter(pk=w.route.pk).exists(),
        shows=lambda w: [
            "Delete the route for partner.example.net",
            "mx.partner.example.net:25",
            "goes to the domain&#x27;s MX records instead",
            "1 delivery to partner.example.net waiting in the queue",
        ],
    ),
    "delivery-fail": Action(
        page="delivery-fail",
        kwargs=lambda w: {"pk": w.delivery.pk},
        data={"note": "partner asked us to stop", "confirm": "on"},
        audit="delivery.fail_now",
        reason_key="note",
        done=lambda w: Delivery.objects.get(pk=w.delivery.pk).state == Delivery.State.FAILED,
        shows=lambda w: [
            "Fail the delivery to zoe@partner.example.net",
            "&lt;m1@direct.example.org&gt;",
            "alice@direct.example.org gets one failure notice",
            "The message has no other recipients.",
            "cannot be undone",
        ],
    ),
    "address-disable": Action(
        page="address-status-confirm",
        kwargs=lambda w: {"pk": w.address.pk, "transition": "disable"},
        post="address-status",
        post_kwargs=lambda w: {"pk": w.address.pk},
        data={"transition": "disable", "note": "left the practice", "confirm": "on"},
        audit="address.disable",
        reason_key="note",
        done=lambda w: Address.objects.get(pk=w.address.pk).status == Address.Status.DISABLED,
        shows=lambda w: [
            "Disable alice@direct.example.org",
            "Dr Alice Example",
            "It is pending identity proofing now, so mail to it is refused and its 2 users",
            "Disabling is final",
        ],
    ),
    "address-revoke-grant": Action(
        page="address-revoke-grant",
        kwargs=lambda w: {"pk": w.address.pk, "grant_pk": w.grant.pk},
        data={"reason": "delegation ended", "confirm": "on"},
        audit="address.revoke_grant",
        reason_key="reason",
        done=lambda w: not AddressGrant.objects.filter(pk=w.grant.pk).exists(),
        shows=lambda w: [
            "Revoke bob&#x27;s access to alice@direct.example.org",
            "Delegate: read only",
            "bob can no longer open alice@direct.example.org",
            "0 other mailboxes",
        ],
    ),
    "address-reset-password": Action(
        page="address-reset-password",
        kwargs=lambda w: {"pk": w.address.pk},
        data={"reason": "caller verified by callback", "confirm": "on"},
        audit="user.password_reset",
        reason_key="reason",
        acted_status=200,  # the temporary password, shown once
        done=_alice_password_changed,
        shows=lambda w: [
            "Reset the password of alice",
            "alice@direct.example.org",
            "every session they have open ends",
            "shown to you once",
            "0 app passwords",
        ],
    ),
}
NAMES = sorted(ACTIONS)


@pytest.mark.parametrize("name", NAMES)
def test_confirmation_page_names_what_will_happen_and_changes_nothing(
    staff_client: Client, world: World, name: str
) -> None:
    action = ACTIONS[name]
    response = staff_client.get(action.page_url(world))
    assert response.status_code == 200
    body = response.content.decode()
    for expected in action.shows(world):
        assert expected in body, expected
    assert f'action="{action.post_url(world)}"' in body
    assert 'name="confirm"' in body
    # No JavaScript confirm(): the CSP forbids inline script, and the server does the asking.
    assert "<script" not in body and "onclick" not in body
    assert not action.done(world)
    assert not AuditEvent.objects.filter(action=action.audit).exists()


@pytest.mark.parametrize("name", NAMES)
def test_post_without_confirmation_does_nothing_and_answers_400(
    staff_client: Client, world: World, name: str
) -> None:
    action = ACTIONS[name]
    response = staff_client.post(action.post_url(world), action.unconfirmed)
    assert response.status_code == 400
    body = response.content.decode()
    assert CONFIRM_REQUIRED in body
    # The page is shown again with what was about to happen and the sentence to tick.
    assert action.shows(world)[0] in body
    assert response.context["form"]["confirm"].label.startswith("I ")
    assert response.context["form"]["confirm"].label != "I understand what happens now."
    assert not action.done(world)
    assert not AuditEvent.objects.filter(action=action.audit).exists()


@pytest.mark.parametrize("name", NAMES)
def test_empty_post_does_nothing_and_says_why(
    staff_client: Client, world: World, name: str
) -> None:
    action = ACTIONS[name]
    response = staff_client.post(action.post_url(world), {})
    assert response.status_code == 400
    assert b"errorlist" in response.content
    assert not action.done(world)
    assert not AuditEvent.objects.filter(action=action.audit).exists()


@pytest.mark.parametrize("name", NAMES)
def test_confirmed_post_acts_and_is_audited(
    staff_client: Client, world: World, sam: Any, name: str
) -> None:
    action = ACTIONS[name]
    response = staff_client.post(action.post_url(world), action.data, REMOTE_ADDR=WHERE)
    assert response.status_code == action.acted_status
    assert action.done(world)
    event = AuditEvent.objects.get(action=action.audit)
    assert (event.actor, event.client_address) == (sam, WHERE)
    if action.reason_key:
        assert event.detail[action.reason_key] == action.data[action.reason_key]


@pytest.mark.parametrize("name", [n for n, a in ACTIONS.items() if a.reason_key])
@pytest.mark.parametrize("reason", ["", "   ", "<script>alert(1)</script>", "r" * 501])
def test_a_reason_is_required_and_plain(
    staff_client: Client, world: World, name: str, reason: str
) -> None:
    action = ACTIONS[name]
    assert action.reason_key is not None
    response = staff_client.post(action.post_url(world), {**action.data, action.reason_key: reason})
    assert response.status_code == 400
    assert response.context["form"].errors[action.reason_key]
    assert b"<script>alert" not in response.content
    assert not action.done(world)
    assert not AuditEvent.objects.filter(action=action.audit).exists()


# --- Who may ask and act ---------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_anonymous_visitor_can_neither_see_nor_confirm(
    client: Client, world: World, name: str
) -> None:
    action = ACTIONS[name]
    sign_in = reverse(access.SIGN_IN_URL_NAME) + "?next="
    for response in (client.get(action.page_url(world)),
                     client.post(action.post_url(world), action.data)):
        assert response.status_code == 302
        assert response["Location"].startswith(sign_in)
    assert not action.done(world)
    assert not AuditEvent.objects.filter(action=action.audit).exists()


@pytest.mark.parametrize("name", NAMES)
def test_non_staff_user_gets_404_for_the_page_and_the_confirmation(
    outsider_client: Client, world: World, name: str
) -> None:
    action = ACTIONS[name]
    assert outsider_client.get(action.page_url(world)).status_code == 404
    assert outsider_client.post(action.post_url(world), action.data).status_code == 404
    assert not action.done(world)
    assert not AuditEvent.objects.filter(action=action.audit).exists()


@pytest.mark.parametrize("name", NAMES)
def test_staff_without_second_factor_cannot_confirm(
    unverified_staff_client: Client, world: World, name: str
) -> None:
    action = ACTIONS[name]
    response = unverified_staff_client.post(action.post_url(world), action.data)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse(access.OTP_URL_NAME) + "?next=")
    assert not action.done(world)


def test_confirmed_post_needs_the_csrf_token(sam: Any, world: World) -> None:
    from tests.adminconsole.sessions import verified_client

    client = verified_client(sam)
    client.handler.enforce_csrf_checks = True
    action = ACTIONS["anchor-remove"]
    assert client.post(action.post_url(world), action.data).status_code == 403
    assert not action.done(world)


# --- The buttons lead to the confirmation pages ----------------------------------------------


def _posts_to(body: str, url: str) -> bool:
    return f'method="post" action="{url}"' in body


@pytest.mark.parametrize(
    "listing,name",
    [
        (lambda w: reverse("adminconsole:anchor-list"), "anchor-remove"),
        (lambda w: reverse("adminconsole:route-list"), "route-delete"),
        (lambda w: reverse("adminconsole:delivery-detail", kwargs={"pk": w.delivery.pk}),
         "delivery-fail"),
        (lambda w: reverse("adminconsole:address-detail", kwargs={"pk": w.address.pk}),
         "address-revoke-grant"),
        (lambda w: reverse("adminconsole:address-detail", kwargs={"pk": w.address.pk}),
         "address-reset-password"),
        (lambda w: reverse("adminconsole:address-detail", kwargs={"pk": w.address.pk}),
         "address-disable"),
    ],
)
def test_the_button_links_to_the_confirmation_page_instead_of_acting(
    staff_client: Client, world: World, listing: Callable[[World], str], name: str
) -> None:
    action = ACTIONS[name]
    body = staff_client.get(listing(world)).content.decode()
    assert f'href="{action.page_url(world)}"' in body
    if not action.post:
        assert not _posts_to(body, action.post_url(world))


def test_address_page_offers_suspension_only_for_an_active_address(
    staff_client: Client, world: World
) -> None:
    detail = reverse("adminconsole:address-detail", kwargs={"pk": world.address.pk})
    suspend = reverse("adminconsole:address-status-confirm",
                      kwargs={"pk": world.address.pk, "transition": "suspend"})
    assert suspend not in staff_client.get(detail).content.decode()  # pending
    Address.objects.filter(pk=world.address.pk).update(status=Address.Status.ACTIVE)
    body = staff_client.get(detail).content.decode()
    assert f'href="{suspend}"' in body
    assert 'name="transition" value="activate"' not in body


# --- Suspension, and what cannot be confirmed ------------------------------------------------


def test_suspension_is_confirmed_with_a_reason_and_audited(
    staff_client: Client, world: World
) -> None:
    Address.objects.filter(pk=world.address.pk).update(status=Address.Status.ACTIVE)
    page = staff_client.get(reverse("adminconsole:address-status-confirm",
                                    kwargs={"pk": world.address.pk, "transition": "suspend"}))
    assert page.status_code == 200
    body = page.content.decode()
    assert "Mail to alice@direct.example.org is refused from now on" in body
    assert "Its 2 users (owner and delegates) can no longer open it" in body
    assert "Its 1 current certificate is no longer published" in body
    assert "can be activated again later" in body
    url = reverse("adminconsole:address-status", kwargs={"pk": world.address.pk})
    refused = staff_client.post(url, {"transition": "suspend", "note": "on leave"})
    assert refused.status_code == 400
    assert CONFIRM_REQUIRED in refused.content.decode()
    no_reason = staff_client.post(url, {"transition": "suspend", "confirm": "on"})
    assert no_reason.status_code == 400
    assert no_reason.context["form"].errors["note"]
    world.address.refresh_from_db()
    assert world.address.status == Address.Status.ACTIVE
    done = staff_client.post(url, {"transition": "suspend", "note": "on leave", "confirm": "on"})
    assert done.status_code == 302
    world.address.refresh_from_db()
    assert world.address.status == Address.Status.SUSPENDED
    assert AuditEvent.objects.get(action="address.suspend").detail["note"] == "on leave"


def test_activation_stays_one_step(staff_client: Client, world: World) -> None:
    Address.objects.filter(pk=world.address.pk).update(status=Address.Status.SUSPENDED)
    response = staff_client.post(
        reverse("adminconsole:address-status", kwargs={"pk": world.address.pk}),
        {"transition": "activate"},
    )
    # No proofing record in this world: refused by the service, on the address page, not
    # for want of a confirmation.
    assert response.status_code == 400
    assert "proofed" in str(response.context["status_form"].non_field_errors())
    assert "confirm" not in response.context["status_form"].errors


@pytest.mark.parametrize("transition", ["activate", "delete", "SUSPEND"])
def test_only_suspension_and_disabling_have_a_confirmation_page(
    staff_client: Client, world: World, transition: str
) -> None:
    url = reverse("adminconsole:address-status-confirm",
                  kwargs={"pk": world.address.pk, "transition": transition})
    assert staff_client.get(url).status_code == 404


def test_confirmation_page_of_an_unknown_object_is_404(staff_client: Client, world: World) -> None:
    for name in ("anchor-remove", "route-delete", "delivery-fail", "address-reset-password"):
        assert staff_client.get(reverse(f"adminconsole:{name}", kwargs={"pk": 999999})).status_code == 404
    assert staff_client.get(reverse(
        "adminconsole:address-status-confirm", kwargs={"pk": 999999, "transition": "disable"}
    )).status_code == 404


def _blocked(client: Client, url: str, message: str) -> None:
    response = client.get(url)
    assert response.status_code == 200
    body = response.content.decode()
    assert message in body
    assert 'name="confirm"' not in body  # nothing to confirm: no form at all


def test_pages_say_when_an_action_cannot_be_done(staff_client: Client, world: World) -> None:
    TrustAnchor.objects.filter(pk=world.anchor.pk).update(bundle=world.bundle)
    _blocked(staff_client, ACTIONS["anchor-remove"].page_url(world), "remove the bundle instead")
    Delivery.objects.filter(pk=world.delivery.pk).update(state=Delivery.State.DISPATCHED)
    _blocked(staff_client, ACTIONS["delivery-fail"].page_url(world), "cannot be failed")
    owner = AddressGrant.objects.get(address=world.address, role=AddressGrant.Role.OWNER)
    _blocked(
        staff_client,
        reverse("adminconsole:address-revoke-grant",
                kwargs={"pk": world.address.pk, "grant_pk": owner.pk}),
        "The owner&#x27;s access is not revoked here.",
    )
    get_user_model().objects.filter(username="alice").update(is_staff=True)
    _blocked(staff_client, ACTIONS["address-reset-password"].page_url(world),
             "Staff passwords are not reset")
    Address.objects.filter(pk=world.address.pk).update(status=Address.Status.DISABLED)
    _blocked(staff_client, ACTIONS["address-disable"].page_url(world), "cannot be disabled")


def test_a_domains_own_ca_and_an_inbound_delivery_are_not_offered(
    staff_client: Client, world: World
) -> None:
    hosted = identity.add_domain("clinic.example.com")
    own = TrustAnchor.objects.get(domain=hosted, certificate=hosted.issuing_ca)
    _blocked(staff_client, reverse("adminconsole:anchor-remove", kwargs={"pk": own.pk}),
             "always trusts its own CA")
    inbound = Message.objects.create(
        direction=Message.Direction.INBOUND, state=Message.State.PROCESSING,
        message_id="<in9@partner.example.net>", raw=b"x",
    )
    delivery = Delivery.objects.create(
        message=inbound, recipient="alice@direct.example.org", state=Delivery.State.QUEUED
    )
    _blocked(staff_client, reverse("adminconsole:delivery-fail", kwargs={"pk": delivery.pk}),
             "Only outbound deliveries")


def test_the_postmaster_mailbox_is_not_offered_for_disabling(
    staff_client: Client, db: None
) -> None:
    identity.add_domain("clinic.example.com")
    postmaster = Address.objects.get(address="postmaster@clinic.example.com")
    url = reverse("adminconsole:address-status-confirm",
                  kwargs={"pk": postmaster.pk, "transition": "disable"})
    _blocked(staff_client, url, "postmaster")
    detail = staff_client.get(reverse("adminconsole:address-detail", kwargs={"pk": postmaster.pk}))
    assert url not in detail.content.decode()


def test_fail_page_counts_the_other_recipients_and_is_audited_as_a_view(
    staff_client: Client, world: World, sam: Any
) -> None:
    Delivery.objects.create(message=world.message, recipient="yan@partner.example.net",
                            state=Delivery.State.QUEUED)
    response = staff_client.get(ACTIONS["delivery-fail"].page_url(world))
    assert "1 other recipient is not affected" in response.content.decode()
    assert b"Jane Roe" not in response.content and b"SECRET-BODY-TEXT" not in response.content
    viewed = AuditEvent.objects.get(action="delivery.console-view")
    assert (viewed.actor, viewed.object_id) == (sam, str(world.delivery.pk))


def test_anchor_page_counts_other_domains_and_recent_messages(
    staff_client: Client, world: World
) -> None:
    other = Domain.objects.create(name="clinic.example.net")
    TrustAnchor.objects.create(certificate=world.anchor.certificate, domain=other)
    Message.objects.create(
        direction=Message.Direction.INBOUND, state=Message.State.DELIVERED,
        message_id="<in3@partner.example.net>", raw=b"x", anchor=world.anchor.certificate,
    )
    body = staff_client.get(ACTIONS["anchor-remove"].page_url(world)).content.decode()
    assert "1 other hosted domain trusts the same certificate" in body
    assert "1 message was verified under this anchor in the last 30 days" in body


def test_an_empty_revocation_post_says_what_is_missing(staff_client: Client, world: World) -> None:
    # Revocation asked first already; an empty POST must still explain itself, not just 400.
    url = reverse("adminconsole:certificate-revoke", kwargs={"pk": world.certificate.pk})
    response = staff_client.post(url, {})
    assert response.status_code == 400
    assert response.context["form"].errors["confirm"]
    assert b"errorlist" in response.content
    world.certificate.refresh_from_db()
    assert world.certificate.revoked_at is None
    assert not AuditEvent.objects.filter(action="certificate.revoke").exists()
