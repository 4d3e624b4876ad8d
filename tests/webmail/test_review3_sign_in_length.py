"""A user name longer than any account's reached django-axes, whose record of the failed
attempt holds 255 characters: the sign-in page answered 500 to anyone, signed in or not."""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt
from django.test import Client

from tests.webmail.personas import PASSWORD


@pytest.mark.parametrize("length", [256, 100_000])
def test_an_overlong_user_name_is_a_form_error(alice, length) -> None:
    response = Client().post("/mail/login/", {"username": "a" * length, "password": "guess"})
    assert response.status_code == 200
    assert response.context["form"].errors["username"] == [
        f"Ensure this value has at most 150 characters (it has {length})."
    ]
    assert not response.wsgi_request.user.is_authenticated


def test_a_wrong_password_is_still_counted_and_the_right_one_signs_in(alice) -> None:
    client = Client()
    client.post("/mail/login/", {"username": "alice", "password": "guess"})
    assert AccessAttempt.objects.filter(username="alice", failures_since_start=1).exists()
    response = client.post("/mail/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
