"""When CRLs are signed: at the distribution point under load at the moment its CRL falls due,
once, not once per request (each would be a private-key signature and a stored row, on an
anonymous URL); and never with settings that make every CRL due the moment it is signed."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import close_old_connections, connection

from hisp.ca import crl as crls
from hisp.checks import crl_timing_check
from hisp.services import identity

FETCHES = 3


@pytest.mark.django_db(transaction=True)
def test_fetches_that_all_find_the_crl_due_sign_one_new_crl(settings: Any, monkeypatch) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    settings.HISP_CA_KEY_BITS = 2048
    ca = identity.add_domain("hospital.example.org").issuing_ca
    first = crls.current(ca)
    later = first.next_update - settings.HISP_CRL_REFRESH_BEFORE + timedelta(minutes=1)

    # Every fetch has seen the CRL due before any of them signs: the race, made certain.
    all_saw_it_due = threading.Barrier(FETCHES, timeout=30)
    seen = threading.local()
    is_due = crls.is_due

    def is_due_then_wait(crl, *, at=None):
        due = is_due(crl, at=at)
        if not getattr(seen, "once", False):
            seen.once = True
            all_saw_it_due.wait()
        return due

    monkeypatch.setattr(crls, "is_due", is_due_then_wait)
    served: list[int] = []
    failures: list[BaseException] = []

    def fetch() -> None:
        try:
            served.append(crls.current(ca, at=later).number)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=fetch) for _ in range(FETCHES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert served == [first.number + 1] * FETCHES
    assert ca.crls.count() == 2


@pytest.mark.parametrize("refresh_before", [timedelta(days=7), timedelta(days=8)])
def test_a_crl_renewed_before_it_is_signed_is_a_start_up_error(settings: Any,
                                                               refresh_before) -> None:
    settings.HISP_CRL_VALIDITY = timedelta(days=7)
    settings.HISP_CRL_REFRESH_BEFORE = refresh_before
    (error,) = crl_timing_check()
    assert error.id == "hisp.E002"
    assert "HISP_CRL_REFRESH_BEFORE" in error.msg and "HISP_CRL_VALIDITY" in error.msg


def test_the_default_crl_timing_passes(settings: Any) -> None:
    assert crl_timing_check() == []
