"""The Received trace field (RFC 5321 section 4.4): each listener stamps what it accepts with
who sent it, from where, over which TLS and when. Backbone mail keeps its bytes as received and
the stamp beside them; a submitted message carries the stamp inside, signed and encrypted, so
the client's address reaches only the recipients (section 7.6)."""

from __future__ import annotations

import smtplib
from datetime import UTC, datetime
from email import message_from_bytes
from email.utils import parsedate_to_datetime

import pytest
from django.conf import settings as django_settings
from django.urls import reverse

from hisp.models import Message
from hisp.services import compose
from hisp.smtp import trace
from tests.hisp.mail.drive import drain
from tests.hisp.mail.partner import PARTNER
from tests.hisp.mail.test_submission import PASSWORD, _tls

AT = datetime(2026, 11, 25, 13, 5, 9, tzinfo=UTC)
MESSAGE = (
    b"From: doc@partner.example.net\r\nTo: bob@hospital.example.org\r\n"
    b"Subject: hello\r\nMessage-ID: <t1@partner.example.net>\r\n\r\nbody\r\n"
)


def _stamp(**given) -> str:
    fields = {
        "helo": "mx.partner.example.net", "address": "203.0.113.5", "by": "hisp.example.org",
        "esmtp": True, "tls": None, "authenticated": False,
        "recipients": ["bob@hospital.example.org"], "at": AT,
    }
    return trace.stamp(**{**fields, **given})


def _field(stamp: str) -> str:
    """The stamp as a mail reader sees it: one Received field, unfolded."""
    parsed = message_from_bytes(stamp.encode("ascii") + b"\r\n")
    [value] = parsed.get_all("Received")
    return " ".join(str(value).split())


def test_a_stamp_names_the_client_us_the_protocol_the_one_recipient_and_the_time():
    stamp = _stamp(tls=trace.Tls("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256))
    assert stamp.endswith("\r\n") and "\r\n\t" in stamp
    assert all(len(line) <= 78 for line in stamp.split("\r\n"))
    assert _field(stamp) == (
        "from mx.partner.example.net ([203.0.113.5]) (using TLSv1.3 with cipher "
        "TLS_AES_256_GCM_SHA384 (256 bits)) by hisp.example.org with ESMTPS "
        "for <bob@hospital.example.org>; Wed, 25 Nov 2026 13:05:09 +0000"
    )
    assert parsedate_to_datetime(_field(stamp).rpartition(";")[2].strip()) == AT


@pytest.mark.parametrize(
    ("given", "protocol"),
    [
        ({"esmtp": False}, "with SMTP"),  # HELO: no extensions, so no STARTTLS either
        ({}, "with ESMTP"),
        ({"tls": trace.Tls("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384", 256)}, "with ESMTPS"),
        (
            {"tls": trace.Tls("TLSv1.3", "TLS_AES_128_GCM_SHA256", 128), "authenticated": True},
            "with ESMTPSA",
        ),
    ],
)
def test_the_protocol_is_named_as_rfc_3848_registers_it(given, protocol):
    assert f" by hisp.example.org {protocol} for <" in _field(_stamp(**given))


def test_several_recipients_are_not_named_so_none_learns_of_the_others():
    assert " for " not in _field(_stamp(recipients=["a@hospital.example.org", "b@x.example"]))


@pytest.mark.parametrize(
    ("helo", "address", "start"),
    [
        ("[203.0.113.5]", "203.0.113.5", "from [203.0.113.5] ([203.0.113.5])"),
        ("[IPv6:2001:db8::1]", "2001:db8::1", "from [IPv6:2001:db8::1] ([IPv6:2001:db8::1])"),
        ("mx.partner.example.net", "::ffff:203.0.113.5", "from mx.partner.example.net ([203.0.113.5])"),
        # What is not a domain or an address literal is the client's word only, and stays out.
        ("evil (by trusted.example) with", "203.0.113.5", "from [203.0.113.5] ([203.0.113.5]) by"),
        ("-leading-hyphen.example", "203.0.113.5", "from [203.0.113.5] ([203.0.113.5]) by"),
        ("x" * 300, "203.0.113.5", "from [203.0.113.5] ([203.0.113.5]) by"),
        (None, None, "from unknown by"),
    ],
)
def test_the_client_is_named_by_its_ehlo_name_only_when_that_is_a_name(helo, address, start):
    assert _field(_stamp(helo=helo, address=address)).startswith(start)


def test_a_recipient_that_could_break_out_of_the_clause_is_left_out():
    assert " for " not in _field(_stamp(recipients=["a>b@x.example"]))
    assert " for " not in _field(_stamp(recipients=["a b@x.example"]))


def test_the_largest_stamp_fits_the_room_left_for_it():
    longest = ".".join(["a" * 63] * 3) + "." + "b" * 61  # 253 characters, a valid domain
    stamp = _stamp(
        helo=longest, address="2001:db8:1234:5678:9abc:def0:1234:5678", by=longest,
        tls=trace.Tls("TLSv1.2", "X" * 64, 256), recipients=["l" * 64 + "@" + longest],
    )
    assert longest in stamp and "for <" in stamp
    assert len(stamp.encode("ascii")) <= trace.MAX_BYTES
    assert all(len(line) <= 998 for line in stamp.split("\r\n"))  # RFC 5322 section 2.1.1


# --- the listeners, over real sockets --------------------------------------------------------


def test_the_backbone_stores_its_stamp_beside_the_bytes_as_received(backbone, bob):
    with smtplib.SMTP(backbone.hostname, backbone.port, timeout=10) as client:
        client.ehlo("mx.partner.example.net")
        client.sendmail("doc@partner.example.net", [bob.address], MESSAGE)
    stored = Message.objects.get()
    assert bytes(stored.raw) == MESSAGE
    received = _field(stored.trace)
    assert received.startswith(
        f"from mx.partner.example.net ([127.0.0.1]) by {django_settings.HISP_HOSTNAME} "
        f"with ESMTP for <{bob.address}>; "
    )
    stamped = parsedate_to_datetime(received.rpartition(";")[2].strip())
    assert abs((stamped - stored.created_at).total_seconds()) < 5


def test_a_backbone_session_over_tls_records_the_version_and_cipher(backbone, bob, alice):
    with smtplib.SMTP(backbone.hostname, backbone.port, timeout=10) as client:
        client.ehlo("mx.partner.example.net")
        client.starttls(context=_tls())
        client.ehlo("mx.partner.example.net")
        client.sendmail("doc@partner.example.net", [bob.address, alice.address], MESSAGE)
    received = _field(Message.objects.get().trace)
    version = received.split("(using ")[1].split(" ")[0]
    assert version in ("TLSv1.2", "TLSv1.3"), received
    assert " with cipher " in received and " with ESMTPS;" in received  # two recipients: no for


def test_helo_is_recorded_as_plain_smtp(backbone, bob):
    with smtplib.SMTP(backbone.hostname, backbone.port, timeout=10) as client:
        client.helo("old.partner.example.net")
        client.sendmail("doc@partner.example.net", [bob.address], MESSAGE)
    assert " with SMTP for " in _field(Message.objects.get().trace)


def test_submission_stamps_authenticated_tls_and_keeps_the_message_as_submitted(submission, alice):
    body = (
        f"From: Alice <{alice.address}>\r\nTo: carol@{PARTNER}\r\n"
        "Message-ID: <s1@hospital.example.org>\r\nDate: Wed, 25 Nov 2026 13:00:00 +0000\r\n"
        "Subject: results\r\n\r\nHello Carol\r\n"
    ).encode()
    with smtplib.SMTP(submission.hostname, submission.port, timeout=10) as client:
        client.ehlo("laptop.clinic.example")
        client.starttls(context=_tls())
        client.ehlo("laptop.clinic.example")
        client.login(alice.address, PASSWORD)
        client.sendmail(alice.address, [f"carol@{PARTNER}"], body)
    stored = Message.objects.get()
    assert bytes(stored.raw) == body
    assert _field(stored.trace).startswith(
        "from laptop.clinic.example ([127.0.0.1]) (using TLSv1."
    )
    assert f" with ESMTPSA for <carol@{PARTNER}>; " in _field(stored.trace)


def test_a_submitted_message_carries_its_stamp_inside_the_encryption_only(world):
    stamp = _stamp(
        helo="laptop.clinic.example", address="198.51.100.77", by=django_settings.HISP_HOSTNAME,
        tls=trace.Tls("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256), authenticated=True,
        recipients=[world.partner.address],
    )
    raw = compose.build_message(
        sender=world.alice.address, to=[world.partner.address], subject="Referral",
        body_text="Please see the patient.",
    )
    message = compose.submit(
        address=world.alice.address, raw=raw, actor="test", peer="127.0.0.1:5000", trace=stamp
    )
    drain()
    [received] = world.sink.handler.messages
    assert b"198.51.100.77" not in received.data  # not in the clear headers
    inner = world.partner.open(received.data, our_domain=world.alice.address.split("@")[1])
    # openssl verified our signature over it: the stamp is the signed message's first field.
    assert inner == stamp.encode("ascii") + bytes(message.raw)


def test_the_console_shows_the_stamp_on_the_message_page(world, django_user_model):
    from tests.adminconsole.sessions import verified_client

    stamp = _stamp(tls=trace.Tls("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256))
    received = Message.objects.create(
        direction=Message.Direction.INBOUND, state=Message.State.RECEIVED,
        raw=MESSAGE, trace=stamp, peer="203.0.113.5:40000",
    )
    sam = django_user_model.objects.create_user(username="sam", password="x" * 20, is_staff=True)
    from adminconsole.roles import Role, role_groups

    sam.groups.set(role_groups(tuple(Role)))
    page = verified_client(sam).get(
        reverse("adminconsole:message-detail", kwargs={"pk": received.pk})
    ).content.decode()
    assert (
        '<dt>Received</dt><dd><code class="trace">from mx.partner.example.net ([203.0.113.5])<br>'
        "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256 bits))<br>"
    ) in page


def test_a_row_written_without_the_column_gets_an_empty_stamp(db):
    """A listener of the release before, still running during an upgrade, inserts no trace."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO hisp_message (direction, kind, state, reason, message_id, envelope_from,"
            " envelope_to, header_from, header_to, subject, raw, signer, signer_organisation,"
            " signer_fingerprint, peer, attempts, abandoned, created_at, updated_at)"
            " VALUES ('in', 'regular', 'received', '', '', '', '[]', '', '[]', '', %s, '', '',"
            " '', 'old', 0, 0, %s, %s)",
            [MESSAGE, AT, AT],
        )
    assert Message.objects.get(peer="old").trace == ""


def test_a_host_name_our_stamps_could_not_carry_stops_the_start(tmp_path):
    from tests.hisp.mail.test_smtp_review3_limits import start_outcomes

    bad = ["hôpital.example", "mail example.org", "a..b.example", "-mail.example", ""]
    cases = [f"HISP_HOSTNAME={value}" for value in bad] + ["HISP_HOSTNAME=mail.example.org."]
    *refused, accepted = start_outcomes(tmp_path, cases, unset="HISP_HOSTNAME")
    for value, outcome in zip(bad, refused, strict=True):
        assert outcome.startswith("ImproperlyConfigured: HISP_HOSTNAME must be a host name"), value
    assert accepted == "started"


def test_a_dsn_returns_the_header_with_its_received_stamp(world):
    stamp = _stamp(
        helo="laptop.clinic.example", address="198.51.100.77", by=django_settings.HISP_HOSTNAME,
        authenticated=True, recipients=["nocert@elsewhere.example.com"],
    )
    raw = compose.build_message(
        sender=world.alice.address, to=["nocert@elsewhere.example.com"], subject="Referral",
        body_text="Please see the patient.",
    )
    compose.submit(address=world.alice.address, raw=raw, actor="test", peer="x", trace=stamp)
    drain()
    [notice] = Message.objects.filter(kind=Message.Kind.DSN)
    returned = bytes(notice.raw).split(b"Content-Type: text/rfc822-headers\r\n\r\n", 1)[1]
    assert returned.startswith(stamp.encode("ascii") + b"From: ")
