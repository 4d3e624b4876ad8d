"""The postmaster mailbox in the console: it cannot be suspended or disabled (RFC 5321 section
4.5.1), and staff read it by granting themselves access like any delegate."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse

from adminconsole import services
from hisp.models import Address, AddressGrant, AuditEvent
from hisp.services import identity


@pytest.fixture(autouse=True)
def _fast_keys(settings: Any) -> None:
    settings.HISP_CA_KEY_BITS = 2048


@pytest.fixture
def postmaster(db: None) -> Address:
    domain = identity.add_domain("clinic.example.org")
    return Address.objects.get(domain=domain, address="postmaster@clinic.example.org")


def _status(client: Client, address: Address, transition: str) -> Any:
    url = reverse("adminconsole:address-status", kwargs={"pk": address.pk})
    # Reason and tick given, so that only the postmaster rule can refuse.
    return client.post(url, {"transition": transition, "note": "tidying up", "confirm": "on"})


@pytest.mark.parametrize("transition", ["disable", "suspend"])
def test_the_postmaster_cannot_be_switched_off_from_the_console(
    staff_client: Client, postmaster: Address, transition: str
) -> None:
    response = _status(staff_client, postmaster, transition)
    assert response.status_code == 400
    # The service's own words, shown beside the form (not the page's standing hint).
    assert b"mailbox, which RFC 5321 requires to accept mail: it stays active" in response.content
    postmaster.refresh_from_db()
    assert postmaster.status == Address.Status.ACTIVE
    assert not AuditEvent.objects.filter(action=f"address.{transition}").exists()


def test_the_service_refuses_with_a_stable_code(sam: Any, postmaster: Address) -> None:
    request = RequestFactory().post("/")
    request.user = sam
    with pytest.raises(services.StaffActionError) as refused:
        services.change_status(request=request, address=postmaster, transition="disable")
    assert refused.value.code == "postmaster_stays_active"
    assert Address.objects.get(pk=postmaster.pk).status == Address.Status.ACTIVE


def test_other_addresses_are_still_disabled_as_before(
    staff_client: Client, postmaster: Address
) -> None:
    desk = identity.add_address("desk@clinic.example.org")
    assert _status(staff_client, desk, "disable").status_code == 302
    desk.refresh_from_db()
    assert desk.status == Address.Status.DISABLED


def test_the_postmaster_page_says_why_and_staff_grant_themselves_access(
    staff_client: Client, postmaster: Address, sam: Any
) -> None:
    page = staff_client.get(reverse("adminconsole:address-detail", kwargs={"pk": postmaster.pk}))
    assert page.status_code == 200
    assert b"postmaster mailbox" in page.content
    url = reverse("adminconsole:address-grant", kwargs={"pk": postmaster.pk})
    assert staff_client.post(url, {"username": "sam", "role": "read"}).status_code == 302
    assert AddressGrant.objects.get(address=postmaster, user=sam).role == AddressGrant.Role.READ
    assert AuditEvent.objects.get(action="address.grant").detail["user"] == "sam"


def test_an_outsider_cannot_touch_the_postmaster(
    outsider_client: Client, postmaster: Address
) -> None:
    assert _status(outsider_client, postmaster, "disable").status_code == 404
    assert Address.objects.get(pk=postmaster.pk).status == Address.Status.ACTIVE
