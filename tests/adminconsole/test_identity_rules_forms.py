"""The console's domain and address fields hold identity's rule and give identity's message:
its own pattern and Django's validate_email let through what the service then refused (with
another message, after the form had passed) and refused internationalised names it takes."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from adminconsole.forms.identity import AddressAddForm, DomainAddForm
from adminconsole.forms.operations import RouteForm
from hisp.models import Address, Domain
from hisp.services import identity


@pytest.fixture(autouse=True)
def _fast_keys(settings: Any) -> None:
    settings.HISP_CA_KEY_BITS = 2048


def _refusal(normalise: Any, value: str) -> str:
    with pytest.raises(identity.IdentityError) as refused:
        normalise(value)
    return str(refused.value)


# xn--zz is no A-label and ab--cd a reserved label (RFC 5890 2.3.1): the old pattern took both.
@pytest.mark.parametrize("name", ["xn--zz.example.org", "ab--cd.example.org", "xn--n3h.example"])
def test_domain_fields_refuse_what_identity_refuses_in_its_words(db: None, name: str) -> None:
    expected = _refusal(identity.normalise_domain, name)
    add = DomainAddForm({"name": name, "kind": Domain.Kind.PROVIDER})
    route = RouteForm({"domain": name, "port": 25})
    assert not add.is_valid()
    assert not route.is_valid()
    assert add.errors["name"] == [expected]
    assert route.errors["domain"] == [expected]


@pytest.mark.parametrize(
    ("name", "stored"),
    [("Bücher.Example", "xn--bcher-kva.example"), ("faß.example", "xn--fa-hia.example")],
)
def test_domain_field_takes_an_internationalised_name_as_identity_stores_it(
    db: None, name: str, stored: str
) -> None:
    form = DomainAddForm({"name": name, "kind": Domain.Kind.PROVIDER})
    assert form.is_valid(), form.errors
    assert form.cleaned_data["name"] == stored


def test_staff_add_an_internationalised_domain(staff_client: Client) -> None:
    response = staff_client.post(reverse("adminconsole:domain-add"),
                                 {"name": "faß.example", "kind": Domain.Kind.PROVIDER})
    assert response.status_code == 302
    assert Domain.objects.filter(name="xn--fa-hia.example").exists()


@pytest.fixture
def hosted(db: None) -> Domain:
    return identity.add_domain("xn--bcher-kva.example")


@pytest.mark.parametrize(
    "address",
    [
        '"front desk"@xn--bcher-kva.example',  # a quoted local part: no hosted address has one
        "d" * 64 + "@xn--bcher-kva.example",  # one label too long for the address-bound CERT
    ],
)
def test_address_form_refuses_what_identity_refuses_in_its_words(
    hosted: Domain, address: str
) -> None:
    expected = _refusal(identity.normalise_address, address)
    form = AddressAddForm({"address": address, "name": "Desk"})
    assert not form.is_valid()
    assert form.errors["address"] == [expected]


def test_address_form_finds_the_hosted_domain_typed_in_unicode(hosted: Domain) -> None:
    form = AddressAddForm({"address": "Desk@Bücher.example", "name": "Desk"})
    assert form.is_valid(), form.errors
    assert form.cleaned_data["address"] == "Desk@xn--bcher-kva.example"


def test_staff_add_an_address_on_a_domain_typed_in_unicode(
    staff_client: Client, hosted: Domain
) -> None:
    response = staff_client.post(reverse("adminconsole:address-add"),
                                 {"address": "desk@bücher.example", "name": "Desk"})
    assert response.status_code == 302
    assert Address.objects.get(address="desk@xn--bcher-kva.example").domain == hosted
