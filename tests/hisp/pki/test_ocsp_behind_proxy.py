"""The OCSP responder's per-client signing budget, behind a trusted reverse proxy
(HISP_TRUSTED_PROXIES): each client X-Forwarded-For names has a budget of its own, and a client
reaching the responder directly cannot buy new budgets by writing the header itself. The budget
is counted in the shared cache production uses (Redis)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client

from hisp.ca import ocsp as responder
from hisp.models import Address
from hisp.proxies import parse_networks
from tests.hisp.pki.test_ocsp_cache import _leaf, _nonce_of, _request
from tests.support.services import redis_url

PROXY = "10.0.0.2"
STRANGER = "198.51.100.7"


@pytest.fixture
def behind_proxy(settings: Any) -> None:
    settings.HISP_TRUSTED_PROXIES = parse_networks(PROXY)
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url(),
        }
    }
    cache.clear()  # this run's own Redis database: budgets spent by an earlier run are gone
    yield
    cache.clear()


def _echoed(leaf: Any, nonce: bytes, **extra: str) -> bool:
    response = Client().post(
        "/pki/ocsp", _request(leaf, nonce=nonce), content_type="application/ocsp-request", **extra
    )
    assert response.status_code == 200
    return _nonce_of(response.content) == nonce


def test_each_client_behind_the_proxy_has_its_own_budget(
    alice: Address, behind_proxy: None
) -> None:
    leaf = _leaf(alice)
    first = {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    assert all(_echoed(leaf, bytes([n]) * 16, **first) for n in range(responder.CLIENT_BUDGET))
    assert not _echoed(leaf, b"x" * 16, **first)
    # Another client of the same proxy: its budget is untouched.
    assert _echoed(
        leaf, b"y" * 16, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.20, 10.0.0.2"
    )


def test_a_client_naming_itself_anew_in_each_request_spends_one_budget(
    alice: Address, behind_proxy: None
) -> None:
    leaf = _leaf(alice)
    for n in range(responder.CLIENT_BUDGET):
        assert _echoed(
            leaf, bytes([n]) * 16, REMOTE_ADDR=STRANGER, HTTP_X_FORWARDED_FOR=f"203.0.113.{n + 1}"
        )
    assert not _echoed(leaf, b"x" * 16, REMOTE_ADDR=STRANGER, HTTP_X_FORWARDED_FOR="203.0.113.200")
    # Through the proxy the header names the client: as many clients, as many budgets.
    for n in range(responder.CLIENT_BUDGET + 1):
        assert _echoed(
            leaf, bytes([n]) * 16, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=f"203.0.113.{n + 1}"
        )
