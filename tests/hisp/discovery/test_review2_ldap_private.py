"""A partner's ``_ldap._tcp`` SRV record is outside data, like an IPKIX URL: unless the operator
allows private networks (``HISP_FETCH_ALLOW_PRIVATE_NETWORKS``), the HISP never connects to a
directory on loopback or a private address, whatever the partner's DNS says."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from datetime import timedelta

import pytest

from agent.errors import AgentError
from agent.types import Candidates
from hisp.discovery import remote_resolver
from tests.support.bind import BindServer, Record, srv_record


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP port on loopback that counts who connects (never answers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.settimeout(0)
        yield sock


def connections(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def ldap_levels(named: BindServer, port: int) -> list[Candidates]:
    domain = f"p{secrets.token_hex(4)}.inside.test"  # the discovery cache outlives a test
    named.serve_zone(
        domain, [srv_record("_ldap._tcp", "dir", port), Record("dir", "A", "127.0.0.1")]
    )
    levels: list[Candidates] = []
    with pytest.raises(AgentError):  # the level failed: the agent would retry later
        for level in remote_resolver().candidates(f"bob@{domain}"):
            levels.append(level)
    return [level for level in levels if level.source == "ldap"]


def test_an_srv_target_on_loopback_is_never_contacted(
    named: BindServer, listener: socket.socket, settings: pytest.FixtureRequest
) -> None:
    settings.HISP_DNS_SERVERS = [named.address]  # type: ignore[attr-defined]
    settings.HISP_FETCH_ALLOW_PRIVATE_NETWORKS = False  # type: ignore[attr-defined]
    ldap = ldap_levels(named, listener.getsockname()[1])
    assert connections(listener) == 0
    assert ldap and all(level.error and "not a public address" in level.error for level in ldap)


def test_private_networks_allowed_by_the_operator_are_contacted(
    named: BindServer, listener: socket.socket, settings: pytest.FixtureRequest
) -> None:
    settings.HISP_DNS_SERVERS = [named.address]  # type: ignore[attr-defined]
    settings.HISP_FETCH_ALLOW_PRIVATE_NETWORKS = True  # type: ignore[attr-defined]
    settings.HISP_DISCOVERY_TIMEOUT = timedelta(seconds=1)  # type: ignore[attr-defined]
    ldap_levels(named, listener.getsockname()[1])
    assert connections(listener) >= 1
