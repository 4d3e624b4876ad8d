from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from adminconsole.models import ProofingRecord
from hisp.models import Address, AddressGrant, AuditEvent

PROOFING = {
    "proofed_by": "Pat Registrar",
    "method": "in_person_id",
    "evidence_reference": "CASE-2026-0042",
    "proofed_on": "2026-11-20",
}


def _url(name: str, address: Address, **extra: int) -> str:
    return reverse(f"adminconsole:{name}", kwargs={"pk": address.pk, **extra})


def _prove(client: Client, address: Address) -> None:
    assert client.post(_url("address-proofing", address), PROOFING).status_code == 302


def test_address_list_filters_by_status(staff_client: Client, alice_address: Address, domain: Any) -> None:
    Address.objects.create(address="desk@direct.example.org", domain=domain, status="active")
    response = staff_client.get(reverse("adminconsole:address-list"), {"status": "pending"})
    addresses = [a.address for a in response.context["page"]]
    assert addresses == ["alice@direct.example.org"]


def test_address_list_ignores_an_invalid_filter_without_error(
    staff_client: Client, alice_address: Address
) -> None:
    response = staff_client.get(reverse("adminconsole:address-list"), {"status": "<script>"})
    assert response.status_code == 200
    assert response.context["form"].errors["status"]
    assert b"<script>" not in response.content


def test_staff_records_proofing_and_it_is_audited(
    staff_client: Client, alice_address: Address, sam: Any
) -> None:
    _prove(staff_client, alice_address)
    record = ProofingRecord.objects.get(address=alice_address)
    assert record.recorded_by == sam
    assert record.method == ProofingRecord.Method.IN_PERSON_GOVERNMENT_ID
    event = AuditEvent.objects.get(action="address.proofing_recorded")
    assert event.object_id == str(alice_address.pk)
    assert event.detail["evidence_reference"] == "CASE-2026-0042"
    assert event.detail["proofing_record"] == record.pk


@pytest.mark.parametrize(
    "field,value",
    [
        ("proofed_by", "<script>alert(1)</script>"),
        ("evidence_reference", "x" * 201),
        ("method", "trust-me"),
        ("proofed_on", "not a date"),
        ("proofed_by", ""),
    ],
)
def test_proofing_rejects_hostile_input_with_a_form_error(
    staff_client: Client, alice_address: Address, field: str, value: str
) -> None:
    response = staff_client.post(_url("address-proofing", alice_address), {**PROOFING, field: value})
    assert response.status_code == 400
    assert response.context["proofing_form"].errors[field]
    assert b"<script>alert" not in response.content
    assert not ProofingRecord.objects.exists()


def test_proofing_rejects_a_future_date(staff_client: Client, alice_address: Address) -> None:
    tomorrow = (timezone.localdate() + timedelta(days=1)).isoformat()
    response = staff_client.post(
        _url("address-proofing", alice_address), {**PROOFING, "proofed_on": tomorrow}
    )
    assert response.status_code == 400
    assert "future" in str(response.context["proofing_form"].errors["proofed_on"])


def test_activation_without_proofing_is_refused(staff_client: Client, alice_address: Address) -> None:
    response = staff_client.post(_url("address-status", alice_address), {"transition": "activate"})
    assert response.status_code == 400
    assert "proofed" in str(response.context["status_form"].non_field_errors())
    alice_address.refresh_from_db()
    assert alice_address.status == Address.Status.PENDING
    assert not AuditEvent.objects.filter(action="address.activate").exists()


def test_activation_after_proofing_is_audited_with_the_proofing_record(
    staff_client: Client, alice_address: Address
) -> None:
    _prove(staff_client, alice_address)
    response = staff_client.post(
        _url("address-status", alice_address), {"transition": "activate", "note": "badge seen"}
    )
    assert response.status_code == 302
    alice_address.refresh_from_db()
    assert alice_address.status == Address.Status.ACTIVE
    event = AuditEvent.objects.get(action="address.activate")
    assert event.detail["from"] == "pending"
    assert event.detail["to"] == "active"
    assert event.detail["method"] == "in_person_id"
    assert event.detail["proofed_by"] == "Pat Registrar"
    assert event.detail["note"] == "badge seen"


# What the confirmation page of a suspension or disabling posts (activation needs neither).
CONFIRMED = {"note": "left the practice", "confirm": "on"}


def test_suspend_then_reactivate_then_disable(staff_client: Client, alice_address: Address) -> None:
    _prove(staff_client, alice_address)
    for transition, expected in [
        ("activate", "active"),
        ("suspend", "suspended"),
        ("activate", "active"),
        ("disable", "disabled"),
    ]:
        extra = CONFIRMED if transition != "activate" else {}
        staff_client.post(_url("address-status", alice_address), {"transition": transition, **extra})
        alice_address.refresh_from_db()
        assert alice_address.status == expected
    assert AuditEvent.objects.filter(action__startswith="address.").exclude(
        action="address.proofing_recorded"
    ).count() == 4


def test_a_disabled_address_cannot_be_reactivated(staff_client: Client, alice_address: Address) -> None:
    _prove(staff_client, alice_address)
    staff_client.post(_url("address-status", alice_address), {"transition": "disable", **CONFIRMED})
    response = staff_client.post(_url("address-status", alice_address), {"transition": "activate"})
    assert response.status_code == 400
    assert "cannot activate" in str(response.context["status_form"].non_field_errors())
    alice_address.refresh_from_db()
    assert alice_address.status == Address.Status.DISABLED


def test_suspending_a_pending_address_is_refused(staff_client: Client, alice_address: Address) -> None:
    response = staff_client.post(
        _url("address-status", alice_address), {"transition": "suspend", **CONFIRMED}
    )
    assert response.status_code == 400
    assert "cannot suspend" in str(response.context["form"].non_field_errors())
    assert not AuditEvent.objects.filter(action="address.suspend").exists()


def test_unknown_transition_is_a_form_error(staff_client: Client, alice_address: Address) -> None:
    response = staff_client.post(_url("address-status", alice_address), {"transition": "delete"})
    assert response.status_code == 400
    assert response.context["status_form"].errors["transition"]


def test_staff_grants_and_revokes_delegate_access(
    staff_client: Client, alice_address: Address, bob: Any
) -> None:
    response = staff_client.post(
        _url("address-grant", alice_address), {"username": "bob", "role": "read_send"}
    )
    assert response.status_code == 302
    grant = AddressGrant.objects.get(address=alice_address, user=bob)
    assert grant.role == AddressGrant.Role.READ_SEND
    event = AuditEvent.objects.get(action="address.grant")
    assert event.detail == {
        "address": "alice@direct.example.org", "user": "bob", "role": "read_send", "previous_role": None
    }
    # Changing the role is one grant, audited with the previous role.
    staff_client.post(_url("address-grant", alice_address), {"username": "bob", "role": "read"})
    grant.refresh_from_db()
    assert grant.role == AddressGrant.Role.READ
    assert AuditEvent.objects.filter(action="address.grant").first().detail["previous_role"] == "read_send"

    response = staff_client.post(
        _url("address-revoke-grant", alice_address, grant_pk=grant.pk),
        {"reason": "delegation ended", "confirm": "on"},
    )
    assert response.status_code == 302
    assert not AddressGrant.objects.filter(pk=grant.pk).exists()
    revoked = AuditEvent.objects.get(action="address.revoke_grant")
    assert (revoked.detail["user"], revoked.detail["reason"]) == ("bob", "delegation ended")


def test_granting_to_an_unknown_user_is_a_form_error(staff_client: Client, alice_address: Address) -> None:
    response = staff_client.post(
        _url("address-grant", alice_address), {"username": "nobody", "role": "read"}
    )
    assert response.status_code == 400
    assert response.context["grant_form"].errors["username"]


def test_owner_role_cannot_be_granted_from_the_delegate_form(
    staff_client: Client, alice_address: Address
) -> None:
    response = staff_client.post(
        _url("address-grant", alice_address), {"username": "bob", "role": "owner"}
    )
    assert response.status_code == 400
    assert response.context["grant_form"].errors["role"]


def test_the_owner_cannot_be_turned_into_a_delegate(
    staff_client: Client, alice_address: Address
) -> None:
    response = staff_client.post(
        _url("address-grant", alice_address), {"username": "alice", "role": "read"}
    )
    assert response.status_code == 400
    assert "owns" in str(response.context["grant_form"].non_field_errors())
    assert AddressGrant.objects.get(address=alice_address, user__username="alice").role == "owner"


def test_the_owner_grant_is_not_revoked_here(staff_client: Client, alice_address: Address) -> None:
    owner = AddressGrant.objects.get(address=alice_address, role="owner")
    response = staff_client.post(
        _url("address-revoke-grant", alice_address, grant_pk=owner.pk),
        {"reason": "x", "confirm": "on"},
    )
    assert response.status_code == 400
    assert b"not revoked here" in response.content
    assert AddressGrant.objects.filter(pk=owner.pk).exists()
    assert not AuditEvent.objects.filter(action="address.revoke_grant").exists()


def test_a_grant_of_another_address_is_404(
    staff_client: Client, alice_address: Address, domain: Any, bob: Any
) -> None:
    other = Address.objects.create(address="desk@direct.example.org", domain=domain)
    grant = AddressGrant.objects.create(user=bob, address=other, role="read")
    response = staff_client.post(
        _url("address-revoke-grant", alice_address, grant_pk=grant.pk),
        {"reason": "x", "confirm": "on"},
    )
    assert response.status_code == 404
    assert staff_client.get(
        _url("address-revoke-grant", alice_address, grant_pk=grant.pk)
    ).status_code == 404
    assert AddressGrant.objects.filter(pk=grant.pk).exists()


RESET = {"reason": "caller verified by callback", "confirm": "on"}


def test_password_reset_shows_a_working_temporary_password_once(
    staff_client: Client, alice_address: Address, alice: Any
) -> None:
    response = staff_client.post(_url("address-reset-password", alice_address), RESET)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    temporary = response.context["reset"].temporary_password
    assert temporary.encode() in response.content
    alice.refresh_from_db()
    assert alice.check_password(temporary)
    event = AuditEvent.objects.get(action="user.password_reset")
    assert event.object_id == str(alice.pk)
    assert event.detail["reason"] == "caller verified by callback"
    assert temporary not in str(event.detail)
    # Not shown again anywhere.
    assert temporary.encode() not in staff_client.get(_url("address-detail", alice_address)).content


def test_password_reset_refuses_a_staff_owner(
    staff_client: Client, alice_address: Address, alice: Any
) -> None:
    alice.is_staff = True
    alice.save()
    old_hash = alice.password
    response = staff_client.post(_url("address-reset-password", alice_address), RESET)
    assert response.status_code == 400
    assert b"Staff passwords are not reset" in response.content
    alice.refresh_from_db()
    assert alice.password == old_hash
    assert not AuditEvent.objects.filter(action="user.password_reset").exists()


def test_password_reset_refuses_an_address_without_an_owner(
    staff_client: Client, domain: Any
) -> None:
    desk = Address.objects.create(address="desk@direct.example.org", domain=domain)
    response = staff_client.post(_url("address-reset-password", desk), RESET)
    assert response.status_code == 400
    assert b"no single owning user" in response.content
    assert not AuditEvent.objects.filter(action="user.password_reset").exists()
    assert get_user_model().objects.count() >= 1


def test_staff_adds_an_address_that_waits_for_proofing(
    staff_client: Client, domain: Any, sam: Any
) -> None:
    response = staff_client.post(
        reverse("adminconsole:address-add"),
        {"address": "Desk@Direct.Example.ORG", "name": "Front desk", "with_owner": "on"},
    )
    assert response.status_code == 200
    address = Address.objects.get(address="Desk@direct.example.org")
    assert address.status == Address.Status.PENDING
    reset = response.context["reset"]
    owner = get_user_model().objects.get(username=address.address)
    assert owner.check_password(reset.temporary_password)
    assert AddressGrant.objects.get(address=address, user=owner).role == AddressGrant.Role.OWNER
    assert AuditEvent.objects.get(action="address.add").actor == sam
    assert AuditEvent.objects.get(action="address.hold_for_proofing").object_id == str(address.pk)


def test_address_without_owner_redirects_to_its_page(staff_client: Client, domain: Any) -> None:
    response = staff_client.post(
        reverse("adminconsole:address-add"), {"address": "lab@direct.example.org", "name": "Lab"}
    )
    address = Address.objects.get(address="lab@direct.example.org")
    assert response["Location"] == _url("address-detail", address)
    assert not AddressGrant.objects.filter(address=address).exists()


@pytest.mark.parametrize(
    "address,message",
    [
        ("someone@elsewhere.example.net", "not hosted here"),
        ("<script>@direct.example.org", "not a valid Direct address"),
        ("a" * 400 + "@direct.example.org", "at most 320"),
        ("alice@direct.example.org", "exists already"),
    ],
)
def test_add_address_rejects_bad_addresses(
    staff_client: Client, alice_address: Address, address: str, message: str
) -> None:
    before = Address.objects.count()
    response = staff_client.post(
        reverse("adminconsole:address-add"), {"address": address, "name": "X", "with_owner": "on"}
    )
    assert response.status_code == 400
    assert message in str(response.context["add_form"].errors["address"])
    assert Address.objects.count() == before
