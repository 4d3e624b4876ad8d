from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from hisp.models import Folder, MailboxEntry
from tests.factories import MailboxEntryFactory, MessageFactory
from webmail.listing import PAGE_SIZE

Box = MailboxEntry.SystemFolder


def test_it_sends_the_mail_root_to_the_first_inbox(alice, alice_client):
    response = alice_client.get("/mail/")
    assert response["Location"] == f"/mail/a/{alice.address.pk}/inbox/"


def test_it_lists_inbox_with_sender_subject_date_and_attachment_mark(alice, alice_client):
    MailboxEntryFactory(address=alice.address, subject="Discharge summary", has_attachments=True,
                        sender="dr.who@partner.example")
    response = alice_client.get(f"/mail/a/{alice.address.pk}/inbox/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "Discharge summary" in body
    assert "dr.who@partner.example" in body
    assert "Has attachments" in body


def test_it_counts_unread_per_folder(alice, alice_client):
    MailboxEntryFactory.create_batch(3, address=alice.address)
    MailboxEntryFactory(address=alice.address, read=True)
    MailboxEntryFactory(address=alice.address, folder=Box.ARCHIVE)
    response = alice_client.get(f"/mail/a/{alice.address.pk}/inbox/")
    links = {link.key: link.unread for link in response.context["folder_links"]}
    assert links["inbox"] == 3
    assert links["archive"] == 1


def test_outsider_gets_404_for_another_mailbox(alice, charlie_client):
    for folder in ("inbox", "sent", "archive", "trash", "drafts"):
        assert charlie_client.get(f"/mail/a/{alice.address.pk}/{folder}/").status_code == 404
    assert charlie_client.get(f"/mail/a/{alice.address.pk}/search/?q=x").status_code == 404
    assert charlie_client.get(f"/mail/a/{alice.address.pk}/folders/").status_code == 404


def test_it_answers_404_for_an_unknown_folder_name(alice, alice_client):
    assert alice_client.get(f"/mail/a/{alice.address.pk}/secrets/").status_code == 404


def test_it_pages_with_a_keyset_cursor_without_overlap(alice, alice_client):
    now = timezone.now()
    same_time = now - timedelta(hours=1)
    for i in range(PAGE_SIZE + 20):
        # Some entries share a timestamp: the id breaks the tie.
        at = same_time if i % 3 == 0 else now - timedelta(minutes=i)
        MailboxEntryFactory(address=alice.address, received_at=at, subject=f"n{i}")
    first = alice_client.get(f"/mail/a/{alice.address.pk}/inbox/")
    page1 = [e.pk for e in first.context["entries"]]
    assert len(page1) == PAGE_SIZE
    cursor = first.context["next_cursor"]
    assert cursor
    second = alice_client.get(f"/mail/a/{alice.address.pk}/inbox/?cursor={cursor}")
    page2 = [e.pk for e in second.context["entries"]]
    assert len(page2) == 20
    assert not set(page1) & set(page2)
    assert second.context["next_cursor"] is None


def test_it_returns_only_rows_for_an_htmx_older_messages_request(alice, alice_client):
    for _ in range(PAGE_SIZE + 1):
        MailboxEntryFactory(address=alice.address)
    cursor = alice_client.get(f"/mail/a/{alice.address.pk}/inbox/").context["next_cursor"]
    response = alice_client.get(f"/mail/a/{alice.address.pk}/inbox/?cursor={cursor}",
                                HTTP_HX_REQUEST="true")
    assert b"<html" not in response.content
    assert b"<tr" in response.content


def test_it_ignores_a_mangled_cursor(alice, alice_client):
    MailboxEntryFactory(address=alice.address)
    response = alice_client.get(f"/mail/a/{alice.address.pk}/inbox/?cursor=zzz.yy")
    assert response.status_code == 200
    assert len(response.context["entries"]) == 1


def test_it_shows_delivery_status_for_sent_mail(alice, alice_client):
    from hisp.models import Delivery, Message

    message = MessageFactory(direction=Message.Direction.OUTBOUND, state=Message.State.SENT)
    Delivery.objects.create(message=message, recipient="x@partner.example", state="processed")
    Delivery.objects.create(message=message, recipient="y@partner.example", state="failed")
    MailboxEntryFactory(address=alice.address, message=message, folder=Box.SENT)
    response = alice_client.get(f"/mail/a/{alice.address.pk}/sent/")
    assert response.context["entries"][0].delivery_summary == "failed"


def test_it_archives_deletes_and_marks_ticked_messages(alice, alice_client):
    one, two, three = MailboxEntryFactory.create_batch(3, address=alice.address)
    url = f"/mail/a/{alice.address.pk}/bulk/"
    alice_client.post(url, {"entry": [one.pk], "action": "archive"})
    alice_client.post(url, {"entry": [two.pk], "action": "delete"})
    alice_client.post(url, {"entry": [three.pk], "action": "read"})
    one.refresh_from_db(), two.refresh_from_db(), three.refresh_from_db()
    assert one.folder == Box.ARCHIVE
    assert two.folder == Box.TRASH and two.trashed_at is not None
    assert three.read


def test_outsider_gets_404_for_bulk_actions_on_another_users_message(alice, charlie, charlie_client):
    entry = MailboxEntryFactory(address=alice.address)
    response = charlie_client.post(f"/mail/a/{charlie.address.pk}/bulk/",
                                   {"entry": [entry.pk], "action": "delete"})
    assert response.status_code == 404
    response = charlie_client.post(f"/mail/a/{alice.address.pk}/bulk/",
                                   {"entry": [entry.pk], "action": "delete"})
    assert response.status_code == 404
    entry.refresh_from_db()
    assert entry.folder == Box.INBOX


def test_it_creates_renames_and_deletes_a_user_folder(alice, alice_client):
    url = f"/mail/a/{alice.address.pk}/folders/"
    assert alice_client.post(url, {"name": "Referrals"}).status_code == 302
    folder = Folder.objects.get(address=alice.address)
    entry = MailboxEntryFactory(address=alice.address)
    alice_client.post(f"/mail/a/{alice.address.pk}/bulk/",
                      {"entry": [entry.pk], "action": "move", "target": f"folder:{folder.pk}"})
    entry.refresh_from_db()
    assert entry.folder == Box.USER and entry.user_folder_id == folder.pk
    listing = alice_client.get(f"/mail/a/{alice.address.pk}/folders/{folder.pk}/")
    assert [e.pk for e in listing.context["entries"]] == [entry.pk]
    alice_client.post(f"/mail/folders/{folder.pk}/rename/", {"name": "Consults"})
    folder.refresh_from_db()
    assert folder.name == "Consults"
    alice_client.post(f"/mail/folders/{folder.pk}/delete/")
    entry.refresh_from_db()
    assert entry.folder == Box.INBOX
    assert not Folder.objects.filter(pk=folder.pk).exists()


def test_it_refuses_a_folder_named_like_a_standard_one(alice, alice_client):
    response = alice_client.post(f"/mail/a/{alice.address.pk}/folders/", {"name": "Inbox"})
    assert response.status_code == 200
    assert not Folder.objects.exists()


def test_outsider_gets_404_for_another_users_folder(alice, charlie, charlie_client):
    folder = Folder.objects.create(address=alice.address, name="Private")
    assert charlie_client.get(f"/mail/a/{alice.address.pk}/folders/{folder.pk}/").status_code == 404
    assert charlie_client.get(f"/mail/a/{charlie.address.pk}/folders/{folder.pk}/").status_code == 404
    assert charlie_client.post(f"/mail/folders/{folder.pk}/rename/", {"name": "x"}).status_code == 404
    assert charlie_client.post(f"/mail/folders/{folder.pk}/delete/").status_code == 404
    assert Folder.objects.get(pk=folder.pk).name == "Private"


def test_it_refuses_moving_into_another_mailboxs_folder(alice, charlie, alice_client):
    foreign = Folder.objects.create(address=charlie.address, name="Theirs")
    entry = MailboxEntryFactory(address=alice.address)
    alice_client.post(f"/mail/a/{alice.address.pk}/bulk/",
                      {"entry": [entry.pk], "action": "move", "target": f"folder:{foreign.pk}"})
    entry.refresh_from_db()
    assert entry.folder == Box.INBOX


def test_it_searches_by_body_sender_recipient_and_subject(alice, alice_client):
    hit = MailboxEntryFactory(address=alice.address, body_text="Potassium level elevated",
                              subject="Labs", sender="lab@partner.example")
    MailboxEntryFactory(address=alice.address, body_text="Nothing to see", subject="Hello")
    url = f"/mail/a/{alice.address.pk}/search/"
    for query in ("potassium", "lab@partner.example", "Labs", "alice@clinic.example potassium"):
        found = [e.pk for e in alice_client.get(url, {"q": query}).context["entries"]]
        assert found == [hit.pk], query


def test_search_never_returns_another_mailboxs_entries(alice, charlie, alice_client):
    MailboxEntryFactory(address=charlie.address, body_text="potassium")
    response = alice_client.get(f"/mail/a/{alice.address.pk}/search/", {"q": "potassium"})
    assert response.context["entries"] == []


def test_an_empty_search_lists_nothing(alice, alice_client):
    MailboxEntryFactory(address=alice.address)
    response = alice_client.get(f"/mail/a/{alice.address.pk}/search/", {"q": "  "})
    assert response.context["entries"] == []


def test_search_on_postgresql_is_full_text_with_stemming_and_an_index(alice, alice_client):
    from django.db import connection

    from tests.support.services import missing
    from webmail.search import INDEX_NAME

    if connection.vendor != "postgresql":
        missing("PostgreSQL (DATABASE_URL) for full-text search")
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_indexes WHERE indexname = %s", [INDEX_NAME])
        assert cursor.fetchone() is not None
    hit = MailboxEntryFactory(address=alice.address, body_text="Marked elevation of troponin")
    found = alice_client.get(f"/mail/a/{alice.address.pk}/search/", {"q": "elevated troponins"})
    assert [e.pk for e in found.context["entries"]] == [hit.pk]


def test_the_periodic_webmail_tasks_are_registered_and_scheduled(db, settings):
    from hisp.celery import app

    app.loader.import_default_modules()
    assert {"webmail.purge_trash", "webmail.send_waiting_notices"} <= set(app.tasks)
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"webmail.purge_trash", "webmail.send_waiting_notices"} <= scheduled


def test_search_lists_newest_first_whichever_plan_is_chosen(alice, alice_client, monkeypatch):
    now = timezone.now()
    entries = [MailboxEntryFactory(address=alice.address, body_text="troponin result",
                                   received_at=now - timedelta(minutes=m)) for m in (5, 1, 3)]
    expected = [e.pk for e in sorted(entries, key=lambda e: e.received_at, reverse=True)]
    for threshold in (1, 10**9):  # "common word: walk the time index" and "rare: use GIN"
        monkeypatch.setattr("webmail.search.COMMON_MATCHES", threshold)
        found = alice_client.get(f"/mail/a/{alice.address.pk}/search/", {"q": "troponin"})
        assert [e.pk for e in found.context["entries"]] == expected


def test_a_read_only_delegate_cannot_rename_or_delete_folders(alice, bob):
    from hisp.models import AddressGrant
    from tests.webmail.personas import signed_in

    AddressGrant.objects.create(user=bob.user, address=alice.address, role=AddressGrant.Role.READ)
    folder = Folder.objects.create(address=alice.address, name="Referrals")
    client = signed_in(bob)
    assert client.post(f"/mail/folders/{folder.pk}/rename/", {"name": "x"}).status_code == 403
    assert client.post(f"/mail/folders/{folder.pk}/delete/").status_code == 403
    assert client.get(f"/mail/a/{alice.address.pk}/folders/{folder.pk}/").status_code == 200


def test_a_search_writes_one_audit_event_with_mailbox_query_and_result_count(alice, alice_client):
    from hisp.models import AuditEvent

    MailboxEntryFactory.create_batch(2, address=alice.address, body_text="Potassium level")
    MailboxEntryFactory(address=alice.address, body_text="Nothing to see")
    before = AuditEvent.objects.count()
    alice_client.get(f"/mail/a/{alice.address.pk}/search/", {"q": " potassium "})
    assert AuditEvent.objects.count() == before + 1
    event = AuditEvent.objects.get(action="mailbox.search")
    assert event.actor == alice.user
    assert (event.object_type, event.object_id) == ("hisp.address", str(alice.address.pk))
    assert event.detail["mailbox"] == alice.address.pk
    assert event.detail["address"] == "alice@clinic.example"
    assert event.detail["query"] == "potassium"
    assert event.detail["results"] == 2


def test_a_search_with_no_match_is_audited_with_zero_results(alice, alice_client):
    from hisp.models import AuditEvent

    alice_client.get(f"/mail/a/{alice.address.pk}/search/", {"q": "Jones"})
    event = AuditEvent.objects.get(action="mailbox.search")
    assert (event.detail["query"], event.detail["results"]) == ("Jones", 0)


def test_an_empty_search_writes_no_audit_event(alice, alice_client):
    from hisp.models import AuditEvent

    MailboxEntryFactory(address=alice.address)
    for query in ("", "   "):
        alice_client.get(f"/mail/a/{alice.address.pk}/search/", {"q": query})
    alice_client.get(f"/mail/a/{alice.address.pk}/search/")
    assert not AuditEvent.objects.filter(action="mailbox.search").exists()


def test_an_outsiders_search_of_another_mailbox_is_refused_before_it_is_run(alice, charlie_client):
    from hisp.models import AuditEvent

    assert charlie_client.get(f"/mail/a/{alice.address.pk}/search/", {"q": "x"}).status_code == 404
    assert not AuditEvent.objects.filter(action="mailbox.search").exists()
