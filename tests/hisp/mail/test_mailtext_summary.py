"""mailtext.summarise reads single-part text mail from its header block alone; whatever path it
takes, the summary must be what a full MIME parse gives."""

from __future__ import annotations

import pytest

from hisp import mailtext

HEAD = (
    b"From: \"Dr. Sender\" <sender@partner.example>\r\nTo: a@hisp.example, B <b@hisp.example>\r\n"
    b"Cc: c@hisp.example\r\nSubject: =?utf-8?q?R=C3=A9f=C3=A9rence?= 1\r\n"
    b"Message-ID: <m1@partner.example>\r\nMIME-Version: 1.0\r\n"
)

ASCII_HEAD = (
    b"From: Dr Sender <sender@partner.example>\r\nTo: a@hisp.example,  b@hisp.example\r\n"
    b"Cc: c@hisp.example\r\nSubject:  Referral   for\r\n  review \r\n"
    b"Message-ID: <m2@partner.example>\r\nMIME-Version: 1.0\r\n"
)

CASES = {
    "no-content-type": HEAD + b"\r\nplain body\r\nsecond line\r\n",
    "plain-utf8-qp": HEAD + b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9 au lait\r\n",
    "plain-base64": HEAD + b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nSMOpbGxvIHdvcmxkCg==\r\n",
    "plain-8bit-latin1": HEAD + b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\nna\xefve\r\n",
    "unknown-charset": HEAD + b"Content-Type: text/plain; charset=x-nonsense\r\n\r\nbody\r\n",
    "html": HEAD + b"Content-Type: text/html\r\n\r\n<p>Hello <b>there</b></p>\r\n",
    "text-csv": HEAD + b"Content-Type: text/csv\r\n\r\na,b\r\n",
    "attachment-disposition": HEAD + b"Content-Type: text/plain\r\n"
    b"Content-Disposition: attachment; filename=x.txt\r\n\r\nfile\r\n",
    "bare-lf": HEAD.replace(b"\r\n", b"\n") + b"\nlf body\n",
    "headers-only": HEAD,
    "multipart-with-attachment": HEAD + b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
    b"--XX\r\nContent-Type: text/plain\r\n\r\nthe text\r\n--XX\r\n"
    b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=r.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--XX--\r\n",
    "single-pdf": HEAD + b"Content-Type: application/pdf\r\n\r\n%PDF\r\n",
    # All ASCII with plain addresses: read without the email package (see the next test).
    "ascii-plain": ASCII_HEAD + b"Content-Type: text/plain; charset=us-ascii\r\n\r\nline\r\n.\r\n",
    "ascii-no-content-type": ASCII_HEAD + b"\r\nbody only\r\n",
    "ascii-folded-and-repeated": ASCII_HEAD + b"To: e@hisp.example,\r\n f@hisp.example\r\n"
    b"Subject: second subject\r\nContent-Type: text/plain; format=flowed\r\n\r\nx\r\n",
    "ascii-headers-only": ASCII_HEAD,
    "ascii-quoted-display-name": ASCII_HEAD.replace(b"Dr Sender <", b'"Dr. Sender" <')
    + b"\r\nx\r\n",
    "ascii-7bit-utf8": ASCII_HEAD + b"Content-Type: text/plain; charset=\"UTF-8\"\r\n"
    b"Content-Transfer-Encoding: 7bit\r\n\r\nx\r\n",
    "ascii-utf7-charset": ASCII_HEAD + b"Content-Type: text/plain; charset=utf-7\r\n\r\nA+ImIDkQ.\r\n",
    "ascii-qp": ASCII_HEAD + b"Content-Transfer-Encoding: quoted-printable\r\n\r\na=3Db\r\n",
}


def _full_parse(raw: bytes) -> mailtext.Summary:
    message = mailtext.parse(raw)
    sender = mailtext._header(message, "From")  # noqa: SLF001 - the reference path
    from email.utils import parseaddr

    return mailtext.Summary(
        message_id=mailtext._header(message, "Message-ID"),  # noqa: SLF001
        sender=sender,
        sender_address=parseaddr(sender)[1],
        to=mailtext.addresses(message, "To"),
        cc=mailtext.addresses(message, "Cc"),
        subject=mailtext._header(message, "Subject"),  # noqa: SLF001
        body_text=mailtext.body_text(message),
        attachments=tuple(mailtext.attachments(message)),
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_summarise_matches_a_full_mime_parse(name: str) -> None:
    raw = CASES[name]
    assert mailtext.summarise(raw) == _full_parse(raw)


def test_summarise_decodes_single_part_text_by_its_charset_and_encoding() -> None:
    summary = mailtext.summarise(CASES["plain-utf8-qp"])
    assert summary.body_text.strip() == "Café au lait"
    assert summary.subject == "Référence 1"
    assert summary.to == ("a@hisp.example", "b@hisp.example")
    assert summary.attachments == ()


def test_summarise_gives_no_body_for_a_text_attachment_alone() -> None:
    assert mailtext.summarise(CASES["attachment-disposition"]).body_text == ""


def test_plain_ascii_mail_is_read_without_the_email_package() -> None:
    assert mailtext._plain_ascii_summary(CASES["ascii-plain"]) is not None  # noqa: SLF001
    assert mailtext._plain_ascii_summary(CASES["ascii-folded-and-repeated"]) is not None  # noqa: SLF001
    summary = mailtext.summarise(CASES["ascii-folded-and-repeated"])
    assert summary.to == ("a@hisp.example", "b@hisp.example", "e@hisp.example", "f@hisp.example")
    assert summary.subject == "Referral for review"
    assert summary.sender == "Dr Sender <sender@partner.example>"
    # What the plain path cannot render exactly takes the general one.
    for name in ("ascii-quoted-display-name", "ascii-utf7-charset", "ascii-qp", "html"):
        assert mailtext._plain_ascii_summary(CASES[name]) is None  # noqa: SLF001
