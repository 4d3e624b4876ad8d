"""Operator commands under hostile input, and their audit trail beside the console's."""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from hisp.models import Address, AuditEvent, Certificate, Domain, Message, TrustAnchor, TrustBundle
from hisp.services import compose, identity
from tests.hisp.cli.conftest import Run
from tests.hisp.mail.drive import drain
from tests.hisp.mail.world import World, make_world
from tests.hisp.pki.conftest import VECTORS


@pytest.fixture
def world(db: None, tmp_path: Path) -> Iterator[World]:
    with make_world(tmp_path) as made:
        yield made


# --- address add --name ----------------------------------------------------------------------


def test_address_add_refuses_a_display_name_longer_than_its_column(
    run: Run, provider: Domain
) -> None:
    """PostgreSQL refuses the row (a DataError traceback) where the console's form says why."""
    with pytest.raises(CommandError, match="^--name: the display name is longer than 200 characters$"):
        run("address", "add", f"dr.long@{provider.name}", "--name", "N" * 201)
    assert not Address.objects.filter(address=f"dr.long@{provider.name}").exists()
    run("address", "add", f"dr.long@{provider.name}", "--name", "N" * 200)
    assert Address.objects.get(address=f"dr.long@{provider.name}").display_name == "N" * 200


@pytest.mark.parametrize(
    "name",
    [
        "Dr Adams\r\nBcc: someone@elsewhere.example",  # a second header line in every From
        "Dr \x1b[2J Adams",  # clears the operator's terminal in a plain listing
        "Dr \u202eamsdA",  # reads in another order than it displays
        "Dr <adams@elsewhere.example>",  # another address inside the From display name
        "Dr \udcff Adams",  # an argument that was not UTF-8
    ],
)
def test_address_add_refuses_a_display_name_the_console_refuses(
    run: Run, provider: Domain, name: str
) -> None:
    with pytest.raises(CommandError, match="^--name: the display name must be plain text"):
        run("address", "add", f"dr.adams@{provider.name}", "--name", name)
    assert not Address.objects.filter(address=f"dr.adams@{provider.name}").exists()


def test_a_display_name_from_the_cli_can_be_sent_from(run: Run, provider: Domain) -> None:
    """What the command accepts, the compose path accepts as a From display name."""
    run("address", "add", f"dr.adams@{provider.name}", "--name", "  Dr Ünal Adams, MD  ")
    row = Address.objects.get(address=f"dr.adams@{provider.name}")
    assert row.display_name == "Dr Ünal Adams, MD"
    raw = compose.build_message(
        sender=row.address,
        to=[row.address],
        subject="s",
        body_text="b",
        sender_name=row.display_name,
    )
    assert b"From: " in raw


@pytest.mark.parametrize(
    "secret",
    [
        b"correct\x00horse battery\n",  # every sign-in form refuses a NUL
        b"corr\xe9ct horse battery\n",  # Latin-1: not UTF-8, the hasher cannot take it
    ],
)
def test_address_add_refuses_a_password_no_one_could_sign_in_with(
    provider: Domain, secret: bytes
) -> None:
    with pytest.raises(CommandError) as error:
        call_command(
            "address",
            "add",
            f"dr.adams@{provider.name}",
            "--password-stdin",
            stdin=_stdin(secret),
            stdout=io.StringIO(),
        )
    assert str(error.value) == (
        "--password-stdin: the password must be UTF-8 text without NUL characters"
    )
    assert not Address.objects.filter(address=f"dr.adams@{provider.name}").exists()


def test_address_list_shows_a_stored_name_with_a_terminal_escape_harmlessly(
    run: Run, provider: Domain
) -> None:
    """Names added before the command checked them (or by another path) may hold escapes: the
    plain listing is read on a terminal."""
    Address.objects.create(
        address=f"old@{provider.name}",
        domain=provider,
        display_name="Dr \x1b[2J\x1b]0;pwned\x07Old",
    )
    out, _ = run("address", "list")
    assert "\x1b" not in out and "\x07" not in out
    assert f"old@{provider.name}\tclinician\tactive\tDr \ufffd[2J\ufffd]0;pwned\ufffdOld" in out
    rows = json.loads(run("address", "list", "--json")[0])
    assert {r["name"] for r in rows} >= {"Dr \x1b[2J\x1b]0;pwned\x07Old"}  # JSON escapes them


def test_bundle_add_of_a_file_already_added_for_the_domain_is_refused(
    run: Run, provider: Domain, tmp_path: Path
) -> None:
    """As the service refuses a URL added twice: a provisioning script run again must not
    leave two bundles trusting the same anchors."""
    source = VECTORS / "gateway_testBundle.p7b"
    run("bundle", "add", str(source), "--domain", provider.name)
    [bundle] = TrustBundle.objects.all()
    copy = tmp_path / "same-bundle.p7b"  # the same bytes under another name
    copy.write_bytes(source.read_bytes())
    with pytest.raises(CommandError) as error:
        run("bundle", "add", str(copy), "--domain", provider.name.upper())
    assert str(error.value) == (
        f"bundle {bundle.pk} ({bundle.name}) already holds this file for {provider.name}"
    )
    assert TrustBundle.objects.count() == 1
    assert TrustAnchor.objects.filter(bundle__isnull=False).count() == 1
    # Another hosted domain may trust the same bundle.
    other = identity.add_domain("clinic.example.net")
    run("bundle", "add", str(copy), "--domain", other.name)
    assert TrustBundle.objects.count() == 2


# --- send --body-file - ----------------------------------------------------------------------


class _CountingBytes(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.taken = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.taken += len(chunk)
        return chunk


def _stdin(data: bytes) -> io.TextIOWrapper:
    """Standard input as Python opens it for a pipe: text over bytes, undecodable bytes passed
    on as surrogates."""
    return io.TextIOWrapper(_CountingBytes(data), encoding="utf-8", errors="surrogateescape")


def test_send_refuses_a_body_on_stdin_that_is_not_utf8(world: World) -> None:
    with pytest.raises(CommandError, match="^standard input is not UTF-8 text$"):
        call_command(
            "send",
            "--from",
            world.alice.address,
            "--to",
            world.bob.address,
            "--subject",
            "s",
            "--body-file",
            "-",
            stdin=_stdin(b"result: 7.2 \xff\xfe mmol/l\n"),
            stdout=io.StringIO(),
        )
    assert not Message.objects.exists()


def test_send_reads_no_more_of_stdin_than_a_message_may_hold(world: World, settings: Any) -> None:
    settings.HISP_MAX_MESSAGE_BYTES = 4096
    stream = _stdin(b"y\n" * 1_000_000)
    with pytest.raises(CommandError, match="^standard input: larger than 4096 bytes"):
        call_command(
            "send",
            "--from",
            world.alice.address,
            "--to",
            world.bob.address,
            "--subject",
            "s",
            "--body-file",
            "-",
            stdin=stream,
            stdout=io.StringIO(),
        )
    assert stream.buffer.taken <= 4097  # type: ignore[attr-defined]
    assert not Message.objects.exists()


def test_send_takes_a_utf8_body_from_stdin(world: World) -> None:
    out = io.StringIO()
    call_command(
        "send",
        "--from",
        world.alice.address,
        "--to",
        world.bob.address,
        "--subject",
        "s",
        "--body-file",
        "-",
        stdin=_stdin("Blutzucker 7,2 mmol/l – nüchtern\n".encode()),
        stdout=out,
    )
    assert out.getvalue().startswith("queued message ")
    drain()
    [entry] = json.loads(_out("mailbox", world.bob.address, "--json"))
    assert "nüchtern" in entry["body_text"]


# --- audit, as the console and webmail record the same actions -------------------------------


def _out(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_mailbox_json_records_each_message_it_shows_as_opened(world: World) -> None:
    """The webmail audits opening a message; ``mailbox --json`` prints every body."""
    for subject in ("first", "second"):
        call_command(
            "send",
            "--from",
            world.alice.address,
            "--to",
            world.bob.address,
            "--subject",
            subject,
            "--body-file",
            "-",
            stdin=io.StringIO("body"),
            stdout=io.StringIO(),
        )
    drain()
    _out("mailbox", world.bob.address)  # the plain listing shows no body, like an inbox page
    assert not AuditEvent.objects.filter(action="message.open").exists()
    shown = json.loads(_out("mailbox", world.bob.address, "--json"))
    events = AuditEvent.objects.filter(action="message.open")
    assert sorted(e.detail["entry"] for e in events) == sorted(row["id"] for row in shown)
    assert {(e.actor_label, e.object_type) for e in events} == {("cli", "hisp.message")}
    assert {e.detail["mailbox"] for e in events} == {world.bob.pk}


def test_keys_rotate_kek_is_audited_without_key_material(world: World, tmp_path: Path) -> None:
    new_text = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    key_file = tmp_path / "new.kek"
    key_file.write_text(new_text + "\n")
    _out("keys", "rotate-kek", "--new-key-file", str(key_file))
    event = AuditEvent.objects.get(action="kek.rotate")
    assert event.actor_label == "cli"
    assert event.detail == {"keys": 5}  # CA, domain, postmaster, alice, bob
    assert new_text not in json.dumps(event.detail) and new_text[:20] not in event.object_id


def test_cert_export_is_audited_as_the_consoles_pem_download(world: World) -> None:
    _out("cert", "export", world.alice.address)
    [certificate] = Certificate.objects.filter(address=world.alice, binding="address")
    event = AuditEvent.objects.get(action="certificate.export_pem")
    assert (event.actor_label, event.object_id) == ("cli", str(certificate.pk))
    assert event.detail == {"fingerprint_sha256": certificate.fingerprint_sha256}


def _send(world: World, *extra: str) -> str:
    out = io.StringIO()
    call_command(
        "send", "--from", world.alice.address, "--to", world.bob.address, *extra, stdout=out
    )
    return out.getvalue()


def test_send_refuses_a_subject_argument_that_is_not_utf8(world: World) -> None:
    """Python hands such an argument over as surrogates; the header encoder would send it on
    as an ``unknown-8bit`` Subject."""
    subject = os.fsdecode(b"Befund \xe4rztlich")  # Latin-1 from an old terminal
    with pytest.raises(CommandError, match="^--subject is not UTF-8 text$"):
        _send(world, "--subject", subject)
    assert not Message.objects.exists()


def test_send_refuses_attachments_together_larger_than_a_message(
    world: World, settings: Any, tmp_path: Path
) -> None:
    settings.HISP_MAX_MESSAGE_BYTES = 10_000
    files = []
    for n in range(3):
        files += ["--attach", str(tmp_path / f"scan{n}.pdf")]
        (tmp_path / f"scan{n}.pdf").write_bytes(b"%PDF" + b"\0" * 4000)
    with pytest.raises(CommandError, match="^the body and attachments are larger than 10000"):
        _send(world, "--subject", "scans", *files)
    assert not Message.objects.exists()


def test_send_names_an_attachment_whose_file_name_is_not_utf8(world: World, tmp_path: Path) -> None:
    path = os.fsdecode(bytes(tmp_path) + b"/r\xe9sultat.txt")
    Path(path).write_bytes(b"7.2 mmol/l")
    assert _send(world, "--subject", "result", "--attach", path).startswith("queued message")
    drain()
    [entry] = json.loads(_out("mailbox", world.bob.address, "--json"))
    assert [a["filename"] for a in entry["attachments"]] == ["r\ufffdsultat.txt"]


def test_cert_import_says_a_password_that_is_not_utf8_is_not_utf8(
    provider: Domain, tmp_path: Path
) -> None:
    certificate = tmp_path / "bundle.p12"
    certificate.write_bytes(b"0\x82")  # never parsed: the password is refused first
    with pytest.raises(CommandError) as error:
        call_command(
            "cert",
            "import",
            str(certificate),
            "--password-stdin",
            stdin=_stdin(b"p\xe4sswort\n"),
            stdout=io.StringIO(),
        )
    assert str(error.value) == "--password-stdin: the password is not UTF-8 text"
