"""What a busy reader sees at a glance: empty states, unread marks, delivery words, trust banners."""

from __future__ import annotations

import re

from hisp.models import Delivery, MailboxEntry, Message
from tests.factories import MailboxEntryFactory, MessageFactory

Box = MailboxEntry.SystemFolder


def test_an_empty_folder_names_itself_and_hides_the_bulk_actions(alice, alice_client):
    body = alice_client.get(f"/mail/a/{alice.address.pk}/archive/").content.decode()
    assert "No messages in Archive." in body
    assert 'aria-label="Actions on ticked messages"' not in body


def test_a_search_without_matches_repeats_the_words_searched(alice, alice_client):
    MailboxEntryFactory(address=alice.address, subject="Referral")
    body = alice_client.get(f"/mail/a/{alice.address.pk}/search/?q=zzzqq").content.decode()
    assert "No messages match “zzzqq”." in body


def test_unread_rows_carry_a_mark_that_does_not_rest_on_style_alone(alice, alice_client):
    MailboxEntryFactory(address=alice.address, subject="New one", read=False)
    MailboxEntryFactory(address=alice.address, subject="Old one", read=True)
    body = alice_client.get(f"/mail/a/{alice.address.pk}/inbox/").content.decode()
    unread_rows = re.findall(r'<tr class="unread">.*?</tr>', body, re.S)
    assert len(unread_rows) == 1
    assert "Unread: </span><bdi>New one</bdi>" in unread_rows[0]


def test_the_sent_list_words_each_delivery_state_for_people(alice, alice_client):
    words = {"failed": "Failed", "processed": "Received", "dispatched": "Delivered",
             "queued": "Queued"}
    for state in words:
        message = MessageFactory(direction=Message.Direction.OUTBOUND, state=Message.State.SENT)
        Delivery.objects.create(message=message, recipient="x@partner.example", state=state)
        MailboxEntryFactory(address=alice.address, message=message, folder=Box.SENT)
    body = alice_client.get(f"/mail/a/{alice.address.pk}/sent/").content.decode()
    for state, word in words.items():
        assert re.search(rf'data-state="{state}">{word}</span>', body), state


def test_the_unverified_banner_names_the_unchecked_sender(alice, alice_client):
    entry = MailboxEntryFactory(address=alice.address,
                                message=MessageFactory(signer="", sender="who@unknown.example"))
    body = alice_client.get(f"/mail/m/{entry.pk}/").content.decode()
    banner = re.search(r'<div class="notice bad trust"[^>]*id="trust-banner">(.*?)</div>\s*</div>',
                       body, re.S)
    assert banner is not None
    assert "Not verified" in banner.group(1)
    assert "who@unknown.example" in banner.group(1)


def test_settings_pages_mark_the_current_tab(alice, alice_client):
    body = alice_client.get("/mail/account/app-passwords/").content.decode()
    assert re.search(r'href="/mail/account/app-passwords/" aria-current="page"', body)
    assert "No app passwords yet." in body


def test_an_error_notice_interrupts_and_a_success_waits_its_turn(alice, alice_client):
    ticked = MailboxEntryFactory(address=alice.address)
    url = f"/mail/a/{alice.address.pk}/inbox/"
    body = alice_client.post(f"/mail/a/{alice.address.pk}/bulk/",
                             {"entry": [ticked.pk], "action": "nonsense"}, follow=True).content.decode()
    assert '<span role="alert">Unknown action.</span>' in body
    body = alice_client.post(f"/mail/a/{alice.address.pk}/bulk/",
                             {"entry": [ticked.pk], "action": "delete"}, follow=True).content.decode()
    assert '<span role="status">Moved 1 message to Trash.</span>' in body
    assert 'role="alert"' not in alice_client.get(url).content.decode()
