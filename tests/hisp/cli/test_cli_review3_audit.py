"""Operator commands that show mail metadata are audited as the console's lists are: the
message log (``messages``, with or without ``--json``), a mailbox's plain listing and a
discovery lookup, each with the operator CLI as the actor."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import call_command

from hisp.models import AuditEvent, Message
from tests.hisp.mail.drive import drain
from tests.hisp.mail.world import World, make_world


@pytest.fixture
def world(db: None, tmp_path: Path) -> Iterator[World]:
    with make_world(tmp_path) as made:
        yield made


def _out(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def _send(world: World, subject: str) -> None:
    call_command(
        "send", "--from", world.alice.address, "--to", world.bob.address, "--subject", subject,
        "--body-file", "-", stdin=io.StringIO("body"), stdout=io.StringIO(),
    )


@pytest.mark.parametrize("as_json", [True, False])
def test_messages_records_each_showing_with_the_ids_shown(world: World, as_json: bool) -> None:
    _send(world, "first")
    _send(world, "second")
    drain()
    shown_ids = list(
        Message.objects.filter(direction="out").order_by("-created_at", "-id")
        .values_list("pk", flat=True)
    )
    args = ["messages", "--direction", "out"] + (["--json"] if as_json else [])
    out = _out(*args)
    if as_json:
        assert [row["id"] for row in json.loads(out)] == shown_ids
    [event] = AuditEvent.objects.filter(action="message.cli-list")
    assert (event.actor_label, event.actor_id) == ("cli", None)
    assert (event.object_type, event.object_id) == ("cli-list", "messages")
    assert len(shown_ids) >= 2  # the two messages and the MDNs Bob sent back
    assert event.detail == {"direction": "out", "results": len(shown_ids), "shown": shown_ids}


def test_messages_of_an_empty_log_is_recorded_too(db: None) -> None:
    assert json.loads(_out("messages", "--json")) == []
    [event] = AuditEvent.objects.filter(action="message.cli-list")
    assert event.detail == {"direction": None, "results": 0, "shown": []}


def test_the_plain_mailbox_listing_records_the_entries_it_shows(world: World) -> None:
    """It shows who wrote and every subject: mail metadata, as a console list shows."""
    _send(world, "first")
    drain()
    out = _out("mailbox", world.bob.address)
    assert "first" in out
    [event] = AuditEvent.objects.filter(action="mailbox.cli-list")
    assert event.actor_label == "cli"
    assert (event.object_type, event.object_id) == ("hisp.address", str(world.bob.pk))
    entry_ids = list(world.bob.entries.values_list("pk", flat=True))
    assert event.detail == {"mailbox": world.bob.pk, "results": 1, "shown": entry_ids}
    assert not AuditEvent.objects.filter(action="message.open").exists()  # no body shown


@pytest.mark.parametrize("as_json", [True, False])
def test_discovery_lookup_is_recorded_as_the_consoles(world: World, as_json: bool) -> None:
    _out("discovery", "lookup", world.bob.address, *(["--json"] if as_json else []))
    [event] = AuditEvent.objects.filter(action="discovery.lookup")
    assert event.actor_label == "cli"
    assert (event.object_type, event.object_id) == ("discovery", world.bob.address)
    assert event.detail["levels"] and all(":" in level for level in event.detail["levels"])


def test_a_refused_discovery_lookup_records_nothing(db: None) -> None:
    with pytest.raises(Exception, match="."):
        _out("discovery", "lookup", "not an address")
    assert not AuditEvent.objects.filter(action="discovery.lookup").exists()
