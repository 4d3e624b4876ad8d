from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from agent.discovery import DiscoveryCache
from agent.discovery.found import Found, Outcome
from hisp import discovery
from hisp.models import Address, AuditEvent, Certificate, Domain
from hisp.services import identity

LOOKUP = "adminconsole:discovery"


@pytest.fixture
def hosted(db: None) -> Domain:
    return identity.add_domain("clinic.example.com")


@pytest.fixture
def dead_dns(settings: Any) -> None:
    """A resolver address where nothing listens: every remote lookup fails fast and visibly."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.HISP_DNS_SERVERS = [f"127.0.0.1:{port}"]
    settings.HISP_DISCOVERY_TIMEOUT = timedelta(seconds=1)


def test_lookup_of_a_hosted_address_shows_its_certificate_and_a_usable_verdict(
    staff_client: Client, hosted: Domain, sam: Any
) -> None:
    address: Address = identity.add_address("dr.who@clinic.example.com", address_cert=True)
    certificate = Certificate.objects.get(address=address, binding="address")
    response = staff_client.get(
        reverse(LOOKUP), {"address": address.address, "sender_domain": hosted.pk}
    )
    assert response.status_code == 200
    report = response.context["report"]
    assert report.hosted
    found = [c.fingerprint_sha256 for level in report.levels for c in level.certificates]
    assert certificate.fingerprint_sha256 in found
    verdict = response.context["verdict"]
    assert verdict.code is None
    assert verdict.usable == (certificate.fingerprint_sha256,)
    event = AuditEvent.objects.get(action="discovery.lookup")
    assert event.actor == sam
    assert event.detail["verdict"] == "usable"
    assert b"PRIVATE KEY" not in response.content


def test_lookup_of_an_unreachable_partner_says_why_nothing_is_usable(
    staff_client: Client, hosted: Domain, dead_dns: None
) -> None:
    response = staff_client.get(
        reverse(LOOKUP), {"address": "zoe@partner.example.net", "sender_domain": hosted.pk}
    )
    assert response.status_code == 200
    report = response.context["report"]
    assert not report.hosted
    assert any(level.source == "dns" and level.error for level in report.levels)
    verdict = response.context["verdict"]
    assert verdict.code == "no-recipient-certificate"
    assert any("dns" in reason for reason in verdict.reasons)


@pytest.mark.parametrize("address", ["<script>alert(1)</script>", "x" * 400, "no-at-sign"])
def test_lookup_rejects_what_is_not_an_address(staff_client: Client, address: str) -> None:
    response = staff_client.get(reverse(LOOKUP), {"address": address})
    assert response.status_code == 200
    assert response.context["form"].errors["address"]
    assert response.context["report"] is None
    assert b"<script>alert" not in response.content
    assert not AuditEvent.objects.filter(action="discovery.lookup").exists()


def test_flush_drops_a_cache_entry_and_is_audited(staff_client: Client, sam: Any) -> None:
    cache = DiscoveryCache(store=discovery.cache_store(), policy=discovery.cache_policy())
    nothing = Found(Outcome.NOTHING, ttl=600.0)
    cache.put(domain="partner.example.net", kind="dns", name="partner.example.net", found=nothing)
    assert cache.get(domain="partner.example.net", kind="dns", name="partner.example.net")
    response = staff_client.post(reverse("adminconsole:discovery-flush"), {"entry": "Partner.Example.NET"})
    assert response.status_code == 302
    fresh = DiscoveryCache(store=discovery.cache_store(), policy=discovery.cache_policy())
    assert fresh.get(domain="partner.example.net", kind="dns", name="partner.example.net") is None
    event = AuditEvent.objects.get(action="discovery.flush")
    assert event.actor == sam
    assert event.object_id == "partner.example.net"


@pytest.mark.parametrize("entry", ["", "<b>x</b>", "not a domain", "@@"])
def test_flush_rejects_bad_entries(staff_client: Client, entry: str) -> None:
    response = staff_client.post(reverse("adminconsole:discovery-flush"), {"entry": entry})
    assert response.status_code == 400
    assert response.context["flush_form"].errors
    assert not AuditEvent.objects.filter(action="discovery.flush").exists()


@pytest.mark.parametrize("address", ["a..b@partner.example.net", "d" * 65 + "@partner.example.net"])
def test_lookup_holds_an_address_to_the_rule_mail_to_it_meets(
    staff_client: Client, address: str
) -> None:
    # The console's lookup takes what compose sends to, no more (one rule for a recipient).
    response = staff_client.get(reverse(LOOKUP), {"address": address})
    assert "not a Direct address" in " ".join(response.context["form"].errors["address"])
    assert not AuditEvent.objects.filter(action="discovery.lookup").exists()


def test_flush_of_an_idn_address_uses_the_ascii_form_identity_stores(
    staff_client: Client, sam: Any
) -> None:
    response = staff_client.post(reverse("adminconsole:discovery-flush"),
                                 {"entry": "doc@Faß.example"})
    assert response.status_code == 302
    assert AuditEvent.objects.get(action="discovery.flush").object_id == "doc@xn--fa-hia.example"
