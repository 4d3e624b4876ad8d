"""A patient's invitation opened in a browser where someone else is signed in (a clinic's shared
computer, a family laptop)."""

from __future__ import annotations

import logging

import pytest
from django.core.cache import cache
from django.test import Client

from hisp.models import Address, Invitation
from tests.webmail.personas import Persona, signed_in
from tests.webmail.test_invitations import (
    GOOD,
    SET_UP,
    invite,
    link,
    open_link,
    patient_address,
)


@pytest.fixture(autouse=True)
def _fresh_failure_counts() -> None:
    cache.clear()


@pytest.fixture
def patient(db: None) -> Address:
    return patient_address()


def test_the_set_up_page_says_who_is_signed_in_and_that_they_will_be_signed_out(
    patient: Address, alice: Persona
) -> None:
    token, _row = invite(patient)
    client = signed_in(alice)
    page = open_link(client, token)
    assert page.status_code == 200
    assert page.context["signed_in_as"] == "alice"
    assert 'id="someone-else"' in page.content.decode()
    assert "signs alice out first" in page.content.decode()


def test_accepting_in_someone_elses_session_signs_them_out(patient: Address, alice: Persona) -> None:
    token, _row = invite(patient)
    client = signed_in(alice)
    open_link(client, token)
    done = client.post(SET_UP, {"new_password1": GOOD, "new_password2": GOOD})
    assert done.status_code == 302
    # The browser is now the patient's, password only: alice's mailbox is not open in it.
    response = client.get(f"/mail/a/{alice.address.pk}/inbox/")
    assert response.status_code == 302 and "/mail/login/enrol/" in response["Location"]
    assert int(client.session["_auth_user_id"]) != alice.user.pk


def test_no_notice_when_nobody_is_signed_in(patient: Address) -> None:
    token, _row = invite(patient)
    page = open_link(Client(), token)
    assert page.context["signed_in_as"] == ""
    assert 'id="someone-else"' not in page.content.decode()


@pytest.mark.parametrize("method", ["head", "post", "put", "options"])
def test_a_link_checked_with_another_method_never_logs_the_token(
    patient: Address, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Mail scanners check links before the patient clicks them, often with HEAD.
    token, _row = invite(patient)
    with caplog.at_level(logging.DEBUG):
        response = getattr(Client(), method)(link(token))
    assert response.status_code in (200, 302, 405)
    assert token not in caplog.text
    assert Invitation.objects.get(pk=_row.pk).accepted_at is None


def test_head_on_a_valid_link_does_not_use_it_up(patient: Address) -> None:
    token, _row = invite(patient)
    assert Client().head(link(token)).status_code == 302
    page = open_link(Client(), token)
    assert page.status_code == 200 and page.context["state"] == "form"
