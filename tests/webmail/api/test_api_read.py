"""Reading and filing mail through the API: the webmail's grants decide who sees what, every
way to a message's content is audited with via=api, and a GET never marks anything read."""

from __future__ import annotations

from datetime import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hisp.models import Address, AddressGrant, AuditEvent, Folder, MailboxEntry
from tests.factories import AddressGrantFactory, MailboxEntryFactory, MessageFactory
from tests.webmail.api.conftest import api_client
from tests.webmail.personas import Persona

pytestmark = pytest.mark.django_db
Box = MailboxEntry.SystemFolder


def _list(persona: Persona) -> str:
    return f"/api/v1/mailboxes/{persona.address.pk}/messages"
PDF = b"%PDF-1.4 lab results" * 50


def _entry(persona, **fields):
    message_fields = {k: fields.pop(k) for k in ("text", "attachments", "subject", "signer")
                      if k in fields}
    return MailboxEntryFactory(address=persona.address, message=MessageFactory(**message_fields),
                               **fields)


def _code(response) -> str:
    assert response["Content-Type"] == "application/json", response.content
    return response.json()["error"]["code"]


def _ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [m["id"] for m in response.json()["messages"]]


def _delegate(persona, owner, role=AddressGrant.Role.READ):
    AddressGrantFactory(user=persona.user, address=owner.address, role=role)
    return api_client(persona)


def _events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("pk"))


# --- The list ----------------------------------------------------------------------------------
def test_it_lists_the_inbox_oldest_first_from_the_row_alone(alice, alice_api):
    first = _entry(alice, subject="Referral", has_attachments=True)
    second = _entry(alice, subject="Lab results")
    _entry(alice, folder=Box.ARCHIVE)
    with CaptureQueriesContext(connection) as queries:
        response = alice_api.get(_list(alice))
    assert _ids(response) == [first.pk, second.pk]
    read_bytes = [q["sql"] for q in queries
                  if '"hisp_message"."raw"' in q["sql"] or '"hisp_message"."content"' in q["sql"]]
    assert not read_bytes
    item = response.json()["messages"][0]
    assert item == {
        "id": first.pk, "message_id": first.message.message_id, "from": "dr.who@partner.example",
        "recipients": ["alice@clinic.example"], "subject": "Referral",
        "received_at": item["received_at"], "read": False, "flagged": False, "folder": "inbox",
        "has_attachments": True,
    }
    assert datetime.fromisoformat(item["received_at"]) == first.received_at
    assert response.json()["next"] is None
    # Listing is not opening: nothing audited, nothing marked read.
    assert not AuditEvent.objects.filter(action="message.open").exists()


def test_the_mailbox_is_named_by_the_id_the_mailbox_list_gives(alice, alice_api):
    entry = _entry(alice)
    [mailbox] = alice_api.get("/api/v1/mailboxes").json()["mailboxes"]
    assert mailbox["id"] == alice.address.pk
    assert _ids(alice_api.get(f"/api/v1/mailboxes/{mailbox['id']}/messages")) == [entry.pk]
    # An address in the path would put it in every access log line: it is not a route.
    assert alice_api.get(f"/api/v1/mailboxes/{alice.address.address}/messages").status_code == 404


def test_it_pages_with_after_until_next_is_null(alice, alice_api):
    made = [_entry(alice).pk for _ in range(5)]
    seen, url, pages = [], f"{_list(alice)}?limit=2&unread=false", 0
    for entry_id in made:
        MailboxEntry.objects.filter(pk=entry_id).update(read=True)
    while url and pages < 4:  # bounded: a cursor that is ignored would page for ever
        response = alice_api.get(url)
        seen += _ids(response)
        url = response.json()["next"]
        pages += 1
        if url:
            assert url.startswith("http://testserver/api/v1/mailboxes/")
            assert "limit=2" in url and "unread=false" in url
    assert pages == 3 and seen == made
    # A program polling keeps the last id it saw: only what arrived since comes back.
    newer = _entry(alice, read=True)
    assert _ids(alice_api.get(f"{_list(alice)}?after={made[-1]}")) == [newer.pk]
    assert _ids(alice_api.get(f"{_list(alice)}?after={'9' * 18}")) == []


def test_it_filters_by_system_folder_user_folder_and_unread(alice, alice_api):
    unread = _entry(alice)
    read = _entry(alice, read=True)
    archived = _entry(alice, folder=Box.ARCHIVE)
    projects = Folder.objects.create(address=alice.address, name="Referrals")
    filed = _entry(alice, folder=Box.USER, user_folder=projects)
    assert _ids(alice_api.get(_list(alice))) == [unread.pk, read.pk]
    assert _ids(alice_api.get(f"{_list(alice)}?unread=true")) == [unread.pk]
    assert _ids(alice_api.get(f"{_list(alice)}?unread=false")) == [read.pk]
    assert _ids(alice_api.get(f"{_list(alice)}?folder=archive")) == [archived.pk]
    response = alice_api.get(f"{_list(alice)}?folder={projects.pk}")
    assert _ids(response) == [filed.pk]
    assert response.json()["messages"][0]["folder"] == str(projects.pk)
    assert _ids(alice_api.get(f"{_list(alice)}?folder=trash")) == []


@pytest.mark.parametrize("query", [
    "limit=0", "limit=201", "limit=ten", "limit=-1", "limit=", "limit=\u0663",
    "after=-5", "after=x", "after=99999999999999999999",
    "unread=yes", "unread=1", "folder=spam", "folder=user", "folder=", "folder=9999",
    "sort=newest",
])
def test_bad_query_values_are_400(alice, alice_api, query):
    response = alice_api.get(f"{_list(alice)}?{query}")
    assert response.status_code == 400 and _code(response) == "bad-field"
    assert query.split("=")[0] in response.json()["error"]["message"]


def test_another_mailboxs_folder_is_not_a_folder_of_this_one(alice, bob, alice_api):
    # alice may open bob's mailbox too: his folder is still not one of hers.
    AddressGrantFactory(user=alice.user, address=bob.address, role=AddressGrant.Role.READ)
    theirs = Folder.objects.create(address=bob.address, name="Bob's")
    MailboxEntryFactory(address=bob.address, folder=Box.USER, user_folder=theirs)
    response = alice_api.get(f"{_list(alice)}?folder={theirs.pk}")
    assert response.status_code == 400 and _code(response) == "bad-field"
    bobs = f"{_list(bob)}?folder={theirs.pk}"
    assert len(_ids(alice_api.get(bobs))) == 1


def test_a_delegate_lists_the_mailbox_and_an_outsider_gets_404(alice, bob, charlie, charlie_api):
    entry = _entry(alice)
    assert _ids(_delegate(bob, alice).get(_list(alice))) == [entry.pk]
    for url in (_list(alice), f"/api/v1/mailboxes/{'9' * 25}/messages"):
        response = charlie_api.get(url)
        assert response.status_code == 404 and _code(response) == "not-found"


# --- One message -------------------------------------------------------------------------------
def test_it_shows_one_message_audited_with_via_api_and_leaves_it_unread(alice, alice_api):
    entry = _entry(alice, text="Potassium 4.1 mmol/L", subject="Lab results",
                   attachments=[("../lab results.pdf", "application/pdf", PDF)])
    response = alice_api.get(f"/api/v1/entries/{entry.pk}")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == entry.pk and body["subject"] == "Lab results"
    assert body["text"].strip() == "Potassium 4.1 mmol/L"
    assert body["signer"] == "dr.who@partner.example"
    assert body["to"] == "alice@clinic.example" and body["cc"] == ""
    [attachment] = body["attachments"]
    assert attachment["filename"] == "lab results.pdf"
    assert attachment["content_type"] == "application/pdf" and attachment["size"] == len(PDF)
    assert attachment["url"] == (
        f"http://testserver/api/v1/entries/{entry.pk}/attachments/{attachment['index']}")
    [event] = _events("message.open")
    assert event.actor == alice.user and event.object_id == str(entry.message_id)
    assert event.detail == {"entry": entry.pk, "mailbox": alice.address.pk, "via": "api"}
    assert "Potassium" not in str(event.detail) and "Lab" not in str(event.detail)
    entry.refresh_from_db()
    assert not entry.read


def test_an_unverified_message_has_no_signer(alice, alice_api):
    entry = _entry(alice, signer="")
    assert alice_api.get(f"/api/v1/entries/{entry.pk}").json()["signer"] is None


def test_a_read_only_delegate_reads_but_cannot_change(alice, bob):
    entry = _entry(alice)
    bob_api = _delegate(bob, alice)
    assert bob_api.get(f"/api/v1/entries/{entry.pk}").status_code == 200
    assert bob_api.get(f"/api/v1/entries/{entry.pk}/rfc822").status_code == 200
    for change in ({"read": True}, {"flagged": True}, {"folder": "archive"}):
        response = bob_api.patch(f"/api/v1/entries/{entry.pk}", change,
                                 content_type="application/json")
        assert response.status_code == 403 and _code(response) == "forbidden"
    entry.refresh_from_db()
    assert (entry.read, entry.flagged, entry.folder) == (False, False, Box.INBOX)


def test_a_read_and_send_delegate_may_file(alice, bob):
    entry = _entry(alice)
    bob_api = _delegate(bob, alice, role=AddressGrant.Role.READ_SEND)
    response = bob_api.patch(f"/api/v1/entries/{entry.pk}", {"flagged": True},
                             content_type="application/json")
    assert response.status_code == 200 and response.json()["flagged"] is True


def _urls(entry) -> list[str]:
    return [f"/api/v1/entries/{entry.pk}", f"/api/v1/entries/{entry.pk}/rfc822",
            f"/api/v1/entries/{entry.pk}/attachments/1"]


def test_an_outsider_gets_404_everywhere_and_nothing_is_audited(alice, charlie_api):
    entry = _entry(alice, attachments=[("a.pdf", "application/pdf", PDF)])
    for url in _urls(entry):
        response = charlie_api.get(url)
        assert response.status_code == 404 and _code(response) == "not-found", url
    response = charlie_api.patch(f"/api/v1/entries/{entry.pk}", {"read": True},
                                 content_type="application/json")
    assert response.status_code == 404
    assert not AuditEvent.objects.filter(
        action__in=["message.open", "attachment.download", "message.mark-read"]).exists()
    entry.refresh_from_db()
    assert not entry.read


def test_a_suspended_addresss_mailbox_is_404_to_owner_and_delegate(alice, bob, alice_api):
    entry = _entry(alice, attachments=[("a.pdf", "application/pdf", PDF)])
    bob_api = _delegate(bob, alice)
    Address.objects.filter(pk=alice.address.pk).update(status=Address.Status.SUSPENDED)
    for client in (alice_api, bob_api):
        for url in [_list(alice), *_urls(entry)]:
            assert client.get(url).status_code == 404, url
        response = client.patch(f"/api/v1/entries/{entry.pk}", {"read": True},
                                content_type="application/json")
        assert response.status_code == 404


# --- The bytes ---------------------------------------------------------------------------------
def test_rfc822_is_what_pop3_gives_with_authentication_results(alice, alice_api, settings):
    settings.HISP_HOSTNAME = "hisp.clinic.example"
    entry = _entry(alice, text="Potassium 4.1 mmol/L")
    response = alice_api.get(f"/api/v1/entries/{entry.pk}/rfc822")
    assert response.status_code == 200
    assert response["Content-Type"] == "message/rfc822"
    assert response["Content-Disposition"] == f'attachment; filename="message-{entry.pk}.eml"'
    data = response.content
    assert data.startswith(b"Return-Path: <dr.who@partner.example>\r\n")
    assert (b"Authentication-Results: hisp.clinic.example;\r\n"
            b"\tsmime=pass body.smime-identifier=dr.who@partner.example\r\n") in data
    assert b"Potassium 4.1 mmol/L" in data
    assert b"(the encrypted wire message)" not in data
    [event] = _events("message.open")
    assert event.detail["via"] == "api" and event.detail["entry"] == entry.pk
    entry.refresh_from_db()
    assert not entry.read


def test_an_attachment_downloads_as_the_webmail_serves_it_and_is_audited(alice, alice_api):
    entry = _entry(alice, attachments=[("lab results.pdf", "application/pdf", PDF),
                                       ("page.html", "text/html", b"<script>alert(1)</script>")])
    pdf, html = alice_api.get(f"/api/v1/entries/{entry.pk}").json()["attachments"]
    response = alice_api.get(pdf["url"])
    assert response.status_code == 200 and response.content == PDF
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"].startswith("attachment;")
    assert "lab results.pdf" in response["Content-Disposition"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in response["Cache-Control"]
    active = alice_api.get(html["url"])
    assert active["Content-Type"] == "application/octet-stream"
    events = _events("attachment.download")
    assert [e.detail for e in events] == [{"part": pdf["index"], "via": "api"},
                                          {"part": html["index"], "via": "api"}]
    assert all(e.actor == alice.user for e in events)


def test_an_unknown_attachment_index_is_404(alice, alice_api):
    entry = _entry(alice)
    response = alice_api.get(f"/api/v1/entries/{entry.pk}/attachments/7")
    assert response.status_code == 404 and _code(response) == "not-found"
    assert not _events("attachment.download")


# --- Filing ------------------------------------------------------------------------------------
def _patch(client, entry, body, content_type="application/json"):
    return client.patch(f"/api/v1/entries/{entry.pk}", body, content_type=content_type)


def test_patch_marks_read_and_flags_through_the_webmails_services(alice, alice_api):
    entry = _entry(alice)
    response = _patch(alice_api, entry, {"read": True, "flagged": True})
    assert response.status_code == 200
    body = response.json()
    assert body["read"] is True and body["flagged"] is True and body["id"] == entry.pk
    assert "text" not in body  # the row only: answering a PATCH is not an open
    entry.refresh_from_db()
    assert entry.read and entry.flagged
    assert [e.action for e in AuditEvent.objects.order_by("pk")] == [
        "message.mark-read", "message.flag"]
    assert _patch(alice_api, entry, {"read": False}).json()["read"] is False
    assert _events("message.mark-unread")
    assert not _events("message.open")


def test_patch_moves_to_a_system_folder_and_to_a_user_folder(alice, alice_api):
    entry = _entry(alice)
    response = _patch(alice_api, entry, {"folder": "archive"})
    assert response.status_code == 200 and response.json()["folder"] == "archive"
    folder = Folder.objects.create(address=alice.address, name="Referrals")
    response = _patch(alice_api, entry, {"folder": folder.pk})
    assert response.json()["folder"] == str(folder.pk)
    entry.refresh_from_db()
    assert (entry.folder, entry.user_folder_id) == (Box.USER, folder.pk)
    assert _patch(alice_api, entry, {"folder": "trash"}).status_code == 200
    entry.refresh_from_db()
    assert entry.folder == Box.TRASH and entry.trashed_at is not None
    assert [e.detail["folder"] for e in _events("message.move")] == ["archive", "user", "trash"]


@pytest.mark.parametrize("body", [
    {}, {"starred": True}, {"read": "yes"}, {"read": 1}, {"flagged": None},
    {"folder": "spam"}, {"folder": "drafts"}, {"folder": True}, {"folder": ["inbox"]},
    {"folder": 999999}, {"folder": 10**30}, {"folder": -1}, {"folder": "99999999999999999999"},
    {"read": True, "folder": "nowhere"},
])
def test_bad_patch_bodies_are_400_and_change_nothing(alice, alice_api, body):
    entry = _entry(alice)
    response = _patch(alice_api, entry, body)
    assert response.status_code == 400 and _code(response) == "bad-field"
    entry.refresh_from_db()
    assert (entry.read, entry.flagged, entry.folder) == (False, False, Box.INBOX)
    assert not AuditEvent.objects.exists()


def test_a_folder_of_another_mailbox_is_refused(alice, bob, alice_api):
    AddressGrantFactory(user=alice.user, address=bob.address, role=AddressGrant.Role.READ_SEND)
    entry = _entry(alice)
    theirs = Folder.objects.create(address=bob.address, name="Bob's")
    response = _patch(alice_api, entry, {"folder": theirs.pk})
    assert response.status_code == 400 and _code(response) == "bad-field"


def test_patch_bodies_that_are_not_a_json_object(alice, alice_api):
    entry = _entry(alice)
    form = _patch(alice_api, entry, "read=true", content_type="application/x-www-form-urlencoded")
    assert form.status_code == 415 and _code(form) == "unsupported-media-type"
    assert _code(_patch(alice_api, entry, "{not json")) == "bad-json"
    assert _code(_patch(alice_api, entry, "[true]")) == "bad-json"
    assert _patch(alice_api, entry, "{not json").status_code == 400


def test_the_reading_routes_take_only_their_methods(alice, alice_api):
    entry = _entry(alice)
    assert alice_api.post(_list(alice), {}, content_type="application/json").status_code == 405
    assert alice_api.delete(f"/api/v1/entries/{entry.pk}").status_code == 405
    assert _patch(alice_api, entry, {"read": True}).status_code == 200
    response = alice_api.put(f"/api/v1/entries/{entry.pk}/rfc822", {},
                             content_type="application/json")
    assert response.status_code == 405 and response["Allow"] == "GET"


def test_an_entry_id_beyond_any_row_is_404(alice, alice_api):
    huge = "9" * 25
    for url in (f"/api/v1/entries/{huge}", f"/api/v1/entries/{huge}/rfc822",
                f"/api/v1/entries/{huge}/attachments/{huge}"):
        response = alice_api.get(url)
        assert response.status_code == 404 and _code(response) == "not-found", url
