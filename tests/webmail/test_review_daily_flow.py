"""The clinician's day under stress: the same draft open in two windows, a send racing an
autosave, forwarding a message a colleague deleted meanwhile, ticking messages another window
already deleted, moving into a folder deleted meanwhile. Each gives a clear message, never a
500, and never loses the typed text."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction
from django.test import RequestFactory

from hisp.models import AddressGrant, Folder, MailboxEntry, Message
from tests.factories import AddressGrantFactory, MailboxEntryFactory, MessageFactory
from tests.webmail.personas import make_persona, signed_in
from webmail import services
from webmail.models import Draft

Box = MailboxEntry.SystemFolder
# What the page says (webmail.views.compose), in part.
DRAFT_GONE = "was sent or discarded meanwhile"
DRAFT_SPLIT = "saved as a separate draft"
FORWARD_GONE = "The message you were forwarding has been deleted"
DRAFT_URL = "/mail/compose/draft/"


def _autosave(client, sender, **fields):
    data = {"sender": sender.pk, "to": "dana@partner.example", "subject": "Referral",
            "body": "typing", "delivery_notification": "on"}
    data.update(fields)
    return client.post(DRAFT_URL, data)


def _send(client, sender, **fields):
    data = {"sender": sender.pk, "to": "dana@partner.example", "cc": "", "subject": "Referral",
            "body": "Please see.", "delivery_notification": "on"}
    data.update(fields)
    return client.post("/mail/compose/", data)


def _resumed(client, draft: Draft) -> dict:
    """What a compose page opened on the draft carries in its hidden fields."""
    form = client.get(f"/mail/compose/?draft={draft.pk}").context["form"]
    return {"draft": form.initial["draft"], "draft_version": form.initial["draft_version"]}


# --- Drafts in two windows ----------------------------------------------------------------------
def test_a_draft_changed_in_another_window_is_not_overwritten_by_this_ones_autosave(
    alice, alice_client
):
    draft = Draft.objects.create(author=alice.user, address=alice.address, body="first words")
    first_window, second_window = _resumed(alice_client, draft), _resumed(alice_client, draft)
    _autosave(alice_client, alice.address, body="second window's text", **second_window)
    response = _autosave(alice_client, alice.address, body="first window's text", **first_window)
    assert response.status_code == 200
    assert DRAFT_SPLIT in response.content.decode()
    draft.refresh_from_db()
    assert draft.body == "second window's text"
    kept = Draft.objects.exclude(pk=draft.pk).get()
    assert kept.body == "first window's text"
    # The page goes on saving into its own new draft, with its new version.
    assert f'value="{kept.pk}"'.encode() in response.content
    assert kept.updated_at.isoformat().encode() in response.content


def test_each_windows_later_autosaves_go_on_into_its_own_draft(alice, alice_client):
    draft = Draft.objects.create(author=alice.user, address=alice.address, body="start")
    page = _resumed(alice_client, draft)
    _autosave(alice_client, alice.address, body="more", **page)
    draft.refresh_from_db()
    again = _autosave(alice_client, alice.address, body="more still", draft=draft.pk,
                      draft_version=draft.updated_at.isoformat())
    assert DRAFT_SPLIT not in again.content.decode()
    draft.refresh_from_db()
    assert draft.body == "more still" and Draft.objects.count() == 1


def test_an_autosave_after_the_draft_was_sent_elsewhere_keeps_the_text_as_a_new_draft(
    alice, alice_client
):
    draft = Draft.objects.create(author=alice.user, address=alice.address, body="sent text")
    page = _resumed(alice_client, draft)
    assert _send(alice_client, alice.address, **_resumed(alice_client, draft)).status_code == 302
    response = _autosave(alice_client, alice.address, body="still typing here", **page)
    assert response.status_code == 200
    assert DRAFT_GONE in response.content.decode()
    assert Draft.objects.get().body == "still typing here"


def test_a_send_does_not_discard_a_draft_another_window_changed_since(alice, alice_client):
    draft = Draft.objects.create(author=alice.user, address=alice.address, body="start")
    sending_window = _resumed(alice_client, draft)
    _autosave(alice_client, alice.address, body="the other window's newer text",
              **_resumed(alice_client, draft))
    assert _send(alice_client, alice.address, **sending_window).status_code == 302
    assert Draft.objects.get(pk=draft.pk).body == "the other window's newer text"


def test_a_send_still_discards_the_draft_it_came_from(alice, alice_client):
    draft = Draft.objects.create(author=alice.user, address=alice.address, body="start")
    assert _send(alice_client, alice.address, **_resumed(alice_client, draft)).status_code == 302
    assert not Draft.objects.exists()


def test_an_autosave_that_loses_a_race_with_the_send_never_brings_the_draft_back(alice):
    # The autosave read the draft, then the send deleted it: Model.save() would have found
    # nothing to UPDATE and INSERTed the sent draft again under its old id.
    draft = Draft.objects.create(author=alice.user, address=alice.address, body="sent text")
    read_by_autosave = Draft.objects.get(pk=draft.pk)
    services.discard_sent_draft(author=alice.user, draft_id=draft.pk)
    services.save_draft(
        author=alice.user, address=alice.address, draft=read_by_autosave, to="", cc="",
        subject="", body="sent text", delivery_notification=True, forward_of=None,
    )
    assert not Draft.objects.filter(pk=draft.pk).exists()


def test_another_users_draft_id_is_still_404_and_untouched(alice, charlie, charlie_client):
    draft = Draft.objects.create(author=alice.user, address=alice.address, body="private")
    response = _autosave(charlie_client, charlie.address, draft=draft.pk, body="overwritten")
    assert response.status_code == 404
    assert Draft.objects.get(pk=draft.pk).body == "private"
    assert not Draft.objects.filter(author=charlie.user).exists()


def test_a_mangled_draft_version_saves_as_before(alice, alice_client):
    draft = Draft.objects.create(author=alice.user, address=alice.address, body="start")
    response = _autosave(alice_client, alice.address, draft=draft.pk, draft_version="yesterday",
                         body="new")
    assert response.status_code == 200
    draft.refresh_from_db()
    assert draft.body == "new" and Draft.objects.count() == 1


# --- Forwarding a message deleted meanwhile -----------------------------------------------------
def _forwardable(alice) -> MailboxEntry:
    message = MessageFactory(attachments=[("ccd.xml", "text/xml", b"<ClinicalDocument/>")])
    return MailboxEntryFactory(address=alice.address, message=message)


def test_sending_a_forward_of_a_message_deleted_meanwhile_keeps_the_text_and_says_why(
    alice, alice_client
):
    entry = _forwardable(alice)
    MailboxEntry.objects.filter(pk=entry.pk).delete()  # deleted forever in another window
    response = _send(alice_client, alice.address, forward_of=entry.pk,
                     body="My notes for the specialist")
    assert response.status_code == 200
    assert FORWARD_GONE in response.content.decode()
    assert "My notes for the specialist" in response.content.decode()
    assert not Message.objects.filter(direction=Message.Direction.OUTBOUND).exists()
    # Sent again as the page now stands, it goes, without the attachments.
    form = response.context["form"]
    assert form["forward_of"].value() in ("", None)
    again = _send(alice_client, alice.address, body="My notes for the specialist")
    assert again.status_code == 302


def test_autosaving_a_forward_of_a_message_deleted_meanwhile_still_saves(alice, alice_client):
    entry = _forwardable(alice)
    MailboxEntry.objects.filter(pk=entry.pk).delete()
    response = _autosave(alice_client, alice.address, forward_of=entry.pk, body="notes")
    assert response.status_code == 200
    assert FORWARD_GONE in response.content.decode()
    saved = Draft.objects.get()
    assert saved.body == "notes" and saved.forward_of is None


def test_forwarding_another_users_message_is_still_404(alice, charlie, charlie_client):
    entry = _forwardable(alice)
    assert _send(charlie_client, charlie.address, forward_of=entry.pk).status_code == 404
    assert _autosave(charlie_client, charlie.address, forward_of=entry.pk).status_code == 404
    assert not Draft.objects.exists()


# --- Messages and folders changed in another window ---------------------------------------------
def test_bulk_acts_on_the_rest_when_one_ticked_message_was_deleted_forever_meanwhile(
    alice, alice_client
):
    gone, kept = MailboxEntryFactory.create_batch(2, address=alice.address)
    MailboxEntry.objects.filter(pk=gone.pk).delete()
    response = alice_client.post(f"/mail/a/{alice.address.pk}/bulk/",
                                 {"entry": [gone.pk, kept.pk], "action": "archive"}, follow=True)
    assert response.status_code == 200
    kept.refresh_from_db()
    assert kept.folder == Box.ARCHIVE
    assert "already been deleted forever" in response.content.decode()


def test_bulk_with_another_mailboxs_message_is_still_404(alice, charlie, alice_client):
    mine, theirs = MailboxEntryFactory(address=alice.address), MailboxEntryFactory(
        address=charlie.address)
    response = alice_client.post(f"/mail/a/{alice.address.pk}/bulk/",
                                 {"entry": [mine.pk, theirs.pk], "action": "archive"})
    assert response.status_code == 404
    mine.refresh_from_db()
    assert mine.folder == Box.INBOX


def test_moving_into_a_folder_deleted_meanwhile_says_so(alice, alice_client):
    folder = Folder.objects.create(address=alice.address, name="Referrals")
    entry = MailboxEntryFactory(address=alice.address)
    Folder.objects.filter(pk=folder.pk).delete()
    target = {"action": "move", "target": f"folder:{folder.pk}"}
    listing = alice_client.post(f"/mail/a/{alice.address.pk}/bulk/",
                                {"entry": [entry.pk], **target}, follow=True)
    assert "that folder no longer exists" in listing.content.decode()
    detail = alice_client.post(f"/mail/m/{entry.pk}/action/", target, follow=True)
    assert "that folder no longer exists" in detail.content.decode()
    entry.refresh_from_db()
    assert entry.folder == Box.INBOX


def test_moving_a_message_another_window_already_moved_just_moves_it(alice, alice_client):
    entry = MailboxEntryFactory(address=alice.address)
    url = f"/mail/m/{entry.pk}/action/"
    assert alice_client.post(url, {"action": "archive"}).status_code == 302
    assert alice_client.post(url, {"action": "move", "target": "inbox"}).status_code == 302
    entry.refresh_from_db()
    assert entry.folder == Box.INBOX


# --- A delegate whose sending is revoked while writing ------------------------------------------
def test_a_delegates_send_after_revocation_keeps_the_text_and_says_why(alice, bob):
    grant = AddressGrantFactory(user=bob.user, address=alice.address,
                                role=AddressGrant.Role.READ_SEND)
    client = signed_in(bob)
    grant.delete()
    response = _send(client, alice.address, body="Results are normal.")
    assert response.status_code == 200
    page = response.content.decode()
    assert "You can no longer send from this address" in page
    assert "Results are normal." in page
    assert not Message.objects.filter(direction=Message.Direction.OUTBOUND).exists()


def test_replying_to_a_message_deleted_meanwhile_opens_an_empty_compose_page_saying_so(
    alice, alice_client
):
    entry = MailboxEntryFactory(address=alice.address)
    MailboxEntry.objects.filter(pk=entry.pk).delete()
    response = alice_client.get(f"/mail/compose/?reply={entry.pk}&mode=reply")
    assert response.status_code == 200
    assert "The message you wanted to answer has been deleted" in response.content.decode()
    assert not response.context["form"].initial.get("body")


def test_replying_to_another_users_message_is_still_404(alice, charlie_client):
    entry = MailboxEntryFactory(address=alice.address)
    assert charlie_client.get(f"/mail/compose/?reply={entry.pk}").status_code == 404


def test_a_user_folder_deleted_while_open_leads_to_the_inbox_with_a_notice(alice, alice_client):
    folder = Folder.objects.create(address=alice.address, name="Referrals")
    Folder.objects.filter(pk=folder.pk).delete()
    page = alice_client.get(f"/mail/a/{alice.address.pk}/folders/{folder.pk}/", follow=True)
    assert page.status_code == 200
    assert "That folder has been deleted" in page.content.decode()
    for action in ("rename", "delete"):
        again = alice_client.post(f"/mail/folders/{folder.pk}/{action}/", {"name": "X"},
                                  follow=True)
        assert again.status_code == 200
        assert "That folder has been deleted" in again.content.decode()


def test_another_mailboxs_folder_is_still_404(alice, charlie, alice_client):
    theirs = Folder.objects.create(address=charlie.address, name="Theirs")
    assert alice_client.get(
        f"/mail/a/{alice.address.pk}/folders/{theirs.pk}/").status_code == 404
    assert alice_client.post(f"/mail/folders/{theirs.pk}/delete/").status_code == 404
    assert Folder.objects.filter(pk=theirs.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_move_into_a_folder_deleted_at_the_same_moment_never_loses_the_message():
    alice = make_persona("alice", "clinic.example")
    folder = Folder.objects.create(address=alice.address, name="Referrals")
    entry = MailboxEntryFactory(address=alice.address)
    deleted, release = threading.Event(), threading.Event()

    def colleague_deletes_the_folder() -> None:
        try:
            with transaction.atomic():
                Folder.objects.filter(pk=folder.pk).delete()
                deleted.set()
                release.wait(10)
        finally:
            connection.close()

    colleague = threading.Thread(target=colleague_deletes_the_folder)
    colleague.start()
    assert deleted.wait(10)
    request = RequestFactory().post("/mail/")
    request.user = alice.user
    # The move's commit waits on the folder row the colleague deleted, then finds it gone.
    threading.Timer(0.5, release.set).start()
    with pytest.raises(services.FolderGone):
        services.move_entry(entry=entry, folder=Box.USER, user_folder=folder, request=request)
    colleague.join(10)
    entry.refresh_from_db()
    assert entry.folder == Box.INBOX and entry.user_folder is None



def test_resuming_or_discarding_a_draft_sent_meanwhile_says_so(alice, alice_client):
    draft = Draft.objects.create(author=alice.user, address=alice.address, body="x")
    Draft.objects.filter(pk=draft.pk).delete()  # sent from another window
    resumed = alice_client.get(f"/mail/compose/?draft={draft.pk}")
    assert resumed.status_code == 200
    assert "That draft has already been sent or discarded" in resumed.content.decode()
    discarded = alice_client.post(f"/mail/drafts/{draft.pk}/delete/", follow=True)
    assert discarded.status_code == 200
    assert "That draft has already been sent or discarded" in discarded.content.decode()


@pytest.mark.django_db(transaction=True)
def test_a_move_committed_while_its_folder_is_being_deleted_ends_in_the_inbox(monkeypatch):
    alice = make_persona("alice", "clinic.example")
    folder = Folder.objects.create(address=alice.address, name="Referrals")
    entry = MailboxEntryFactory(address=alice.address)

    def colleague_moves_it_in() -> None:
        try:
            MailboxEntry.objects.filter(pk=entry.pk).update(folder=Box.USER, user_folder=folder)
        finally:
            connection.close()

    recorded = services.record

    def record_after_the_colleagues_move(**kwargs):
        # Between the deletion's look at the folder's messages and its DELETE, another window
        # commits a move into the folder.
        if kwargs.get("action") == "folder.delete":
            colleague = threading.Thread(target=colleague_moves_it_in)
            colleague.start()
            colleague.join(10)
        return recorded(**kwargs)

    monkeypatch.setattr(services, "record", record_after_the_colleagues_move)
    request = RequestFactory().post("/mail/")
    request.user = alice.user
    services.delete_folder(folder=folder, request=request)
    entry.refresh_from_db()
    assert (entry.folder, entry.user_folder) == (Box.INBOX, None)
