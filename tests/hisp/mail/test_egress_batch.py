"""Egress with several recipients: one SMTP transaction per destination, and every RCPT reply
counted for its own recipient only (real aiosmtpd servers on loopback, scripted replies)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller

from hisp import egress
from hisp.services import routes
from tests.support.services import free_port

WIRE = b"From: alice@hospital.example.org\r\nSubject: x\r\n\r\n.leading dot\r\nbody\r\n"
PARTNER = "partner.example.net"


@dataclass
class Transaction:
    peer: object
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class ScriptedHandler:
    """Answers RCPT from ``rcpt_replies`` (by local part; 250 otherwise), accepts at most
    ``per_transaction`` recipients (452 after that), and answers DATA with ``data_reply``."""

    rcpt_replies: dict[str, str] = field(default_factory=dict)
    per_transaction: int = 1000
    data_reply: str = "250 2.0.0 OK"
    mails: list[object] = field(default_factory=list)
    delivered: list[Transaction] = field(default_factory=list)

    async def handle_MAIL(self, server, session, envelope, address, options) -> str:
        self.mails.append(session.peer)
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options) -> str:
        reply = self.rcpt_replies.get(address.partition("@")[0], "250 OK")
        if reply.startswith("250"):
            if len(envelope.rcpt_tos) >= self.per_transaction:
                return "452 4.5.3 Too many recipients"
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.data_reply.startswith("250"):
            self.delivered.append(
                Transaction(session.peer, envelope.mail_from, list(envelope.rcpt_tos),
                            envelope.original_content)
            )
        return self.data_reply


@contextmanager
def scripted(**script) -> Iterator[tuple[ScriptedHandler, egress.Hop]]:
    handler = ScriptedHandler(**script)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield handler, egress.Hop("127.0.0.1", controller.port)
    finally:
        controller.stop()


def _at(*locals_: str, domain: str = PARTNER) -> list[str]:
    return [f"{local}@{domain}" for local in locals_]


def _results(outcomes: dict[str, egress.Outcome]) -> dict[str, tuple[egress.Result, str]]:
    return {r.partition("@")[0]: (o.result, o.status) for r, o in outcomes.items()}


def test_recipients_of_one_domain_share_one_transaction(db):
    with scripted() as (sink, hop):
        routes.set_route(PARTNER, f"{hop.host}:{hop.port}")
        outcomes = egress.send_batch(wire=WIRE, mail_from="alice@hospital.example.org",
                                     recipients=_at("a", "b", "c"))
    assert {o.result for o in outcomes.values()} == {egress.Result.SENT}
    assert len(sink.mails) == 1
    [transaction] = sink.delivered
    assert transaction.rcpt_tos == _at("a", "b", "c")
    assert transaction.data == WIRE


def test_each_rcpt_reply_counts_for_its_own_recipient_only():
    with scripted(rcpt_replies={"gone": "550 5.1.1 No such user", "busy": "451 4.2.1 Later"}) as (
        sink, hop
    ):
        outcomes = egress.send_via([hop], wire=WIRE, mail_from="alice@hospital.example.org",
                                   recipients=_at("ok", "gone", "busy"))
    assert _results(outcomes) == {
        "ok": (egress.Result.SENT, "2.0.0"),
        "gone": (egress.Result.PERMANENT, "5.1.1"),
        "busy": (egress.Result.TEMPORARY, "4.2.1"),
    }
    assert outcomes["gone@" + PARTNER].detail.startswith("550 5.1.1")
    [transaction] = sink.delivered
    assert transaction.rcpt_tos == _at("ok")


def test_no_data_when_every_recipient_is_refused():
    with scripted(rcpt_replies={"x": "550 5.1.1 No", "y": "553 5.1.3 Bad"}) as (sink, hop):
        outcomes = egress.send_via([hop], wire=WIRE, mail_from="a@b.test", recipients=_at("x", "y"))
    assert _results(outcomes) == {
        "x": (egress.Result.PERMANENT, "5.1.1"), "y": (egress.Result.PERMANENT, "5.1.3")
    }
    assert sink.delivered == []


def test_data_reply_applies_to_every_accepted_recipient_only():
    with scripted(rcpt_replies={"gone": "550 5.1.1 No"}, data_reply="554 5.6.0 Content refused") as (
        sink, hop
    ):
        outcomes = egress.send_via([hop], wire=WIRE, mail_from="a@b.test",
                                   recipients=_at("a", "gone", "b"))
    assert _results(outcomes) == {
        "a": (egress.Result.PERMANENT, "5.6.0"),
        "gone": (egress.Result.PERMANENT, "5.1.1"),
        "b": (egress.Result.PERMANENT, "5.6.0"),
    }


def test_temporary_data_failure_defers_every_accepted_recipient():
    with scripted(data_reply="451 4.3.0 Try later") as (sink, hop):
        outcomes = egress.send_via([hop], wire=WIRE, mail_from="a@b.test", recipients=_at("a", "b"))
    assert _results(outcomes) == {
        "a": (egress.Result.TEMPORARY, "4.3.0"), "b": (egress.Result.TEMPORARY, "4.3.0")
    }


def test_452_too_many_recipients_continues_in_a_second_transaction():
    with scripted(per_transaction=2) as (sink, hop):
        outcomes = egress.send_via([hop], wire=WIRE, mail_from="a@b.test",
                                   recipients=_at("a", "b", "c", "d", "e"))
    assert {o.result for o in outcomes.values()} == {egress.Result.SENT}
    assert [t.rcpt_tos for t in sink.delivered] == [_at("a", "b"), _at("c", "d"), _at("e")]
    assert len({t.peer for t in sink.delivered}) == 1  # one connection, three transactions


def test_452_for_the_first_recipient_defers_it():
    with scripted(per_transaction=0) as (sink, hop):
        outcomes = egress.send_via([hop], wire=WIRE, mail_from="a@b.test", recipients=_at("a"))
    assert _results(outcomes) == {"a": (egress.Result.TEMPORARY, "4.5.3")}
    assert sink.delivered == []


def test_over_100_recipients_are_split_into_transactions_of_100():
    recipients = [f"r{n}@{PARTNER}" for n in range(150)]
    with scripted() as (sink, hop):
        outcomes = egress.send_via([hop], wire=WIRE, mail_from="a@b.test", recipients=recipients)
    assert {o.result for o in outcomes.values()} == {egress.Result.SENT}
    assert [len(t.rcpt_tos) for t in sink.delivered] == [100, 50]


def test_only_temporarily_failed_recipients_move_to_the_next_hop():
    replies = {"later": "451 4.2.1 Busy", "gone": "550 5.1.1 No"}
    with scripted(rcpt_replies=replies) as (first, hop1), scripted() as (second, hop2):
        outcomes = egress.send_via([hop1, hop2], wire=WIRE, mail_from="a@b.test",
                                   recipients=_at("ok", "later", "gone"))
    assert _results(outcomes) == {
        "ok": (egress.Result.SENT, "2.0.0"),
        "later": (egress.Result.SENT, "2.0.0"),
        "gone": (egress.Result.PERMANENT, "5.1.1"),
    }
    assert [t.rcpt_tos for t in first.delivered] == [_at("ok")]
    assert [t.rcpt_tos for t in second.delivered] == [_at("later")]


def test_unreachable_hop_defers_every_recipient():
    closed = egress.Hop("127.0.0.1", free_port())
    outcomes = egress.send_via([closed], wire=WIRE, mail_from="a@b.test", recipients=_at("a", "b"))
    assert _results(outcomes) == {
        "a": (egress.Result.TEMPORARY, "4.4.1"), "b": (egress.Result.TEMPORARY, "4.4.1")
    }


def test_domains_routed_to_the_same_server_share_a_transaction(db):
    with scripted() as (sink, hop):
        for domain in (PARTNER, "clinic.example.net"):
            routes.set_route(domain, f"{hop.host}:{hop.port}")
        outcomes = egress.send_batch(
            wire=WIRE, mail_from="a@b.test",
            recipients=[*_at("a"), *_at("b", domain="CLINIC.example.net"), *_at("a")],
        )
    assert list(outcomes) == [f"a@{PARTNER}", "b@CLINIC.example.net"]  # duplicates once
    assert [t.rcpt_tos for t in sink.delivered] == [[f"a@{PARTNER}", "b@CLINIC.example.net"]]


def test_domains_on_different_routes_get_their_own_transactions(db):
    with scripted() as (first, hop1), scripted() as (second, hop2):
        routes.set_route(PARTNER, f"{hop1.host}:{hop1.port}")
        routes.set_route("clinic.example.net", f"{hop2.host}:{hop2.port}")
        outcomes = egress.send_batch(wire=WIRE, mail_from="a@b.test",
                                     recipients=[*_at("a"), *_at("b", domain="clinic.example.net")])
    assert {o.result for o in outcomes.values()} == {egress.Result.SENT}
    assert [t.rcpt_tos for t in first.delivered] == [_at("a")]
    assert [t.rcpt_tos for t in second.delivered] == [["b@clinic.example.net"]]


def test_single_recipient_send_keeps_its_signature_and_result(db):
    with scripted(rcpt_replies={"gone": "550 5.1.1 No such user"}) as (sink, hop):
        routes.set_route(PARTNER, f"{hop.host}:{hop.port}")
        refused = egress.send(wire=WIRE, mail_from="a@b.test", recipient=f"gone@{PARTNER}")
        sent = egress.send(wire=WIRE, mail_from="a@b.test", recipient=f"ok@{PARTNER}")
    assert (refused.result, refused.status) == (egress.Result.PERMANENT, "5.1.1")
    assert sent.result is egress.Result.SENT
    assert [t.rcpt_tos for t in sink.delivered] == [_at("ok")]


def test_null_reverse_path_goes_out_as_empty_mail_from():
    with scripted() as (sink, hop):
        outcomes = egress.send_via([hop], wire=WIRE, mail_from="", recipients=_at("a"))
    assert outcomes[f"a@{PARTNER}"].result is egress.Result.SENT
    assert sink.delivered[0].mail_from == "<>"


@pytest.mark.parametrize("reply", ["550 5.7.1 Sender refused", "451 4.7.1 Greylisted"])
def test_refused_mail_from_settles_every_recipient_with_that_reply(reply):
    @dataclass
    class RefusingSender(ScriptedHandler):
        async def handle_MAIL(self, server, session, envelope, address, options) -> str:
            return reply

    handler = RefusingSender()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        hop = egress.Hop("127.0.0.1", controller.port)
        outcomes = egress.send_via([hop], wire=WIRE, mail_from="a@b.test", recipients=_at("a", "b"))
    finally:
        controller.stop()
    status = reply.split()[1]
    expected = egress.Result.PERMANENT if reply.startswith("5") else egress.Result.TEMPORARY
    assert _results(outcomes) == {"a": (expected, status), "b": (expected, status)}
    assert handler.delivered == []
