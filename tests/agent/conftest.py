"""Fixtures for the S/MIME tests: one session-wide test PKI with two Direct domains.

alice@hisp.test (our sender, address-bound) writes to bob@partner.test (address-bound) and to
carol@partner.test, who only has the domain-bound certificate of partner.test.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from agent.types import AlgorithmPolicy, Binding, Environment, Identity
from tests.agent.pki import (
    CA,
    KeyPool,
    MemoryAnchors,
    MemoryIssuers,
    MemoryKeys,
    MemoryResolver,
    MemoryRevocation,
    environment,
    identity,
    make_ca,
    make_leaf,
    write_key,
    write_pem,
)


@dataclass
class World:
    pool: KeyPool
    root: CA
    intermediate: CA
    alice: Identity  # alice@hisp.test, address-bound, dual use
    hisp_domain: Identity  # hisp.test, domain-bound
    bob: Identity  # bob@partner.test, address-bound
    partner_domain: Identity  # partner.test, domain-bound (carol has no certificate of her own)
    keys: MemoryKeys
    resolver: MemoryResolver
    anchors: MemoryAnchors
    revocation: MemoryRevocation

    def env(self, *, policy: AlgorithmPolicy | None = None, **changes: object) -> Environment:
        env = environment(
            self.keys,
            self.resolver,
            self.anchors,
            revocation=self.revocation,
            policy=policy,
            issuers=MemoryIssuers([self.intermediate.certificate]),
        )
        return replace(env, **changes) if changes else env  # type: ignore[arg-type]

    def leaf(
        self,
        *,
        email: str | None = None,
        dns: str | None = None,
        bits: int = 2048,
        slot: int = 0,
        usage: str = "both",
        issuer: CA | None = None,
        **kw: object,
    ) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        key = self.pool.get(bits, slot)
        cert = make_leaf(issuer or self.intermediate, key, email=email, dns=dns, usage=usage, **kw)  # type: ignore[arg-type]
        return cert, key

    def ident(
        self, cert: x509.Certificate, key: rsa.RSAPrivateKey, binding: Binding = Binding.ADDRESS
    ) -> Identity:
        return identity(cert, key, (self.intermediate.certificate,), binding)


@pytest.fixture(scope="session")
def pool() -> KeyPool:
    return KeyPool()


def build_world(pool: KeyPool) -> World:
    root = make_ca("Test Root", pool.get(2048, 90))
    intermediate = make_ca("Test Intermediate", pool.get(2048, 91), root)
    chain = (intermediate.certificate,)

    def leaf(slot: int, **kw: str) -> Identity:
        key = pool.get(2048, slot)
        binding = Binding.DOMAIN if "dns" in kw else Binding.ADDRESS
        return identity(make_leaf(intermediate, key, **kw), key, chain, binding)  # type: ignore[arg-type]

    alice = leaf(1, email="alice@hisp.test")
    hisp_domain = leaf(2, dns="hisp.test")
    bob = leaf(3, email="bob@partner.test")
    partner_domain = leaf(4, dns="partner.test")
    keys = MemoryKeys()
    keys.add("alice@hisp.test", alice)
    keys.add("hisp.test", hisp_domain)
    keys.add("bob@partner.test", bob)
    keys.add("partner.test", partner_domain)
    resolver = MemoryResolver(
        by_address={
            "alice@hisp.test": [alice.certificate],
            "bob@partner.test": [bob.certificate],
        },
        by_domain={
            "hisp.test": [hisp_domain.certificate],
            "partner.test": [partner_domain.certificate],
        },
    )
    anchors = MemoryAnchors(
        incoming={"hisp.test": [root.certificate], "partner.test": [root.certificate]},
        outgoing={"hisp.test": [root.certificate], "partner.test": [root.certificate]},
    )
    return World(
        pool,
        root,
        intermediate,
        alice,
        hisp_domain,
        bob,
        partner_domain,
        keys,
        resolver,
        anchors,
        MemoryRevocation(),
    )


@pytest.fixture(scope="session")
def world(pool: KeyPool) -> World:
    return build_world(pool)


@dataclass
class Files:
    """PEM files for driving `openssl cms` against the world."""

    anchor: Path
    chain: Path
    alice_cert: Path
    alice_key: Path
    bob_cert: Path
    bob_key: Path
    partner_cert: Path
    partner_key: Path


@pytest.fixture(scope="session")
def files(world: World, tmp_path_factory: pytest.TempPathFactory) -> Files:
    d = tmp_path_factory.mktemp("pki")
    return Files(
        anchor=write_pem(d / "anchor.pem", world.root.certificate),
        chain=write_pem(d / "chain.pem", world.intermediate.certificate),
        alice_cert=write_pem(d / "alice.pem", world.alice.certificate),
        alice_key=write_key(d / "alice.key", world.alice.private_key()),
        bob_cert=write_pem(d / "bob.pem", world.bob.certificate),
        bob_key=write_key(d / "bob.key", world.bob.private_key()),
        partner_cert=write_pem(d / "partner.pem", world.partner_domain.certificate),
        partner_key=write_key(d / "partner.key", world.partner_domain.private_key()),
    )
