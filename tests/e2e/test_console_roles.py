"""The console's roles in headless Chromium: a registration officer works through the pages of
their role, finds no certificate or audit actions offered, and a URL typed beyond the role shows
the refusal page, cleanly (no CSP problem, no script error); staff without a role see the
dashboard's note and nothing else."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from adminconsole.roles import Role, role_groups
from hisp.models import AuditEvent, Certificate
from hisp.services import identity
from tests.e2e.test_console import PASSWORD, Watched, nav, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _staff(username: str, *roles: Role) -> TOTPDevice:
    cache.clear()  # sign-in failure counts per client IP outlive other tests' databases
    user = get_user_model().objects.create_user(username, password=PASSWORD, is_staff=True)
    user.groups.set(role_groups(roles))
    return TOTPDevice.objects.create(user=user, name="phone", confirmed=True)


def test_a_registration_officer_sees_their_pages_and_is_refused_the_rest(page) -> None:
    identity.add_domain("clinic.example.com")
    address = identity.add_address("dr.who@clinic.example.com", name="Dr Who", address_cert=True)
    certificate = Certificate.objects.get(address=address, binding=Certificate.Binding.ADDRESS)
    watched = Watched(page)
    sign_in(page, "/console/", "rita", _staff("rita", Role.REGISTRATION))
    page.get_by_role("heading", name="Dashboard").wait_for()
    menu = page.get_by_role("navigation", name="Admin console")
    assert menu.get_by_role("link", name="Addresses").is_visible()
    assert menu.get_by_role("link", name="Audit log").count() == 0
    assert menu.get_by_role("link", name="Messages").count() == 0

    nav(page, "Addresses")
    page.get_by_role("link", name="dr.who@clinic.example.com").click()
    page.get_by_role("button", name="Record proofing").wait_for()
    assert page.get_by_role("link", name=re.compile("Issue an address-bound")).count() == 0

    page.goto(reverse("adminconsole:certificate-detail", kwargs={"pk": certificate.pk}))
    page.get_by_role("link", name="Download certificate (PEM)").wait_for()
    assert page.get_by_role("link", name=re.compile("Revoke")).count() == 0
    assert page.get_by_role("button", name="Renew now").count() == 0
    watched.clean()

    # Typed by hand: the refusal page, not an error or a loop of redirects.
    response = page.goto(reverse("adminconsole:certificate-revoke", kwargs={"pk": certificate.pk}))
    assert response.status == 403
    page.get_by_role("heading", name="Your role does not include this").wait_for()
    assert "Certificate officer" in page.get_by_role("main").inner_text()
    assert page.csp_problems == []
    event = AuditEvent.objects.get(action="console.refused")
    assert (event.actor_label, event.object_id) == ("rita", "certificate-revoke")
    assert Certificate.objects.get(pk=certificate.pk).revoked_at is None


def test_staff_without_a_role_are_told_to_ask_for_one(page) -> None:
    watched = Watched(page)
    sign_in(page, "/console/", "nora", _staff("nora"))
    page.get_by_role("heading", name="You have no role in the console yet").wait_for()
    menu = page.get_by_role("navigation", name="Admin console")
    assert menu.get_by_role("link").all_inner_texts() == ["Dashboard"]
    watched.clean()
