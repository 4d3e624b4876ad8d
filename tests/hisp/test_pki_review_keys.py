"""Key custody under an operator's real conditions: a KEK rotation while the HISP keeps issuing
certificates (two PostgreSQL sessions, real row locks), hostile PKCS#12 and key files."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.db import connection, transaction

from hisp import keystore
from hisp.models import PrivateKey

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row locks are what is tested"
)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _in_thread(work: Callable[[], object], results: dict[str, object], name: str
               ) -> threading.Thread:
    def run() -> None:
        try:
            results[name] = work()
        except Exception as exc:  # the test reads it
            results[name] = exc
        finally:
            connection.close()  # this thread's own database session

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _sessions_waiting_on_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND datname = current_database()")
        return int(cursor.fetchone()[0])


def _wait_for_a_lock_waiter() -> None:
    deadline = time.monotonic() + 10
    while _sessions_waiting_on_a_lock() < 1:
        assert time.monotonic() < deadline, "the expected session never waited on a lock"
        time.sleep(0.02)


def _new_kek() -> keystore.Kek:
    return keystore.Kek(os.urandom(32))


@pytest.mark.django_db(transaction=True)
def test_a_key_stored_while_the_kek_rotates_is_rewrapped_with_the_others(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    keystore.wrap_private_key(rsa_key)  # the HISP already holds a key, and the verifier
    old, new = keystore.configured_kek(), _new_kek()
    stored, commit = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def issue() -> int:
        # A certificate being issued (or renewed) by a worker: key stored, not yet committed.
        with transaction.atomic():
            row = keystore.wrap_private_key(rsa_key)
            stored.set()
            assert commit.wait(10)
        return row.pk

    issuing = _in_thread(issue, results, "issued")
    assert stored.wait(10)
    rotating = _in_thread(lambda: keystore.rotate_kek(new=new, old=old), results, "rotated")
    rotating.join(0.5)  # the rotation must wait for the issuing transaction, not race past it
    commit.set()
    issuing.join(10)
    rotating.join(10)
    assert results["rotated"] == 2, results
    for row in PrivateKey.objects.all():
        keystore.unwrap_private_key(row, kek=new)  # the retired KEK is no longer needed


@pytest.mark.django_db(transaction=True)
def test_a_key_stored_with_the_old_kek_while_a_rotation_commits_is_refused(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    first = keystore.wrap_private_key(rsa_key)
    old, new = keystore.configured_kek(), _new_kek()
    held, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def hold_a_key_row() -> None:
        # Something else holds a key row, so the rotation stops half-way with the verifier
        # locked: the moment a worker still on the old KEK tries to store a key.
        with transaction.atomic():
            PrivateKey.objects.select_for_update().get(pk=first.pk)
            held.set()
            assert release.wait(10)

    holder = _in_thread(hold_a_key_row, results, "held")
    assert held.wait(10)
    rotating = _in_thread(lambda: keystore.rotate_kek(new=new, old=old), results, "rotated")
    _wait_for_a_lock_waiter()
    issuing = _in_thread(lambda: keystore.wrap_private_key(rsa_key, kek=old), results, "issued")
    issuing.join(0.5)  # it must wait for the rotation, then see the new verifier
    release.set()
    for thread in (holder, rotating, issuing):
        thread.join(10)
    assert results["rotated"] == 1, results
    assert isinstance(results["issued"], keystore.KekMismatch), results
    assert PrivateKey.objects.count() == 1
    keystore.unwrap_private_key(PrivateKey.objects.get(), kek=new)
