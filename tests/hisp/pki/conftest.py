"""Fixtures for the CA, key custody and trust tests: a provider domain with alice and bob."""

from __future__ import annotations

from pathlib import Path

import pytest

from hisp.models import Address, Domain
from hisp.services import identity

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "bundles"


@pytest.fixture(autouse=True)
def _fast_keys(settings: pytest.FixtureRequest) -> None:
    # 2048-bit CA keys keep key generation fast; profiles are otherwise the production ones.
    settings.HISP_CA_KEY_BITS = 2048  # type: ignore[attr-defined]


@pytest.fixture
def provider(db: None) -> Domain:
    return identity.add_domain("hospital.example.org")


@pytest.fixture
def alice(provider: Domain) -> Address:
    return identity.add_address(
        "alice@hospital.example.org", name="Alice Adams", password="a long passphrase 1",
        address_cert=True,
    )


@pytest.fixture
def bob(provider: Domain) -> Address:
    return identity.add_address("bob@hospital.example.org", name="Bob Brown")
