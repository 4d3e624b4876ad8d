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
