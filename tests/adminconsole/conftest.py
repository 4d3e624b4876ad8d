"""Console personas: sam is verified staff holding every role, una is staff without a second
factor yet, charlie is a signed-in non-staff user; alice owns a mailbox, bob may become her
delegate. A staff user made with make_user holds every role unless ``roles`` says otherwise."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from adminconsole.roles import Role, role_groups
from hisp.models import Address, AddressGrant, Certificate, Domain
from tests.adminconsole import pkitools
from tests.adminconsole.sessions import verified_client
from tests.adminconsole.world import build

PASSWORD = "correct horse battery staple"


@pytest.fixture
def make_user(db: None) -> Callable[..., object]:
    def make(username: str, *, staff: bool = False, roles: Iterable[Role] | None = None) -> object:
        user = get_user_model().objects.create_user(
            username=username, password=PASSWORD, is_staff=staff
        )
        if roles is None:
            roles = tuple(Role) if staff else ()
        user.groups.set(role_groups(roles))
        return user

    return make


@pytest.fixture
def sam(make_user: Callable[..., object]) -> object:
    return make_user("sam", staff=True)


@pytest.fixture
def staff_client(sam: object) -> Client:
    return verified_client(sam)


@pytest.fixture
def unverified_staff_client(make_user: Callable[..., object]) -> Client:
    una = make_user("una", staff=True)
    TOTPDevice.objects.create(user=una, name="phone", confirmed=True)
    client = Client()
    client.force_login(una)
    return client


@pytest.fixture
def outsider_client(make_user: Callable[..., object]) -> Client:
    # charlie even has a verified device: being non-staff is what keeps him out.
    return verified_client(make_user("charlie"))


@pytest.fixture
def domain(db: None) -> Domain:
    ca = pkitools.store(pkitools.make_ca("Example Direct CA"), source=Certificate.Source.HOSTED)
    found = Domain.objects.create(name="direct.example.org", issuing_ca=ca)
    Certificate.objects.filter(pk=ca.pk).update(domain=found)
    return found


@pytest.fixture
def alice(make_user: Callable[..., object]) -> object:
    return make_user("alice")


@pytest.fixture
def bob(make_user: Callable[..., object]) -> object:
    return make_user("bob")


@pytest.fixture
def alice_address(domain: Domain, alice: object) -> Address:
    address = Address.objects.create(
        address="alice@direct.example.org",
        domain=domain,
        display_name="Dr Alice Example",
        status=Address.Status.PENDING,
    )
    AddressGrant.objects.create(user=alice, address=address, role=AddressGrant.Role.OWNER)
    return address


@pytest.fixture
def world(domain: Domain, alice_address: Address, bob: object) -> object:
    return build(domain, alice_address, bob)
