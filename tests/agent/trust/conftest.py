from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from agent.trust import HttpIssuerFetcher, HttpRevocationChecker, StaticTrustStore
from agent.types import AlgorithmPolicy, Environment
from tests.agent.trust.pki import Authority, NoKeys, Server, StaticResolver, authority


@dataclass(frozen=True)
class Keys:
    root: rsa.RSAPrivateKey
    intermediate: rsa.RSAPrivateKey
    leaf: rsa.RSAPrivateKey
    other: rsa.RSAPrivateKey
    weak: rsa.RSAPrivateKey  # 1024 bits


@pytest.fixture(scope="session")
def keys() -> Keys:
    # Key generation is the slow part: a handful of keys serve every certificate in the session.
    def make(bits: int) -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)

    return Keys(make(2048), make(2048), make(2048), make(2048), make(1024))


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    httpd = Server()
    yield httpd
    httpd.close()


@pytest.fixture
def root(keys: Keys) -> Authority:
    return authority("Test Root CA", key=keys.root)


@pytest.fixture
def intermediate(keys: Keys, root: Authority) -> Authority:
    return authority("Test Intermediate CA", key=keys.intermediate, issuer=root)


@pytest.fixture
def make_env() -> Callable[..., Environment]:
    def build(
        *,
        incoming: dict[str, list[object]] | None = None,
        outgoing: dict[str, list[object]] | None = None,
        resolver: StaticResolver | None = None,
        policy: AlgorithmPolicy | None = None,
        timeout: float = 2.0,
    ) -> Environment:
        return Environment(
            keys=NoKeys(),
            certificates=resolver or StaticResolver(),
            anchors=StaticTrustStore(incoming=incoming or {}, outgoing=outgoing or {}),  # type: ignore[arg-type]
            revocation=HttpRevocationChecker(
                allow_private_networks=True, timeout=timeout, failure_ttl=0
            ),
            issuers=HttpIssuerFetcher(allow_private_networks=True, timeout=timeout),
            policy=policy or AlgorithmPolicy(),
        )

    return build
