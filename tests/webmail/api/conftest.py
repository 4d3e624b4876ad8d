"""Callers of the mail API: alice, bob and charlie (tests/webmail/personas.py), each with an
app password, as a program they set up in the webmail's settings would hold one."""

from __future__ import annotations

import base64

import pytest
from django.test import Client

from hisp.models import AppPassword
from hisp.smtp.credentials import app_password_hash
from tests.webmail.personas import Persona


def basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


def app_password_for(persona: Persona) -> str:
    clear = f"{persona.user.username}-ehr-app-password"
    AppPassword.objects.create(user=persona.user, name="EHR", password_hash=app_password_hash(clear))
    return clear


def api_client(persona: Persona) -> Client:
    """A client that sends the persona's app password with every request (and no cookie)."""
    return Client(HTTP_AUTHORIZATION=basic(persona.user.username, app_password_for(persona)))


@pytest.fixture
def alice_api(alice: Persona) -> Client:
    return api_client(alice)


@pytest.fixture
def bob_api(bob: Persona) -> Client:
    return api_client(bob)


@pytest.fixture
def charlie_api(charlie: Persona) -> Client:
    return api_client(charlie)
