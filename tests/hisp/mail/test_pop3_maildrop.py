"""What a POP3 client retrieves and changes: the INBOX in order, exact sizes, the verified inner
message with the final-delivery fields, dot-stuffing, audit, read flags, and Trash at QUIT."""

from __future__ import annotations

import smtplib
from datetime import UTC, datetime, timedelta
from email import message_from_bytes

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from hisp.models import AddressGrant, AuditEvent, MailboxEntry, Message
from tests.hisp.mail.conftest import HOSTED
from tests.hisp.mail.drive import drain
from tests.hisp.mail.pop3client import (  # noqa: F401 (pop3_fixture: the pop3 fixture)
    PASSWORD,
    Raw,
    client,
    deliver,
    logged_in,
    pop3_fixture,
)

Box = MailboxEntry.SystemFolder
TRACE = "Received: from mx.partner.example.net by hisp; Wed, 25 Nov 2026 13:00:00 +0000\r\n"


def _expected(content: bytes, *, sender: str = "doc@partner.example.net") -> bytes:
    """What final delivery writes, spelled out independently of hisp.pop3.render."""
    return (
        f"Return-Path: <{sender}>\r\n{TRACE}"
        f"Authentication-Results: {settings.HISP_HOSTNAME};\r\n"
        f"\tsmime=pass body.smime-identifier=doc@partner.example.net\r\n"
    ).encode() + content


def _three(alice):
    now = datetime.now(UTC)
    older = deliver(alice, b"Subject: first\r\n\r\nfirst body\r\n", at=now - timedelta(hours=2))
    newer = deliver(alice, b"Subject: third\r\n\r\nthird\r\n", at=now)
    middle = deliver(
        alice, b"Subject: second\r\n\r\nsecond\r\nbody\r\n", at=now - timedelta(hours=1)
    )
    deliver(alice, b"Subject: archived\r\n\r\nx\r\n", folder=Box.ARCHIVE)
    deliver(alice, b"Subject: binned\r\n\r\nx\r\n", folder=Box.TRASH)
    return older, middle, newer


def test_the_maildrop_is_the_inbox_oldest_first_with_exact_sizes(pop3, alice):
    older, middle, newer = _three(alice)
    sizes = [
        len(_expected(b"Subject: first\r\n\r\nfirst body\r\n")),
        len(_expected(b"Subject: second\r\n\r\nsecond\r\nbody\r\n")),
        len(_expected(b"Subject: third\r\n\r\nthird\r\n")),
    ]
    pop = logged_in(pop3, alice.address)
    assert pop.stat() == (3, sum(sizes))
    assert pop.list()[1] == [f"{n} {size}".encode() for n, size in enumerate(sizes, 1)]
    assert pop.list(2) == f"+OK 2 {sizes[1]}".encode()
    uids = [older.pk, middle.pk, newer.pk]
    assert pop.uidl()[1] == [f"{n} {uid}".encode() for n, uid in enumerate(uids, 1)]
    assert pop.uidl(3) == f"+OK 3 {newer.pk}".encode()
    for number, size in enumerate(sizes, 1):
        _, lines, octets = pop.retr(number)
        assert octets == size  # poplib counts the unstuffed lines with their CRLF
    _, lines, _ = pop.retr(2)
    assert b"\r\n".join(lines) + b"\r\n" == _expected(b"Subject: second\r\n\r\nsecond\r\nbody\r\n")
    pop.quit()


def test_the_maildrop_stays_fixed_for_the_session(pop3, alice):
    _three(alice)
    pop = logged_in(pop3, alice.address)
    count = pop.stat()[0]
    listed = pop.list()[1]
    deliver(alice, b"Subject: late\r\n\r\nlate\r\n")
    assert pop.stat()[0] == count == 3
    pop.quit()
    again = logged_in(pop3, alice.address)  # the sizes counted before are remembered
    assert again.stat()[0] == 4
    assert again.list()[1][:3] == listed
    assert int(again.list(4).split()[2]) == len(_expected(b"Subject: late\r\n\r\nlate\r\n"))
    again.quit()


def test_lines_starting_with_a_dot_are_stuffed_on_the_wire_and_sizes_count_them_once(pop3, alice):
    content = b"Subject: dots\r\n\r\n.hidden\r\n.\r\n..two\r\nend\r\n"
    deliver(alice, content)
    raw = Raw(pop3)
    raw.command(f"USER {alice.address}")
    raw.command(f"PASS {PASSWORD}")
    size = len(_expected(content))
    assert raw.command("LIST 1") == f"+OK 1 {size}\r\n".encode()
    assert raw.command("RETR 1").startswith(b"+OK")
    wire = raw.until_dot()
    assert wire.endswith(b"\r\n\r\n..hidden\r\n..\r\n...two\r\nend\r\n")
    assert len(wire) == size + 3  # one added dot per line that starts with one
    assert raw.command("TOP 1 2").startswith(b"+OK")
    assert raw.until_dot().endswith(b"Subject: dots\r\n\r\n..hidden\r\n..\r\n")
    raw.close()


def test_bare_line_ends_are_sent_as_crlf_and_counted_as_sent(pop3, alice):
    deliver(alice, b"Subject: lf\n\nline one\nline two\rlast")
    pop = logged_in(pop3, alice.address)
    _, lines, octets = pop.retr(1)
    assert lines[-4:] == [b"", b"line one", b"line two", b"last"]
    assert octets == pop.stat()[1] == sum(len(line) + 2 for line in lines)
    pop.quit()


def test_top_sends_the_header_the_blank_line_and_n_body_lines(pop3, alice):
    deliver(alice, b"Subject: t\r\nX-A: 1\r\n\r\nb1\r\nb2\r\nb3\r\n")
    pop = logged_in(pop3, alice.address)
    _, lines, _ = pop.top(1, 0)
    assert lines[-3:] == [b"Subject: t", b"X-A: 1", b""]
    assert lines[0].startswith(b"Return-Path:")
    assert pop.top(1, 2)[1][-2:] == [b"b1", b"b2"]
    assert pop.top(1, 99)[1][-3:] == [b"b1", b"b2", b"b3"]
    pop.quit()


def test_our_authentication_results_in_the_message_are_removed_and_others_kept(pop3, alice):
    ours = settings.HISP_HOSTNAME
    deliver(
        alice,
        (
            f"Authentication-Results: {ours.upper()}; smime=pass\r\n"
            f"\tbody.smime-identifier=ceo@{HOSTED}\r\n"
            f"Authentication-Results: (forged) {ours};\r\n none\r\n"
            f'Authentication-Results: "{ours}"; smime=pass\r\n'
            "Authentication-Results: mx.partner.example.net; dkim=pass\r\n"
            "Subject: claims\r\n\r\n"
            f"Authentication-Results: {ours}; smime=pass (in the body: left alone)\r\n"
        ).encode(),
    )
    pop = logged_in(pop3, alice.address)
    _, lines, _ = pop.retr(1)
    message = message_from_bytes(b"\r\n".join(lines))
    results = [" ".join(str(v).split()) for v in message.get_all("Authentication-Results")]
    assert results == [
        f"{ours}; smime=pass body.smime-identifier=doc@partner.example.net",
        "mx.partner.example.net; dkim=pass",
    ]
    assert f"ceo@{HOSTED}".encode() not in b"\r\n".join(lines)
    assert (
        lines[-1]
        == f"Authentication-Results: {ours}; smime=pass (in the body: left alone)".encode()
    )
    pop.quit()


def test_a_message_nobody_verified_says_none_and_the_null_sender_is_empty(pop3, alice):
    entry = deliver(alice, b"Subject: notice\r\n\r\nx\r\n", envelope_from="", trace="")
    Message.objects.filter(pk=entry.message_id).update(
        direction=Message.Direction.OUTBOUND,
        signer="",
        content=None,
        raw=b"Subject: notice\r\n\r\nfrom raw\r\n",
    )
    pop = logged_in(pop3, alice.address)
    _, lines, _ = pop.retr(1)
    assert lines[:3] == [
        b"Return-Path: <>",
        f"Authentication-Results: {settings.HISP_HOSTNAME}; none".encode(),
        b"Subject: notice",
    ]
    assert lines[-1] == b"from raw"  # an outbound message is read from what was submitted
    pop.quit()


# --- audit and read flags -------------------------------------------------------------------
def test_retr_and_top_are_audited_as_message_opens_and_retr_marks_read(pop3, alice):
    entry = deliver(alice, b"Subject: a\r\n\r\nx\r\n")
    pop = logged_in(pop3, alice.address)
    pop.top(1, 0)
    assert not MailboxEntry.objects.get(pk=entry.pk).read
    pop.retr(1)
    assert MailboxEntry.objects.get(pk=entry.pk).read
    pop.quit()
    events = list(AuditEvent.objects.filter(action="message.open").order_by("pk"))
    user = get_user_model().objects.get(username=alice.address)
    assert [e.detail["command"] for e in events] == ["TOP", "RETR"]
    for event in events:
        assert (event.actor_id, event.object_type, event.object_id) == (
            user.pk,
            "hisp.message",
            str(entry.message_id),
        )
        assert event.detail["entry"] == entry.pk and event.detail["mailbox"] == alice.pk
        assert event.detail["via"] == "pop3"
        assert str(event.client_address) == "127.0.0.1"


def test_a_read_only_delegate_reads_without_marking_read_and_may_not_delete(pop3, alice):
    entry = deliver(alice, b"Subject: shared\r\n\r\nx\r\n")
    bob = get_user_model().objects.create_user(username=f"bob@{HOSTED}", password="bob password")
    AddressGrant.objects.create(user=bob, address=alice, role=AddressGrant.Role.READ)
    pop = client(pop3)
    import base64

    token = base64.b64encode(f"{alice.address}\0{bob.username}\0bob password".encode()).decode()
    pop._shortcmd(f"AUTH PLAIN {token}")
    assert pop.retr(1)[1][-1] == b"x"
    with pytest.raises(Exception, match="Read-only"):
        pop.dele(1)
    pop.quit()
    stored = MailboxEntry.objects.get(pk=entry.pk)
    assert (stored.folder, stored.read) == (Box.INBOX, False)
    assert AuditEvent.objects.get(action="message.open").actor_id == bob.pk


def test_a_grant_revoked_during_the_session_stops_retrieval(pop3, alice):
    deliver(alice, b"Subject: a\r\n\r\nx\r\n")
    pop = logged_in(pop3, alice.address)
    AddressGrant.objects.filter(address=alice).delete()
    with pytest.raises(Exception, match="no longer available"):
        pop.retr(1)
    pop.close()
    assert not AuditEvent.objects.filter(action="message.open").exists()


# --- DELE, RSET, QUIT -----------------------------------------------------------------------
def test_dele_then_quit_moves_to_trash_and_keeps_the_message(pop3, alice):
    older, middle, newer = _three(alice)
    pop = logged_in(pop3, alice.address)
    pop.dele(1)
    pop.dele(3)
    assert pop.stat()[0] == 1
    with pytest.raises(Exception, match="No such message"):
        pop.retr(1)
    assert MailboxEntry.objects.get(pk=older.pk).folder == Box.INBOX  # nothing before QUIT
    assert pop.quit().startswith(b"+OK")
    for entry in (older, newer):
        stored = MailboxEntry.objects.get(pk=entry.pk)
        assert stored.folder == Box.TRASH and stored.trashed_at is not None
        assert Message.objects.filter(pk=entry.message_id).exists()
    assert MailboxEntry.objects.get(pk=middle.pk).folder == Box.INBOX
    moves = AuditEvent.objects.filter(action="message.move").order_by("pk")
    assert [(m.detail["entry"], m.detail["folder"], m.detail["via"]) for m in moves] == [
        (older.pk, "trash", "pop3"),
        (newer.pk, "trash", "pop3"),
    ]
    again = logged_in(pop3, alice.address)
    assert again.uidl()[1] == [f"1 {middle.pk}".encode()]
    again.quit()


def test_rset_unmarks_and_quit_then_changes_nothing(pop3, alice):
    _three(alice)
    pop = logged_in(pop3, alice.address)
    pop.dele(2)
    assert pop.rset().startswith(b"+OK 3 ")
    pop.quit()
    assert MailboxEntry.objects.filter(address=alice, folder=Box.INBOX).count() == 3
    assert not AuditEvent.objects.filter(action="message.move").exists()


def test_a_session_dropped_without_quit_changes_nothing(pop3, alice):
    _three(alice)
    raw = Raw(pop3)
    raw.command(f"USER {alice.address}")
    raw.command(f"PASS {PASSWORD}")
    assert raw.command("DELE 1").startswith(b"+OK")
    assert raw.command("DELE 2").startswith(b"+OK")
    raw.close()
    pop = logged_in(pop3, alice.address)  # the dropped session is over once this one answers
    assert pop.stat()[0] == 3
    pop.quit()
    assert MailboxEntry.objects.filter(address=alice, folder=Box.INBOX).count() == 3


def test_an_entry_moved_elsewhere_meanwhile_stays_where_the_user_put_it(pop3, alice):
    older, middle, _ = _three(alice)
    pop = logged_in(pop3, alice.address)
    pop.dele(1)
    pop.dele(2)
    MailboxEntry.objects.filter(pk=older.pk).update(folder=Box.ARCHIVE)
    with pytest.raises(Exception, match="1 deleted messages not removed"):
        pop.quit()
    assert MailboxEntry.objects.get(pk=older.pk).folder == Box.ARCHIVE
    assert MailboxEntry.objects.get(pk=middle.pk).folder == Box.TRASH


# --- a real message from a partner HISP -----------------------------------------------------
def test_retr_returns_the_verified_inner_message_of_real_direct_mail(world, backbone, pop3):
    partner = world.partner
    inner = partner.inner(
        to=world.alice.address,
        message_id="<pop1@partner.example.net>",
        body="Patient summary attached.\n.a line with a leading dot",
    )
    wire = partner.protect(inner, to=world.alice.address)
    with smtplib.SMTP("127.0.0.1", backbone.port, timeout=10) as smtp:
        smtp.ehlo("mx.partner.example.net")
        smtp.sendmail(partner.address, [world.alice.address], wire)
    drain()
    message = Message.objects.get(direction=Message.Direction.INBOUND)
    assert message.state == Message.State.DELIVERED and message.trace
    pop = logged_in(pop3, world.alice.address)
    count, size = pop.stat()
    _, lines, octets = pop.retr(1)
    pop.quit()
    retrieved = b"\r\n".join(lines) + b"\r\n"
    assert (count, size, octets) == (1, len(retrieved), len(retrieved))
    expected_head = (
        f"Return-Path: <{partner.address}>\r\n{message.trace}"
        f"Authentication-Results: {settings.HISP_HOSTNAME};\r\n"
        f"\tsmime=pass body.smime-identifier={partner.address}\r\n"
    ).encode()
    assert retrieved == expected_head + inner  # the inner message, byte for byte
    assert b"pkcs7" not in retrieved.lower()  # never the wire bytes
    assert lines[-1] == b".a line with a leading dot"


def test_a_grant_reduced_to_read_only_before_quit_moves_nothing(pop3, alice):
    entry = deliver(alice, b"Subject: a\r\n\r\nx\r\n")
    pop = logged_in(pop3, alice.address)
    pop.dele(1)
    AddressGrant.objects.filter(address=alice).update(role=AddressGrant.Role.READ)
    with pytest.raises(Exception, match="1 deleted messages not removed"):
        pop.quit()
    assert MailboxEntry.objects.get(pk=entry.pk).folder == Box.INBOX
    assert not AuditEvent.objects.filter(action="message.move").exists()
