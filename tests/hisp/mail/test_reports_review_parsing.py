"""Reports as partner HISPs write them, read the way RFC 3798 and RFC 3464 let them be written
(or the way broken generators write them without hiding a valid answer), and the MDN fields we
write for a message that has no Message-ID."""

from __future__ import annotations

import email
import email.policy

import pytest

from hisp import dsn, mdn
from hisp.reports import ReportError, field_blocks
from tests.hisp.mail.test_report_conformance import (
    ALICE,
    DOC,
    DSN_FIELDS,
    MDN_FIELDS,
    _mdn,
    _report,
)

ORIGINAL = "<o1@hospital.example.org>"
WITHOUT_ID = MDN_FIELDS.replace(f"Original-Message-ID: {ORIGINAL}\r\n", "")


def test_an_mdn_without_original_message_id_is_matched_by_its_in_reply_to():
    raw = _report("disposition-notification", WITHOUT_ID).replace(
        b"MIME-Version", f"In-Reply-To: {ORIGINAL} (Referral)\r\nMIME-Version".encode(), 1
    )
    assert mdn.parse(raw).original_message_id == ORIGINAL


def test_an_mdn_without_original_message_id_is_matched_by_its_returned_headers():
    """RFC 3798 section 3: the third part may return the original message or its headers."""
    third = f"--b1\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {ORIGINAL}\r\n\r\n"
    raw = _report("disposition-notification", WITHOUT_ID, third=third)
    assert mdn.parse(raw).original_message_id == ORIGINAL


def test_an_mdn_naming_no_message_at_all_is_still_malformed():
    with pytest.raises(ReportError, match="Original-Message-ID"):
        mdn.parse(_report("disposition-notification", WITHOUT_ID))


def test_a_disposition_with_a_comment_is_read():
    fields = MDN_FIELDS.replace(";processed", "; processed (by the HISP)")
    assert mdn.parse(_report("disposition-notification", fields)).disposition == "processed"


def test_an_unknown_disposition_is_named_shortly_in_the_error():
    fields = MDN_FIELDS.replace(";processed", ";" + "x" * 100_000)
    with pytest.raises(ReportError) as caught:
        mdn.parse(_report("disposition-notification", fields))
    assert len(str(caught.value)) < 100


@pytest.mark.parametrize(
    ("action", "status", "expected"),
    [
        ("failed", "garbage", "5.0.0"),
        ("failed", "4.4.7", "5.4.7"),
        ("failed", "5.1.1", "5.1.1"),
        ("failed", "5.1.1\ufffd", "5.0.0"),
        ("delayed", "5.4.7", "4.4.7"),
        ("failed", "5.1234.1", "5.0.0"),
    ],
)
def test_a_partners_status_is_made_a_valid_code_for_its_action(action, status, expected):
    """RFC 3463 section 2: class.subject.detail, the class agreeing with the Action. We quote it
    in the DSN that tells our sender, whose Status must be as valid as the rest of it."""
    assert dsn.status_code(status, action) == expected


def test_a_status_with_a_comment_is_read_as_its_code():
    fields = DSN_FIELDS.replace("Status: 5.1.1", "Status: 5.1.1 (no such mailbox)")
    [recipient] = dsn.parse(_report("delivery-status", fields)).recipients
    assert recipient.status == "5.1.1"


def test_an_incomplete_recipient_block_does_not_hide_a_complete_one():
    """A DSN about two recipients, one block without its Status: the failure for the other
    recipient used to be thrown away with the whole report."""
    fields = DSN_FIELDS + f"\r\nFinal-Recipient: rfc822; {ALICE}\r\nAction: failed\r\n"
    report = dsn.parse(_report("delivery-status", fields))
    assert [(r.final_recipient, r.status) for r in report.recipients] == [(DOC, "5.1.1")]


def test_a_dsn_without_the_empty_line_after_its_per_message_fields_is_read():
    fields = DSN_FIELDS.replace("partner.example.net\r\n\r\n", "partner.example.net\r\n")
    report = dsn.parse(_report("delivery-status", fields))
    assert report.reporting_mta == "partner.example.net"
    assert [(r.final_recipient, r.action) for r in report.recipients] == [(DOC, "failed")]


def test_a_dsn_of_recipient_blocks_only_is_still_malformed():
    fields = DSN_FIELDS.split("\r\n\r\n", 1)[1]
    with pytest.raises(ReportError, match="per-message"):
        dsn.parse(_report("delivery-status", fields))


def test_an_mdn_about_a_message_without_message_id_has_no_empty_original_message_id():
    """RFC 3798 3.2.5: the field quotes the original's Message-ID; an empty one is no msg-id
    (and our own parser, like others, refuses it)."""
    raw = _mdn(original_message_id="")
    names = [
        name.lower() for block in field_blocks(raw, "disposition-notification") for name, _ in block
    ]
    assert "original-message-id" not in names
    assert "In-Reply-To" not in email.message_from_bytes(raw, policy=email.policy.default)


def test_an_mdn_is_a_reply_to_the_original():
    message = email.message_from_bytes(_mdn(), policy=email.policy.default)
    assert message["In-Reply-To"] == "<o1@partner.example.net>"


def test_an_mdn_without_original_message_id_and_a_header_block_beyond_reading_is_malformed():
    """The In-Reply-To fallback reads the header block with the agent's MIME parser, which
    refuses some blocks the email package accepts: still only a ReportError."""
    raw = _report("disposition-notification", WITHOUT_ID).replace(
        b"MIME-Version", b"X-A: 1\r\n" * 10_001 + b"MIME-Version", 1
    )
    with pytest.raises(ReportError, match="Original-Message-ID"):
        mdn.parse(raw)


def test_a_dsn_of_a_hundred_thousand_blocks_is_refused_before_it_is_parsed():
    """Each block became a Message object: 226 MB of memory for a 6 MB report."""
    fields = DSN_FIELDS + "\r\nX: y\r\n" * 100_000
    with pytest.raises(ReportError, match="too many blocks"):
        dsn.parse(_report("delivery-status", fields))


def test_a_dsn_about_a_few_hundred_recipients_is_still_read():
    block = DSN_FIELDS.split("\r\n\r\n", 1)[1]
    report = dsn.parse(_report("delivery-status", "\r\n".join([DSN_FIELDS] + [block] * 400)))
    assert len(report.recipients) == 401
