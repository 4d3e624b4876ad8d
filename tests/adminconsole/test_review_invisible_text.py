"""Text staff type (names, reasons, evidence references) that ends up on pages, in mail headers
and in the audit log refuses the invisible characters that reorder what a reader sees (the
bidirectional overrides and isolates of "Trojan Source", CVE-2021-42574) and Unicode's line and
paragraph separators, as it already refused control characters: a reason reading one thing in
the audit log and meaning another is a forged record. Ordinary non-Latin text still passes."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from hisp.models import Address, AuditEvent, Route

HIDDEN = ["\u202e", "\u202a", "\u2066", "\u2069", "\u2028", "\u2029"]


@pytest.mark.parametrize("char", HIDDEN)
def test_a_display_name_with_a_reordering_character_is_refused(
    staff_client: Client, domain: Any, char: str
) -> None:
    response = staff_client.post(reverse("adminconsole:address-add"), {
        "address": "dr.who@direct.example.org", "name": f"Dr Who{char}gro.live",
    })
    assert response.status_code == 400
    assert response.context["add_form"].errors["name"]
    assert not Address.objects.filter(address="dr.who@direct.example.org").exists()


def test_a_reason_with_a_bidi_override_is_refused_and_nothing_happens(
    staff_client: Client, world: Any
) -> None:
    response = staff_client.post(
        reverse("adminconsole:route-delete", kwargs={"pk": world.route.pk}),
        {"reason": "partner asked \u202edeveloper", "confirm": "on"},
    )
    assert response.status_code == 400
    assert Route.objects.filter(pk=world.route.pk).exists()
    assert not AuditEvent.objects.filter(action="route.delete").exists()


def test_names_in_other_scripts_still_pass(staff_client: Client, domain: Any) -> None:
    response = staff_client.post(reverse("adminconsole:address-add"), {
        "address": "dr.who@direct.example.org", "name": "د. هو — Доктор Ху — 医生",
    })
    assert response.status_code in (200, 302)
    assert Address.objects.get(address="dr.who@direct.example.org").display_name.startswith("د.")
