"""Real servers for discovery: one named, three slapd, one HTTP server, and a test PKI."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from agent.discovery import DiscoveryResolver
from agent.types import Binding, Candidates
from tests.agent.trust.pki import NOW, Authority, Server, authority, issue
from tests.support.bind import named  # noqa: F401 - session fixture
from tests.support.slapd import SlapdServer, slapd_server

SUFFIX = "dc=hisp,dc=test"


@dataclass(frozen=True)
class Pki:
    root: Authority
    key: rsa.RSAPrivateKey  # shared by every leaf: key generation is the slow part

    def leaf(
        self,
        *,
        address: str | None = None,
        domain: str | None = None,
        expired: bool = False,
        issuer: Authority | None = None,
        key: rsa.RSAPrivateKey | None = None,
        **extra: object,
    ) -> x509.Certificate:
        dates = (
            {"not_before": NOW - timedelta(days=400), "not_after": NOW - timedelta(days=1)}
            if expired
            else {}
        )
        return issue(
            address or domain or "leaf",
            key=key or self.key,
            issuer=issuer or self.root,
            emails=[address] if address else [],
            dns=[domain] if domain else [],
            **dates,  # type: ignore[arg-type]
            **extra,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="session")
def pki() -> Pki:
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return Pki(authority("DCDT Test Root", key=root_key), leaf_key)


@pytest.fixture(scope="session")
def ldap_servers() -> Iterator[tuple[SlapdServer, SlapdServer, SlapdServer]]:
    """Three directories, as DCDT uses for its priority, weight and fail-over cases."""
    with slapd_server((SUFFIX,)) as one, slapd_server((SUFFIX,)) as two:
        with slapd_server((SUFFIX,)) as three:
            yield one, two, three


@pytest.fixture(scope="session")
def http() -> Iterator[Server]:
    server = Server()
    yield server
    server.close()


class Recording:
    """Wraps a resolver and records which levels the caller actually pulled."""

    def __init__(self, inner: DiscoveryResolver) -> None:
        self.inner = inner
        self.pulled: list[tuple[str, Binding]] = []
        self.levels: list[Candidates] = []

    def candidates(self, address: str) -> Iterator[Candidates]:
        for level in self.inner.candidates(address):
            self.pulled.append((level.source, level.binding))
            self.levels.append(level)
            yield level


def make_resolver(named_address: str, *, seed: int = 0, **kw: object) -> DiscoveryResolver:
    return DiscoveryResolver.build(
        nameservers=[named_address],
        timeout=kw.pop("timeout", 5.0),  # type: ignore[arg-type]
        connect_timeout=kw.pop("connect_timeout", 1.0),  # type: ignore[arg-type]
        rng=random.Random(seed),
        allow_private_networks=True,  # the test HTTP server is on loopback
        ldap_allow_private_networks=kw.pop("ldap_allow_private_networks", True),  # so is slapd
        **kw,  # type: ignore[arg-type]
    )
