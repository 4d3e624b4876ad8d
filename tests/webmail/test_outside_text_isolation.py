"""Words from outside (a sender's name, a subject, a signing certificate's organisation) are set
in our own sentences inside <bdi>, so a right-to-left override in them ("Trojan Source",
CVE-2021-42574) cannot run on and reverse the words of ours that follow: the unverified-sender
warning must read as we wrote it, whatever the sender's name holds."""

from __future__ import annotations

from tests.factories import MailboxEntryFactory, MessageFactory
from tests.webmail.certs import certificate_row

RLO = "\u202e"


def _isolated(body: str, text: str, *, after: str = "<main") -> str:
    """What follows ``text`` (its first showing after ``after``) once its <bdi> closes; fails
    unless ``text`` sits in a <bdi>."""
    at = body.index(text, body.index(after))
    opened, closed = body.rfind("<bdi>", 0, at), body.find("</bdi>", at)
    assert opened != -1 and closed != -1, f"{text!r} is not in a <bdi>"
    assert "<" not in body[opened + len("<bdi>") : at] + body[at:closed], f"{text!r} not isolated"
    return body[closed + len("</bdi>") : closed + 60]


def test_the_unverified_warning_isolates_the_senders_name(alice, alice_client) -> None:
    entry = MailboxEntryFactory(
        address=alice.address,
        message=MessageFactory(signer="", sender="who@unknown.example"),
        sender=f"Dr {RLO}egnahc who@unknown.example",
    )
    message = entry.message
    message.content = message.content.replace(b"From: who@unknown.example", b"From: ")
    message.save()
    body = alice_client.get(f"/mail/m/{entry.pk}/").content.decode()
    assert _isolated(body, f"Dr {RLO}egnahc").lstrip().startswith("and may have been changed")


def test_the_verified_banner_isolates_the_signer_and_organisation(alice, alice_client) -> None:
    anchor = certificate_row(cn="Partner Root CA", org=f"Partner {RLO}Trust", binding="ca",
                             bound_name="partner.example")
    entry = MailboxEntryFactory(
        address=alice.address,
        message=MessageFactory(signer_organisation=f"Clinic {RLO}cilbup", anchor=anchor),
    )
    body = alice_client.get(f"/mail/m/{entry.pk}/").content.decode()
    assert _isolated(body, f"Clinic {RLO}cilbup").startswith("</b>, trusted through")
    assert _isolated(body, f"Partner {RLO}Trust").startswith("</b>.")


def test_the_list_isolates_the_subject_from_the_snippet(alice, alice_client) -> None:
    MailboxEntryFactory(address=alice.address, subject=f"Labs {RLO}stluser",
                        snippet=f"Results {RLO}attached")
    body = alice_client.get(f"/mail/a/{alice.address.pk}/inbox/").content.decode()
    assert _isolated(body, f"Labs {RLO}stluser", after='<td class="subject">').startswith(' <span class="snippet">— <bdi>')
    assert _isolated(body, f"Results {RLO}attached").startswith("</span></a>")
