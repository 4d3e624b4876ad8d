"""Polling with ``after`` never skips a message, although PostgreSQL commits ids out of order:
a list stops at the horizon (webmail/api/horizon.py). Real concurrent transactions on
PostgreSQL; each test's other writer is a thread with its own connection."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from hisp.models import MailboxEntry
from tests.factories import MailboxEntryFactory, MessageFactory
from tests.webmail.api.conftest import api_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("the horizon is PostgreSQL's: SQLite commits ids in order")


def _entry(persona, subject: str) -> MailboxEntry:
    return MailboxEntryFactory(address=persona.address, subject=subject,
                               message=MessageFactory(subject=subject))


class HeldDelivery:
    """A delivery whose transaction drew its entry id and has not committed yet."""

    def __init__(self, persona) -> None:
        self.persona = persona
        self.drawn = threading.Event()
        self.release = threading.Event()
        self.pk: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.drawn.wait(10)

    def _run(self) -> None:
        try:
            with transaction.atomic():
                self.pk = _entry(self.persona, "late").pk
                self.drawn.set()
                self.release.wait(30)
        finally:
            connection.close()

    def commit(self) -> None:
        self.release.set()
        self.thread.join(10)


def _subjects(client, url: str) -> tuple[list[str], dict]:
    body = client.get(url).json()
    return [m["subject"] for m in body["messages"]], body


def test_an_id_committed_late_is_not_skipped_by_a_poll_after_a_higher_one(alice):
    program = api_client(alice)
    url = f"/api/v1/mailboxes/{alice.address.pk}/messages"
    held = HeldDelivery(alice)  # draws the lower id ...
    early = _entry(alice, "early")  # ... this one the higher, and commits first
    assert early.pk > held.pk
    timer = threading.Timer(0.05, held.commit)
    timer.start()
    try:
        # The list waits for the held delivery (or, on a machine too busy to commit it within
        # LOCK_WAIT, answers busy): the first page it gives has both, lower id first.
        for _ in range(50):
            response = program.get(url)
            if response.status_code != 503:
                break
    finally:
        timer.join(10)
    assert [m["subject"] for m in response.json()["messages"]] == ["late", "early"]


def test_a_poll_never_returns_a_higher_id_while_a_lower_one_is_uncommitted(alice):
    program = api_client(alice)
    url = f"/api/v1/mailboxes/{alice.address.pk}/messages"
    seen = _entry(alice, "seen")
    first, _ = _subjects(program, url)
    assert first == ["seen"]
    held = HeldDelivery(alice)
    _entry(alice, "early")
    try:
        busy = program.get(f"{url}?after={seen.pk}")
        # Not a page without "late" that a program would step past: ask again shortly.
        assert busy.status_code == 503
        assert busy.json()["error"]["code"] == "busy" and busy["Retry-After"] == "5"
    finally:
        held.commit()
    again, _ = _subjects(program, f"{url}?after={seen.pk}")
    assert again == ["late", "early"]


def test_deliveries_go_on_after_a_list_took_its_horizon(alice):
    program = api_client(alice)
    url = f"/api/v1/mailboxes/{alice.address.pk}/messages"
    _entry(alice, "one")
    assert _subjects(program, url)[0] == ["one"]
    _entry(alice, "two")  # the SHARE lock ended with the list's own transaction
    assert _subjects(program, url)[0] == ["one", "two"]
