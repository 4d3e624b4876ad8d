"""``manage.py send --to`` holds recipients to the rule the webmail and the submission port
use (``compose.recipient_refusal``), instead of Django's validate_email: one rule for a
recipient however the message is written."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from hisp.models import Message
from hisp.services import compose, identity


@pytest.fixture(autouse=True)
def _fast_keys(settings: Any) -> None:
    settings.HISP_CA_KEY_BITS = 2048


@pytest.fixture
def sender(db: None) -> str:
    identity.add_domain("hospital.example.org")
    return identity.add_address("dr.adams@hospital.example.org", address_cert=True).address


def _send(sender: str, *to: str) -> None:
    args = [arg for address in to for arg in ("--to", address)]
    call_command("send", "--from", sender, "--subject", "s", *args, stdout=io.StringIO(),
                 stdin=io.StringIO(""))


@pytest.mark.parametrize(
    "to",
    [
        "doc@[127.0.0.1]",  # an address literal: validate_email took it
        "doc@partner.123",  # an all-numeric top-level domain reads as an IPv4 address
        "d" * 65 + "@partner.example.net",  # RFC 5321: 64 octets of local part
        "Dr Doc <doc@part_ner.example.net>",
        "doc@bücher.example",  # Direct has no SMTPUTF8: the ASCII form must be written
    ],
)
def test_send_refuses_what_compose_refuses(sender: str, to: str) -> None:
    assert compose.recipient_refusal(to.rpartition("<")[2].rstrip(">"))
    with pytest.raises(CommandError) as error:
        _send(sender, to)
    assert str(error.value).startswith("--to: not a Direct address: ")
    assert not Message.objects.exists()


def test_send_takes_what_compose_takes(sender: str) -> None:
    # Another HISP's address need not fit identity's rule for hosted ones: a 64-character
    # local part is reached through its domain-bound certificate.
    taken = ["Dr Doc <doc.smith@partner.example.net>", "d" * 64 + "@partner.example.net"]
    assert not any(compose.recipient_refusal(a.rpartition("<")[2].rstrip(">")) for a in taken)
    _send(sender, *taken)
    assert Message.objects.count() == 1


def test_the_ascii_form_offered_for_an_idn_is_idna_2008() -> None:
    # IDNA 2003 wrote faß as fass: another domain.
    assert compose.recipient_refusal("doc@faß.example").endswith(
        "write the domain in its ASCII form: doc@xn--fa-hia.example): doc@faß.example")
