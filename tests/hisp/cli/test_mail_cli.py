"""The mail commands of the operator CLI: route, send, messages, mailbox (issue 2 contract)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.hisp.mail.drive import drain
from tests.hisp.mail.world import World, make_world


@pytest.fixture
def world(db, tmp_path) -> Iterator[World]:
    with make_world(tmp_path) as made:
        yield made


def run(*args: str, stdin: str | None = None) -> str:
    out = io.StringIO()
    extra = {"stdin": io.StringIO(stdin)} if stdin is not None else {}
    call_command(*args, stdout=out, **extra)
    return out.getvalue()


def test_route_set_list_delete(transactional_db):
    run("route", "set", "Partner.Example.NET", "127.0.0.1:2526")
    assert json.loads(run("route", "list", "--json")) == [
        {"domain": "partner.example.net", "host": "127.0.0.1", "port": 2526,
         "require_tls": False, "hold_pending_certificate": False}
    ]
    run("route", "set", "partner.example.net", "mx.partner.example.net:25")
    assert json.loads(run("route", "list", "--json"))[0]["host"] == "mx.partner.example.net"
    # MX: the domain's own MX records, with the route's policies.
    assert "partner.example.net -> MX" in run(
        "route", "set", "partner.example.net", "MX", "--require-tls"
    )
    assert json.loads(run("route", "list", "--json")) == [
        {"domain": "partner.example.net", "host": "", "port": 25,
         "require_tls": True, "hold_pending_certificate": False}
    ]
    assert run("route", "list").strip() == "partner.example.net\tMX"
    run("route", "delete", "partner.example.net")
    assert json.loads(run("route", "list", "--json")) == []


@pytest.mark.parametrize(
    "args",
    [
        ("route", "set", "partner.example.net", "no-port"),
        ("route", "set", "not a domain", "127.0.0.1:25"),
        ("route", "delete", "unknown.example.net"),
    ],
)
def test_route_bad_input_is_a_one_line_error(transactional_db, args):
    with pytest.raises(CommandError) as error:
        run(*args)
    assert "\n" not in str(error.value)


def test_send_messages_and_mailbox(world, tmp_path):
    attachment = tmp_path / "labs.csv"
    attachment.write_text("a,b\n1,2\n")
    out = run(
        "send", "--from", world.alice.address, "--to", world.bob.address,
        "--subject", "Lab results", "--body-file", "-", "--attach", str(attachment),
        "--delivery-notification", stdin="Results attached.\n",
    )
    assert out.startswith("queued message ")
    [queued] = json.loads(run("messages", "--json", "--direction", "out"))
    assert queued["state"] == "queued"
    assert queued["deliveries"][0]["recipient"] == world.bob.address
    assert queued["deliveries"][0]["state"] == "queued"

    drain()
    log = json.loads(run("messages", "--json"))
    assert set(log[0]) == {"id", "message_id", "direction", "from", "to", "subject", "state",
                           "reason", "created_at", "deliveries"}
    [sent] = [m for m in log if m["direction"] == "out" and m["subject"] == "Lab results"]
    assert sent["state"] == "sent"
    assert sent["reason"] is None
    assert sent["deliveries"][0]["state"] == "dispatched"
    assert set(sent["deliveries"][0]) == {"recipient", "state", "detail", "updated_at"}
    assert all(m["direction"] == "in" for m in json.loads(run("messages", "--json",
                                                             "--direction", "in")))

    [entry] = json.loads(run("mailbox", world.bob.address, "--json"))
    assert set(entry) == {"id", "message_id", "from", "to", "subject", "received_at",
                          "body_text", "attachments", "signer", "trusted"}
    assert entry["subject"] == "Lab results"
    assert entry["to"] == [world.bob.address]
    assert entry["message_id"] == sent["message_id"]
    assert "Results attached." in entry["body_text"]
    assert entry["attachments"] == [{"filename": "labs.csv", "content_type": "text/csv",
                                     "size": 8}]
    assert entry["from"] == world.alice.address
    assert entry["signer"] == world.alice.address
    assert entry["trusted"] is True


def test_mailbox_is_newest_first_and_includes_notices(world):
    run("send", "--from", world.alice.address, "--to", "x@nocert.example.com", "--subject", "one")
    drain()
    run("send", "--from", world.alice.address, "--to", "y@nocert.example.com", "--subject", "two")
    drain()
    entries = json.loads(run("mailbox", world.alice.address, "--json"))
    assert [e["subject"] for e in entries] == ["Delivery failed: two", "Delivery failed: one"]
    assert all(e["trusted"] is False for e in entries)


def test_send_from_an_address_not_hosted_is_an_error(world):
    with pytest.raises(CommandError, match="not an address hosted here"):
        run("send", "--from", "eve@elsewhere.example.com", "--to", world.bob.address,
            "--subject", "x")


def test_send_with_missing_body_file_is_an_error(world, tmp_path):
    with pytest.raises(CommandError, match="cannot read"):
        run("send", "--from", world.alice.address, "--to", world.bob.address,
            "--subject", "x", "--body-file", str(tmp_path / "missing.txt"))


def test_mailbox_of_unknown_address_is_an_error(transactional_db):
    with pytest.raises(CommandError):
        run("mailbox", "nobody@nowhere.example.org", "--json")


@pytest.mark.parametrize(
    "args",
    [("runsmtp", "--port", "70000"), ("runsmtp", "--port", "0", "--submission-port", "0")],
)
def test_runsmtp_bad_ports_are_a_one_line_error(args):
    with pytest.raises(CommandError) as error:
        run(*args)
    assert "\n" not in str(error.value)


def test_runsmtp_serves_both_ports_until_terminated(tmp_path):
    import os
    import signal
    import smtplib
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tests.support.services import free_port, port_open

    root = Path(__file__).resolve().parents[3]
    smtp, submission = free_port(), free_port()
    env = {**os.environ, "HISP_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "hisp.settings"}
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "runsmtp", "--bind", "127.0.0.1", "--port", str(smtp),
         "--submission-port", str(submission)],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not (port_open("127.0.0.1", smtp) and port_open("127.0.0.1", submission)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.2)
        with smtplib.SMTP("127.0.0.1", smtp, timeout=10) as client:
            client.ehlo("partner.example.net")
            assert client.has_extn("starttls")
        with smtplib.SMTP("127.0.0.1", submission, timeout=10) as client:
            client.ehlo("laptop")
            assert client.has_extn("starttls")
            assert client.docmd("MAIL FROM:<a@b.org>")[0] == 530  # STARTTLS first
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert (tmp_path / "tls" / "cert.pem").exists()  # self-signed, generated on first start
