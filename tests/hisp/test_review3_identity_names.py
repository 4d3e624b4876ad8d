"""Domains and addresses that staff and operators enter: the one rule in hisp.services.identity,
held by every caller (domains, addresses, routes, discovery)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from hisp import discovery
from hisp.discovery_redis import DiscoveryError
from hisp.models import Address, AuditEvent, Certificate, Domain, Route
from hisp.services import identity, routes
from hisp.services.identity import IdentityError

LONGEST_LABEL = "a" * 63


@pytest.fixture(autouse=True)
def _fast_keys(settings: Any) -> None:
    settings.HISP_CA_KEY_BITS = 2048


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("1.2.3.4", "IP address"),
        ("192.0.2.1.", "IP address"),
        ("example.123", "numeric top-level"),
        ("::1", ""),
        ("[192.0.2.1]", ""),
        ("example.org..", ""),
        ("a..example.org", ""),
        (".example.org", ""),
        ("localhost", "at least two labels"),
        ("xn--zz.example.org", "internationalised label"),
        ("ab--cd.example.org", "internationalised label"),
        (f"{LONGEST_LABEL}a.example.org", ""),
        (".".join([LONGEST_LABEL] * 4), "longer than 253"),
        ("x" * 100_000 + ".org", "longer than 253"),
        ("exa mple.org", ""),
        ("a@b.example.org", ""),
    ],
)
def test_normalise_domain_refuses_what_is_not_a_host_name(name: str, why: str) -> None:
    with pytest.raises(IdentityError, match="not a valid domain name") as caught:
        identity.normalise_domain(name)
    assert why in str(caught.value)
    assert len(str(caught.value)) < 300  # the input is echoed, shortened


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("Direct.Example.ORG.", "direct.example.org"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
        ("1.2.3.example", "1.2.3.example"),
        ("a-b.example.org", "a-b.example.org"),
        (".".join([LONGEST_LABEL] * 3 + ["a" * 61]), ".".join([LONGEST_LABEL] * 3 + ["a" * 61])),
    ],
)
def test_normalise_domain_keeps_host_names(name: str, stored: str) -> None:
    assert identity.normalise_domain(name) == stored


def test_an_ip_address_cannot_become_a_hosted_domain(db: None) -> None:
    with pytest.raises(IdentityError, match="IP address"):
        identity.add_domain("1.2.3.4")
    assert not Domain.objects.exists()
    assert not Certificate.objects.exists()


def test_a_route_cannot_be_set_for_an_ip_address(db: None) -> None:
    with pytest.raises(IdentityError, match="not a valid domain name"):
        routes.set_route("10.0.0.1", target="MX")
    assert not Route.objects.exists()


@pytest.mark.parametrize(
    "address",
    [
        "a@1.2.3.4",
        "a@b@example.org",
        "Dr A <a@example.org>",
        "a@localhost",
        "\"quoted\"@example.org",
        f"{'a' * 64}@example.org",  # one DNS label of 64 for the address-bound CERT
        f"{LONGEST_LABEL}.{LONGEST_LABEL}@{'.'.join([LONGEST_LABEL] * 3)}.org",  # over 254
        "a@" + "x" * 100_000 + ".org",
    ],
)
def test_normalise_address_refuses_what_a_direct_address_cannot_be(address: str) -> None:
    with pytest.raises(IdentityError, match="not a valid Direct address") as caught:
        identity.normalise_address(address)
    assert len(str(caught.value)) < 300


def test_normalise_address_keeps_the_local_part_and_lowers_the_domain() -> None:
    local = f"{LONGEST_LABEL}.x"  # 65 characters would be too long; 65 with a dot is not
    assert identity.normalise_address(f" {local[:60]}@Bücher.Example ") == (
        f"{local[:60]}@xn--bcher-kva.example"
    )


@pytest.mark.parametrize("address", ["a@b@example.org", "Dr A <a@example.org>", "a@1.2.3.4"])
def test_discovery_refuses_what_is_not_one_address(db: None, settings: Any, address: str) -> None:
    # A resolver that would answer nothing in time: a lookup that got this far would report
    # levels instead of raising.
    settings.HISP_DNS_SERVERS = ["127.0.0.1"]
    with pytest.raises(DiscoveryError, match="not an address"):
        discovery.lookup_report(address)
    with pytest.raises(DiscoveryError, match="not an address"):
        discovery.flush(address)


def test_an_address_differing_only_in_case_is_refused(db: None) -> None:
    identity.add_domain("hospital.example.org")
    identity.add_address("Alice@hospital.example.org")
    with pytest.raises(IdentityError, match="Alice@hospital.example.org already exists"):
        identity.add_address("alice@HOSPITAL.example.org")
    assert Address.objects.filter(address__iexact="alice@hospital.example.org").count() == 1


@pytest.mark.parametrize(
    "name", ["Dr\nBcc: x@evil.example", "Dr \x1b[2J", "Dr \u202eA", "Dr A <a@evil.example>",
             "x" * 201]
)
def test_a_display_name_must_be_plain_text(db: None, name: str) -> None:
    identity.add_domain("hospital.example.org")
    with pytest.raises(IdentityError, match="display name"):
        identity.add_address("dr.a@hospital.example.org", name=name)
    assert not Address.objects.filter(address="dr.a@hospital.example.org").exists()


def test_a_display_name_is_trimmed(db: None) -> None:
    identity.add_domain("hospital.example.org")
    row = identity.add_address("dr.a@hospital.example.org", name="  Dr Ann Smith ")
    assert row.display_name == "Dr Ann Smith"


def test_adding_a_domain_with_a_route_keeps_it_and_reports_it(
    db: None, caplog: pytest.LogCaptureFixture
) -> None:
    routes.set_route("partner.example.net", target="mx.partner.example.net:2525")
    with caplog.at_level(logging.WARNING, logger="hisp.services.identity"):
        domain = identity.add_domain("Partner.Example.NET")
    assert Route.objects.filter(domain="partner.example.net").exists()
    assert routes.lookup("partner.example.net") is None
    event = AuditEvent.objects.get(action="domain.add", object_id=str(domain.pk))
    assert event.detail["unused_route"] == "mx.partner.example.net:2525"
    [warning] = [r for r in caplog.records if r.name == "hisp.services.identity"]
    assert warning.levelno == logging.WARNING
    assert "route delete partner.example.net" in warning.getMessage()


def test_adding_a_domain_without_a_route_warns_nothing(
    db: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="hisp.services.identity"):
        domain = identity.add_domain("clinic.example.org")
    assert "unused_route" not in AuditEvent.objects.get(action="domain.add",
                                                        object_id=str(domain.pk)).detail
    assert not [r for r in caplog.records if r.name == "hisp.services.identity"]
