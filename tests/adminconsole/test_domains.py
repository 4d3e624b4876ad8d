from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from hisp.models import AuditEvent, Certificate, Domain
from tests.adminconsole.sessions import verified_client

ADD = "adminconsole:domain-add"


def test_staff_adds_a_provider_domain_with_its_ca_and_certificate(
    staff_client: Client, sam: object
) -> None:
    response = staff_client.post(reverse(ADD), {"name": "Clinic.Example.COM", "kind": "provider"})
    domain = Domain.objects.get(name="clinic.example.com")
    assert response.status_code == 302
    assert response["Location"] == reverse("adminconsole:domain-detail", kwargs={"pk": domain.pk})
    assert domain.kind == Domain.Kind.PROVIDER
    assert domain.issuing_ca is not None
    assert Certificate.objects.filter(domain=domain, binding=Certificate.Binding.DOMAIN).exists()
    event = AuditEvent.objects.get(action="domain.add", object_id=str(domain.pk))
    assert event.actor == sam
    page = staff_client.get(response["Location"])
    assert page.status_code == 200
    assert b"PRIVATE KEY" not in page.content


def test_staff_adds_a_patient_portal_domain_with_a_ca_of_its_own(staff_client: Client) -> None:
    staff_client.post(reverse(ADD), {"name": "clinic.example.com", "kind": "provider"})
    staff_client.post(reverse(ADD), {"name": "patients.example.com", "kind": "portal"})
    provider = Domain.objects.get(name="clinic.example.com")
    portal = Domain.objects.get(name="patients.example.com")
    assert portal.kind == Domain.Kind.PATIENT_PORTAL
    assert portal.issuing_ca_id != provider.issuing_ca_id


@pytest.mark.parametrize(
    "name",
    [
        "<script>alert(1)</script>.example.com",
        "a" * 300 + ".example.com",
        "nodots",
        "-bad-.example.com",
        "",
    ],
)
def test_add_domain_rejects_hostile_names_with_a_form_error(staff_client: Client, name: str) -> None:
    response = staff_client.post(reverse(ADD), {"name": name, "kind": "provider"})
    assert response.status_code == 400
    assert response.context["form"].errors["name"]
    assert b"<script>alert" not in response.content
    assert not Domain.objects.exists()
    assert not AuditEvent.objects.filter(action="domain.add").exists()


def test_add_domain_rejects_an_existing_domain(staff_client: Client, domain: Domain) -> None:
    response = staff_client.post(reverse(ADD), {"name": domain.name, "kind": "provider"})
    assert response.status_code == 400
    assert "already" in str(response.context["form"].errors["name"])


def test_add_domain_rejects_an_unknown_kind(staff_client: Client) -> None:
    response = staff_client.post(reverse(ADD), {"name": "x.example.com", "kind": "evil"})
    assert response.status_code == 400
    assert response.context["form"].errors["kind"]


def test_add_domain_needs_the_csrf_token(sam: object) -> None:
    client = verified_client(sam)
    client.handler.enforce_csrf_checks = True
    response = client.post(reverse(ADD), {"name": "x.example.com", "kind": "provider"})
    assert response.status_code == 403
    assert not Domain.objects.exists()
