"""Error pages are the site's own: its header, a main landmark, a way back, and nothing about
what was asked for (a message that does not exist and one the user may not see look alike)."""

from __future__ import annotations

import pytest
from django.test import Client, RequestFactory
from django.views.defaults import server_error

from tests.factories import AddressGrantFactory
from tests.webmail.personas import make_persona, signed_in


def _own_page(response, heading: str) -> str:
    page = response.content.decode()
    assert f"<h1>{heading}</h1>" in page
    assert '<main id="main"' in page and 'href="#main"' in page  # landmark and skip link
    assert 'href="/"' in page
    return page


@pytest.mark.django_db
def test_a_message_that_is_not_yours_is_the_sites_own_404():
    alice = make_persona("alice", "clinic.example")
    response = signed_in(alice).get("/mail/m/999999999/")
    assert response.status_code == 404
    page = _own_page(response, "This page is not here")
    assert "999999999" not in page
    assert "admin console" not in page  # alice is not staff


@pytest.mark.django_db
def test_an_unknown_address_for_a_stranger_is_the_same_404():
    response = Client().get("/no/such/page/")
    assert response.status_code == 404
    _own_page(response, "This page is not here")


@pytest.mark.django_db
def test_a_read_only_delegate_gets_the_sites_own_403():
    alice = make_persona("alice", "clinic.example")
    bob = make_persona("bob", "clinic.example")
    AddressGrantFactory(user=bob.user, address=alice.address, role="read")
    response = signed_in(bob).get(f"/mail/a/{alice.address.pk}/sharing/")
    assert response.status_code == 403
    _own_page(response, "You cannot do this here")


@pytest.mark.django_db
def test_an_expired_form_says_nothing_was_sent_and_what_to_do():
    response = Client(enforce_csrf_checks=True).post(
        "/mail/login/", {"username": "alice", "password": "x"}
    )
    assert response.status_code == 403
    page = _own_page(response, "That form had expired")
    assert "Nothing was sent or changed" in page


def test_the_500_page_renders_without_a_request_context():
    # Django renders it with an empty context: nothing in it may need the request.
    response = server_error(RequestFactory().get("/"))
    assert response.status_code == 500
    _own_page(response, "Something went wrong on our side")
