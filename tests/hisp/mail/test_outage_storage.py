"""PostgreSQL runs out of space while a large received message is written: the message table
lives, for this test, in a tablespace on a small tmpfs of its own. The sender gets 451 at once
(it keeps the message and retries), nothing half-written is left, and once there is room the
same listener takes mail again. Needs root (mount) and a PostgreSQL on this machine."""

from __future__ import annotations

import base64
import os
import random
import shutil
import smtplib
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from hisp.models import AuditEvent, Message
from tests.hisp.mail.test_ingress import MESSAGE

TABLESPACE = f"hisp_outage_{uuid.uuid4().hex[:12]}"  # cluster-wide: one per run
ROOM = "4m"  # tmpfs size: far less than one large message


def _admin() -> psycopg.Connection:
    s = connection.settings_dict
    return psycopg.connect(dbname=s["NAME"], user=s["USER"], password=s["PASSWORD"] or None,
                           host=s["HOST"] or None, port=s["PORT"] or None, autocommit=True)


@pytest.fixture
def small_disk(transactional_db: None) -> Iterator[Path]:
    if connection.vendor != "postgresql" or os.geteuid() != 0:
        pytest.skip("needs PostgreSQL and root (a tmpfs mount)")
    if (connection.settings_dict["HOST"] or "127.0.0.1") not in ("127.0.0.1", "localhost"):
        pytest.skip("the tablespace must be on the database server's own disk")
    # Outside pytest's folders, which the database server's user may not enter.
    folder = Path(tempfile.mkdtemp(prefix="hisp-small-disk-"))
    folder.chmod(0o755)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={ROOM},mode=0700", "tmpfs",
                       str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    table = connection.ops.quote_name(Message._meta.db_table)
    admin = _admin()
    try:
        shutil.chown(folder, "postgres", "postgres")
        admin.execute(f"CREATE TABLESPACE {TABLESPACE} LOCATION '{folder}'")
        admin.execute(f"ALTER TABLE {table} SET TABLESPACE {TABLESPACE}")
        yield folder
    finally:
        admin.execute(f"ALTER TABLE {table} SET TABLESPACE pg_default")
        admin.execute(f"DROP TABLESPACE IF EXISTS {TABLESPACE}")
        admin.close()
        subprocess.run(["umount", str(folder)], check=False)
        folder.rmdir()


def _large_message(size: int) -> bytes:
    # Random text does not compress: the whole size has to be written.
    body = base64.encodebytes(random.Random(7).randbytes(size * 3 // 4)).replace(b"\n", b"\r\n")
    return MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n\r\n" + body


def _send(port: int, rcpt: str, raw: bytes) -> tuple[int, float]:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("partner.example.net")
        client.mail("doc@partner.example.net")
        client.rcpt(rcpt)
        began = time.monotonic()
        code, _ = client.data(raw)
        return code, time.monotonic() - began


def test_a_full_disk_while_storing_a_large_message_gets_451_and_leaves_nothing(
    small_disk, backbone, bob
):
    code, took = _send(backbone.port, bob.address, _large_message(8_000_000))
    assert code == 451
    assert took < 10  # refused at once: no waiting for a commit that may have happened
    assert not Message.objects.exists()
    assert not AuditEvent.objects.filter(action="message.received").exists()
    # The operator makes room; the listener was not restarted.
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    code, _ = _send(backbone.port, bob.address, MESSAGE)
    assert code == 250
    assert Message.objects.count() == 1
