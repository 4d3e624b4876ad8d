"""alice and bob are clinicians at clinic.example; charlie is an outsider with his own mailbox
elsewhere. Shared by the webmail view tests and the end-to-end tests."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from hisp.models import Address
from tests.factories import AddressFactory, AddressGrantFactory, DomainFactory, UserFactory

PASSWORD = "correct horse battery"


@dataclass
class Persona:
    user: User
    address: Address
    device: TOTPDevice


def make_persona(username: str, domain: str) -> Persona:
    user = UserFactory(username=username)
    address = AddressFactory(address=f"{username}@{domain}", domain=DomainFactory(name=domain),
                             display_name=username.title())
    AddressGrantFactory(user=user, address=address)
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    return Persona(user=user, address=address, device=device)


def signed_in(persona: Persona) -> Client:
    """A client past both factors (what otp_verify leaves in the session)."""
    client = Client()
    client.force_login(persona.user, backend="django.contrib.auth.backends.ModelBackend")
    session = client.session
    session["otp_device_id"] = persona.device.persistent_id
    session.save()
    return client
