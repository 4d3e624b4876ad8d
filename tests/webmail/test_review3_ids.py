"""Ids a page sends back as text are ASCII digits or nothing: str.isdigit() also says yes to
superscripts such as "²", which int() refuses, and the compose page and the bulk action
answered those with a 500."""

from __future__ import annotations

import pytest

from hisp.models import MailboxEntry
from tests.factories import MailboxEntryFactory, MessageFactory
from webmail.forms import TokenForm, id_from
from webmail.models import Draft

SUPERSCRIPT = "\u00b2\u00b3"  # "²³": isdigit() but not a number int() reads


@pytest.mark.parametrize("value", [SUPERSCRIPT, "\u0663", "12a", "", None, "-1", " 7"])
def test_only_ascii_digits_are_an_id(value) -> None:
    assert id_from(value) is None


def test_ascii_digits_are_an_id() -> None:
    assert id_from("0042") == 42
    assert id_from(7) == 7


@pytest.mark.parametrize("parameter", ["draft", "reply", "from"])
def test_compose_ignores_an_id_written_in_superscripts(alice, alice_client, parameter) -> None:
    response = alice_client.get("/mail/compose/", {parameter: SUPERSCRIPT})
    assert response.status_code == 200


def test_a_refused_upload_page_ignores_a_draft_id_in_superscripts(alice, alice_client,
                                                                  settings) -> None:
    Draft.objects.create(author=alice.user, address=alice.address, subject="Kept")
    settings.HISP_MAX_MESSAGE_BYTES = 1000  # every upload is then too large
    response = alice_client.post(
        f"/mail/compose/?draft={SUPERSCRIPT}", {"subject": "x", "body": "y" * 3000},
    )
    assert response.status_code < 500


def test_compose_posted_with_a_sender_and_forward_in_superscripts_is_a_form_error(
    alice, alice_client
) -> None:
    response = alice_client.post("/mail/compose/", {
        "sender": SUPERSCRIPT, "forward_of": SUPERSCRIPT, "to": "bob@clinic.example",
        "subject": "Referral", "body": "See the patient.",
    })
    assert response.status_code in (200, 400)
    assert "sender" in response.context["form"].errors


def test_bulk_ignores_an_entry_id_in_superscripts(alice, alice_client) -> None:
    entry = MailboxEntryFactory(address=alice.address, message=MessageFactory())
    response = alice_client.post(f"/mail/a/{alice.address.pk}/bulk/",
                                 {"action": "delete", "entry": [SUPERSCRIPT, str(entry.pk)]})
    assert response.status_code == 302
    entry.refresh_from_db()
    assert entry.folder == MailboxEntry.SystemFolder.TRASH  # the real id still counts


def test_a_code_in_superscript_digits_is_not_a_code() -> None:
    form = TokenForm({"token": "\u00b2" * 6})
    assert not form.is_valid()
    assert form.errors["token"] == ["The code is 6 digits."]
