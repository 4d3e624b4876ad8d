"""Webmail benchmark: one mailbox with 100,000 entries on PostgreSQL; server time of the inbox
page, a message page and a search, through Django's test client (no network in the figures).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/hisp python -m webmail.bench --json

It works in a throw-away database (``test_<name>``, created, migrated and dropped), never the
one DATABASE_URL names. Targets (issue 7): inbox and message p95 < 150 ms, search p95 < 500 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

TARGETS_MS = {"inbox": 150.0, "inbox_deep": 150.0, "message": 150.0, "search": 500.0,
              "search_common": 500.0}
WORDS = ("referral consult follow-up results imaging cardiology pharmacy discharge summary "
         "appointment allergy medication review request update report clinic visit note").split()


def _p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def _fill(*, entries: int, seed: int) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from hisp.models import Address, AddressGrant, Domain, MailboxEntry, Message

    rng = random.Random(seed)
    user = get_user_model().objects.create_user(username="bench", password="bench only, thrown away")
    domain = Domain.objects.create(name="bench.example")
    address = Address.objects.create(address="clinician@bench.example", domain=domain)
    AddressGrant.objects.create(user=user, address=address)
    device = TOTPDevice.objects.create(user=user, name="bench", confirmed=True)
    now = timezone.now()
    started = time.perf_counter()
    batch = 5000
    for start in range(0, entries, batch):
        count = min(batch, entries - start)
        messages, rows = [], []
        for i in range(start, start + count):
            sender = f"sender{i % 500}@partner{i % 40}.example"
            subject = " ".join(rng.choices(WORDS, k=4)).capitalize()
            # About 1% of messages mention potassium: the search benchmark's word.
            body = " ".join(rng.choices(WORDS, k=40)) + (" potassium elevated" if i % 100 == 7 else "")
            content = (f"From: {sender}\r\nTo: clinician@bench.example\r\nSubject: {subject}\r\n"
                       f"Message-ID: <b{i}@bench.example>\r\n\r\n{body}\r\n").encode()
            messages.append(Message(
                direction=Message.Direction.INBOUND, state=Message.State.DELIVERED,
                message_id=f"<b{i}@bench.example>", envelope_from=sender,
                envelope_to=["clinician@bench.example"], header_from=sender,
                header_to=["clinician@bench.example"], subject=subject, raw=b"(wire)",
                content=content, signer=sender,
            ))
        Message.objects.bulk_create(messages)
        for i, message in zip(range(start, start + count), messages, strict=True):
            rows.append(MailboxEntry(
                address=address, message=message,
                folder=MailboxEntry.SystemFolder.ARCHIVE if i % 10 == 0 else MailboxEntry.SystemFolder.INBOX,
                read=i % 50 != 0, sender=message.header_from, recipients=message.header_to,
                subject=message.subject, snippet=bytes(message.content).decode()[-120:],
                body_text=bytes(message.content).split(b"\r\n\r\n", 1)[1].decode(),
                received_at=now - timedelta(minutes=entries - i),
            ))
        MailboxEntry.objects.bulk_create(rows)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {"user": user, "device": device, "address": address,
            "fill_seconds": round(time.perf_counter() - started, 1)}


def _measure(call: Callable[[], Any], *, runs: int) -> list[float]:
    call()  # warm the caches and the connection once
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        response = call()
        samples.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"benchmark request failed with HTTP {response.status_code}")
    return samples


def run(*, entries: int, runs: int, seed: int) -> dict[str, Any]:
    import django

    django.setup()
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    from hisp.models import MailboxEntry

    if connection.vendor != "postgresql":
        raise SystemExit("the webmail benchmark needs PostgreSQL: set DATABASE_URL=postgres://...")
    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        filled = _fill(entries=entries, seed=seed)
        client = Client()
        client.force_login(filled["user"], backend="django.contrib.auth.backends.ModelBackend")
        session = client.session
        session["otp_device_id"] = filled["device"].persistent_id
        session.save()
        address = filled["address"]
        inbox = f"/mail/a/{address.pk}/inbox/"
        ids = list(MailboxEntry.objects.filter(address=address).values_list("pk", flat=True))
        rng = random.Random(seed)
        deep = MailboxEntry.objects.filter(address=address, folder="inbox").order_by(
            "-received_at", "-id")[entries // 2]
        from webmail.listing import cursor_of

        results = {
            "inbox": _measure(lambda: client.get(inbox), runs=runs),
            "inbox_deep": _measure(lambda: client.get(inbox, {"cursor": cursor_of(deep)}), runs=runs),
            "message": _measure(lambda: client.get(f"/mail/m/{rng.choice(ids)}/"), runs=runs),
            "search": _measure(
                lambda: client.get(f"/mail/a/{address.pk}/search/", {"q": "potassium"}), runs=runs),
            # A word in nearly every message: the other end of the planner's choice.
            "search_common": _measure(
                lambda: client.get(f"/mail/a/{address.pk}/search/", {"q": "referral"}), runs=runs),
        }
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
    report: dict[str, Any] = {"entries": entries, "runs": runs, "fill_seconds": filled["fill_seconds"]}
    for name, samples in results.items():
        p95 = _p95(samples)
        report[name] = {"p50_ms": round(statistics.median(samples), 1), "p95_ms": round(p95, 1),
                        "target_p95_ms": TARGETS_MS[name], "ok": p95 < TARGETS_MS[name]}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the report as JSON only")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hisp.settings")
    report = run(entries=args.entries, runs=args.runs, seed=args.seed)
    if args.json:
        json.dump(report, sys.stdout)
        sys.stdout.write("\n")
    else:
        for name in TARGETS_MS:
            r = report[name]
            print(f"{name:10} p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  "
                  f"(target {r['target_p95_ms']:.0f}) {'ok' if r['ok'] else 'SLOW'}")
        print(f"filled {report['entries']} entries in {report['fill_seconds']} s")
    return 0 if all(report[n]["ok"] for n in TARGETS_MS) else 1


if __name__ == "__main__":
    sys.exit(main())
