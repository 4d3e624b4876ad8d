"""Fixtures for the mail-flow tests: real aiosmtpd listeners on free loopback ports, hosted
domains and users, and (in ``worker.py``) a real Celery worker process.

Databases. The SMTP listeners run their database work on their own threads, and the worker is
another process, so these tests use ``transactional_db`` (committed rows, visible to every
connection). The worker subprocess is pointed at the very database pytest-django created for this
run (``connection.settings_dict["NAME"]``: ``test_<name>``, per xdist worker too), which only
PostgreSQL can share between processes: the worker tests need DATABASE_URL to be a postgres://
URL (``bin/test`` sets it; locally: DATABASE_URL=postgres://postgres@127.0.0.1:5432/hisp_mail)
and are skipped otherwise (a failure under CI=true).

Broker. The worker tests use the shared Redis (tests/support/services.py) with a queue name
unique to the test run, so concurrent runs on this machine never take each other's tasks; the
durability test starts a private redis-server it may restart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache

from hisp.models import Address, AddressGrant, Domain
from hisp.smtp import server
from hisp.smtp.protocol import HispController
from tests.hisp.mail.exchangers import exchanger  # noqa: F401 (a fixture for the MX tests)
from tests.hisp.mail.world import HOSTED, World, make_world
from tests.support.services import free_port


@pytest.fixture(autouse=True)
def _fast_keys(settings: pytest.FixtureRequest) -> None:
    settings.HISP_CA_KEY_BITS = 2048  # type: ignore[attr-defined]


@pytest.fixture
def hosted(transactional_db: None) -> Domain:
    """A hosted domain without keys (enough for the SMTP rules)."""
    return Domain.objects.create(name=HOSTED)


@pytest.fixture
def alice(hosted: Domain) -> Address:
    user = get_user_model().objects.create_user(
        username=f"alice@{HOSTED}", password="correct horse battery"
    )
    address = Address.objects.create(address=f"alice@{HOSTED}", domain=hosted)
    AddressGrant.objects.create(user=user, address=address)
    return address


@pytest.fixture
def bob(hosted: Domain) -> Address:
    return Address.objects.create(address=f"bob@{HOSTED}", domain=hosted)


def _start(factory, **overrides) -> Iterator[HispController]:
    controller = factory(bind="127.0.0.1", port=free_port(), **overrides)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def backbone(transactional_db: None) -> Iterator[HispController]:
    yield from _start(server.backbone)


@pytest.fixture
def submission(transactional_db: None) -> Iterator[HispController]:
    cache.clear()  # the AUTH failure counters live in the cache
    yield from _start(server.submission)


@pytest.fixture
def world(db: None, tmp_path: Path) -> Iterator[World]:
    with make_world(tmp_path) as made:
        yield made


@pytest.fixture
def no_idle_egress_sessions() -> Iterator[None]:
    """No SMTP session that another test in this process left idle in egress's cache is
    reused, and none this test opens is left behind (egress tests ask for it with
    ``pytestmark = pytest.mark.usefixtures(...)``)."""
    from hisp import egress

    egress.close_connections()
    yield
    egress.close_connections()
