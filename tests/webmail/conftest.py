from __future__ import annotations

import pytest
from django.test import Client

from tests.webmail.personas import Persona, make_persona, signed_in


@pytest.fixture
def alice(db: None) -> Persona:
    return make_persona("alice", "clinic.example")


@pytest.fixture
def bob(db: None) -> Persona:
    return make_persona("bob", "clinic.example")


@pytest.fixture
def charlie(db: None) -> Persona:
    return make_persona("charlie", "elsewhere.example")


@pytest.fixture
def alice_client(alice: Persona) -> Client:
    return signed_in(alice)


@pytest.fixture
def charlie_client(charlie: Persona) -> Client:
    return signed_in(charlie)
