"""The mail commands' JSON with text from outside: always one valid JSON document, and no
control character a sender wrote (a NUL, a terminal escape) in what scripts and terminals read."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator

import pytest
from django.core.management import call_command

from hisp.services import compose
from tests.hisp.mail.drive import drain
from tests.hisp.mail.world import World, make_world

# What printable() leaves: tab and line ends (in a body).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@pytest.fixture
def world(db, tmp_path) -> Iterator[World]:
    with make_world(tmp_path) as made:
        yield made


def _json(*args: str) -> object:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return json.loads(out.getvalue())  # one document, nothing else


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_mailbox_and_messages_json_show_a_senders_control_characters_as_u_fffd(world):
    """Sent by a hosted sender through our own agent (openssl's text mode would cut the NULs).
    The attachment's name is read from the stored message for ``mailbox --json``: it kept a
    NUL and an escape sequence (valid JSON, as \\u0000, but not a name anyone can use)."""
    raw = compose.build_message(
        sender=world.alice.address, to=[world.alice.address], subject="lab result",
        body_text="value 7.2", attachments=[("lab.pdf", "application/pdf", b"%PDF-1.4")],
        delivery_notification=False,
    )
    raw = raw.replace(b"lab result", b"lab\x00result\x1b[2J", 1)
    raw = raw.replace(b'filename="lab.pdf"', b"filename*=utf-8''lab%00%1B%5B2J.pdf", 1)
    assert raw.count(b"\x00") == 1 and b"filename*=" in raw
    compose.submit(address=world.alice.address, raw=raw, actor="test", peer="test")
    drain()
    [entry] = _json("mailbox", world.alice.address, "--json")
    assert entry["subject"] == "lab\ufffdresult\ufffd[2J"
    assert entry["attachments"][0]["filename"] == "lab\ufffd\ufffd[2J.pdf"
    messages = _json("messages", "--json")
    assert {m["subject"] for m in messages if m["direction"] == "in"} >= {entry["subject"]}
    for value in [*_strings(entry), *_strings(messages)]:
        assert not _CONTROL.search(value), value
