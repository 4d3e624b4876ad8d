"""MAIL and RCPT paths: the everyday ``<local@domain>`` form is read without the email
package's parser, with exactly its result; anything else still goes to that parser."""

from __future__ import annotations

import itertools
import smtplib

from aiosmtpd.smtp import SMTP

from hisp.smtp.protocol import HispSMTP

LOCALS = ["a", "a.b", "A+b=c", "'x'", "a..b", ".a", "a.", "x" * 64, "x" * 65, '"q"', "a b", ""]
DOMAINS = ["b", "b.example", "x-y.example", "[1.2.3.4]", "b..c", "-b", "b-", ""]
RESTS = ["", " ", "  SIZE=12", "\tX", "x", " (c) X", "SIZE=1  ", " BODY=8BITMIME SIZE=1", "(c)"]


def _aiosmtpd(server: SMTP, arg: str) -> tuple[str | None, str | None]:
    try:
        return SMTP._getaddr(server, arg)
    except IndexError:  # aiosmtpd's parser on e.g. "a@": we answer "malformed" instead
        return None, None


def test_plain_paths_parse_exactly_as_aiosmtpd_does() -> None:
    server = HispSMTP.__new__(HispSMTP)
    for local, domain, rest, lead in itertools.product(LOCALS, DOMAINS, RESTS, ["", " ", "<"]):
        for arg in (f"{lead}<{local}@{domain}>{rest}", f"{lead}{local}@{domain}{rest}"):
            assert server._getaddr(arg) == _aiosmtpd(server, arg), arg


def test_an_address_cut_short_is_malformed_not_a_dropped_session(backbone, bob) -> None:
    with smtplib.SMTP("127.0.0.1", backbone.port, timeout=10) as client:
        client.ehlo("partner.example.net")
        code, _ = client.docmd("MAIL FROM:a@")
        assert code == 553
        assert client.noop()[0] == 250  # the session goes on


def _rcpt_postmaster(port: int) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("partner.example.net")
        assert client.mail("doc@partner.example.net")[0] == 250
        return client.docmd("RCPT TO:<Postmaster>")


def test_bare_postmaster_goes_to_postmaster_at_our_hosted_domain(backbone, hosted, settings):
    from hisp.models import Address, Message

    settings.HISP_HOSTNAME = f"mx.{hosted.name}"
    Address.objects.create(address=f"postmaster@{hosted.name}", domain=hosted)
    with smtplib.SMTP("127.0.0.1", backbone.port, timeout=10) as client:
        client.ehlo("partner.example.net")
        client.mail("doc@partner.example.net")
        assert client.docmd("RCPT TO:<Postmaster>")[0] == 250  # RFC 5321 4.5.1, any case
        client.data(b"Subject: hello\r\n\r\nfor the postmaster\r\n")
    assert Message.objects.get().envelope_to == [f"postmaster@{hosted.name}"]


def test_bare_postmaster_without_such_a_mailbox_is_an_unknown_user(backbone, hosted, settings):
    settings.HISP_HOSTNAME = f"mx.{hosted.name}"
    code, reply = _rcpt_postmaster(backbone.port)
    assert (code, reply[:5]) == (550, b"5.1.1")
    settings.HISP_HOSTNAME = "mx.not-hosted.example"
    code, reply = _rcpt_postmaster(backbone.port)
    assert (code, reply[:5]) == (550, b"5.1.1")



def test_control_characters_in_a_path_are_a_syntax_error(backbone, bob) -> None:
    """A NUL (or another control character) in MAIL or RCPT is refused at once as a syntax
    error (RFC 5321 section 4.1.2 allows none there), never looked up: the database refuses a
    NUL, which would answer 451 and have the client retry for ever."""
    with smtplib.SMTP("127.0.0.1", backbone.port, timeout=10) as client:
        client.ehlo("partner.example.net")
        code, _ = client.docmd("MAIL FROM:<doc\x00x@partner.example.net>")
        assert code in (501, 553)
        assert client.mail("doc@partner.example.net")[0] == 250
        for path in (f"<{bob.address[:2]}\x00{bob.address[2:]}>", f"<{bob.address}\x1b>"):
            code, _ = client.docmd(f"RCPT TO:{path}")
            assert code in (501, 553), path
        assert client.rcpt(bob.address)[0] == 250  # the session goes on
