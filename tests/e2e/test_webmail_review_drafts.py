"""End to end in headless Chromium: the compose page's autosave under stress. The same draft
open in two tabs, a delegation revoked while a delegate writes, and Send pressed while an
autosave is still on its way. The typed text is never lost and the page never claims a save
that did not happen."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from hisp.models import AddressGrant, Message
from tests.e2e.test_webmail import sign_in
from tests.e2e.watch import script_errors
from tests.factories import AddressGrantFactory
from tests.webmail.personas import make_persona
from webmail import services
from webmail.models import Draft

DRAFT_SPLIT = "saved as a separate draft"
pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def watched(page) -> Iterator[object]:
    errors = script_errors(page)
    yield page
    assert page.csp_problems == []
    # An autosave refused on purpose (403/404) is logged by the browser as a failed load.
    assert [e for e in errors if "status of 40" not in e] == []


def test_the_same_draft_typed_into_in_two_tabs_keeps_both_texts(watched):
    alice = make_persona("alice", "clinic.example")
    draft = Draft.objects.create(author=alice.user, address=alice.address, to="dana@partner.example",
                                 subject="Referral", body="Start.")
    sign_in(watched, alice)
    other = watched.context.new_page()
    for tab in (watched, other):
        tab.goto(f"/mail/compose/?draft={draft.pk}")
        tab.get_by_label("Body").press("Control+End")
    other.get_by_label("Body").press_sequentially(" Second tab.", delay=10)
    other.locator("#draft-status", has_text="Draft saved").wait_for()
    watched.get_by_label("Body").press_sequentially(" First tab.", delay=10)
    watched.locator("#draft-status", has_text="saved as a separate draft").wait_for()
    assert DRAFT_SPLIT in watched.locator("#draft-status").inner_text()
    bodies = sorted(Draft.objects.values_list("body", flat=True))
    assert bodies == ["Start. First tab.", "Start. Second tab."]
    # The first tab goes on saving into its own new draft, the second into the old one.
    watched.get_by_label("Body").press_sequentially(" More.", delay=10)
    other.get_by_label("Body").press_sequentially(" More too.", delay=10)
    wanted = ["Start. First tab. More.", "Start. Second tab. More too."]
    for _ in range(100):
        if sorted(Draft.objects.values_list("body", flat=True)) == wanted:
            break
        watched.wait_for_timeout(100)
    assert sorted(Draft.objects.values_list("body", flat=True)) == wanted
    assert DRAFT_SPLIT not in other.locator("#draft-status").inner_text()
    other.close()


def test_a_delegate_whose_access_is_revoked_while_writing_is_told_the_draft_is_not_saved(watched):
    alice = make_persona("alice", "clinic.example")
    bob = make_persona("bob", "clinic.example")
    grant = AddressGrantFactory(user=bob.user, address=alice.address,
                                role=AddressGrant.Role.READ_SEND)
    sign_in(watched, bob)
    watched.goto(f"/mail/compose/?from={alice.address.pk}")
    watched.get_by_label("To", exact=True).fill("dana@partner.example")
    watched.get_by_label("Body").press_sequentially("Results are", delay=10)
    watched.locator("#draft-status", has_text="Draft saved").wait_for()
    grant.delete()
    watched.get_by_label("Body").press_sequentially(" normal.", delay=10)
    status = watched.locator("#draft-status [data-draft-error]")
    status.wait_for()
    assert "Draft not saved" in status.inner_text()
    assert "Draft saved" not in watched.locator("#draft-status").inner_text()
    assert watched.get_by_label("Body").input_value() == "Results are normal."


def test_send_pressed_while_the_first_autosave_is_on_its_way_leaves_no_stale_draft(
    watched, monkeypatch
):
    alice = make_persona("alice", "clinic.example")
    arrived, release = threading.Event(), threading.Event()
    real_save = services.save_draft

    def slow_save(**kwargs):  # the autosave reaches the server and is held there
        arrived.set()
        release.wait(10)
        return real_save(**kwargs)

    monkeypatch.setattr(services, "save_draft", slow_save)
    sign_in(watched, alice)
    watched.get_by_role("link", name="Write a message").click()
    watched.get_by_label("To", exact=True).fill("dana@partner.example")
    watched.get_by_label("Subject").fill("Referral")
    watched.get_by_label("Body").press_sequentially("Please see.", delay=10)
    assert arrived.wait(15)
    watched.get_by_role("button", name="Send securely").click()
    watched.wait_for_timeout(300)
    release.set()
    watched.get_by_role("heading", name="Delivery").wait_for()
    assert Message.objects.filter(direction=Message.Direction.OUTBOUND).count() == 1
    watched.wait_for_timeout(500)
    assert not Draft.objects.exists()
