"""The Django-side resolver: hosted addresses from the database (no DNS), everyone else through
DNS CERT / LDAP with the shared cache, and the flush that empties it."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from io import StringIO

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from django.core.management import call_command
from django.core.management.base import CommandError

from agent.trust import select_recipient_certificates
from agent.types import Binding
from hisp import discovery
from hisp.agent_env import build_environment
from hisp.models import Address, AuditEvent, Certificate
from tests.hisp.discovery.conftest import DOMAIN, Partner
from tests.support.bind import BindServer

pytestmark = [pytest.mark.django_db, pytest.mark.services]


def levels_of(address: str) -> list[tuple[str, Binding, set[bytes], str | None]]:
    return [
        (
            level.source,
            level.binding,
            {c.public_bytes(Encoding.DER) for c in level.certificates},
            level.error,
        )
        for level in discovery.resolver().candidates(address)
    ]


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_hosted_address_resolves_from_the_database_without_dns(
    alice: Address, silent_dns: str, settings: pytest.FixtureRequest
) -> None:
    settings.HISP_DNS_SERVERS = [silent_dns]  # type: ignore[attr-defined]  # would hang 3 s
    started = time.monotonic()
    levels = levels_of(alice.address)
    elapsed = time.monotonic() - started
    assert [(source, binding) for source, binding, _, _ in levels] == [
        ("hosted", Binding.ADDRESS),
        ("hosted", Binding.DOMAIN),
    ]
    ours = {bytes(r.der) for r in Certificate.objects.filter(bound_name=alice.address)}
    assert levels[0][2] == ours
    assert elapsed < 1.0  # one DNS query to the silent server would take the 3 s time-out
    # And the agent, given the environment the workers use, selects alice's certificate.
    chosen, _ = select_recipient_certificates(
        alice.address, sender_domain=DOMAIN, env=build_environment(), at=datetime.now(UTC)
    )
    assert {c.public_bytes(Encoding.DER) for c in chosen} == levels[0][2]


def test_remote_address_is_discovered_through_the_configured_dns(
    partner: Partner, named: BindServer, settings: pytest.FixtureRequest
) -> None:
    settings.HISP_DNS_SERVERS = [named.address]  # type: ignore[attr-defined]
    levels = levels_of(partner.address)
    assert levels[0] == ("dns", Binding.ADDRESS, {partner.der(partner.address_cert)}, None)
    assert levels[1] == ("dns", Binding.DOMAIN, {partner.der(partner.domain_cert)}, None)
    assert [(s, b) for s, b, _, _ in levels[2:]] == [
        ("ldap", Binding.ADDRESS),
        ("ldap", Binding.DOMAIN),
    ]
    # The workers' environment goes through the same plug-in point.
    first = next(iter(build_environment().certificates.candidates(partner.address)))
    assert (first.source, first.binding) == ("dns", Binding.ADDRESS)


def test_results_stay_cached_until_flushed_with_the_command(
    partner: Partner, named: BindServer, settings: pytest.FixtureRequest
) -> None:
    settings.HISP_DNS_SERVERS = [named.address]  # type: ignore[attr-defined]
    assert levels_of(partner.address)[0][2] == {partner.der(partner.address_cert)}
    named.serve_zone(partner.domain, [])  # the partner withdraws every CERT record
    assert levels_of(partner.address)[0][2] == {partner.der(partner.address_cert)}  # cached

    assert run("discovery", "flush", partner.address).strip() == (
        f"flushed cached discovery results for {partner.address}"
    )
    assert levels_of(partner.address)[0][2] == set()
    assert levels_of(partner.address)[1][2] == {partner.der(partner.domain_cert)}  # still cached
    event = AuditEvent.objects.get(action="discovery.flush")
    assert (event.actor_label, event.object_id) == ("cli", partner.address)

    run("discovery", "flush", partner.domain.upper())  # a whole domain, any case
    assert levels_of(partner.address)[1][2] == set()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("flush", "not a domain"), "not an address or domain"),
        (("flush", "@example.org"), "not an address"),
        (("lookup", "no-at-sign"), "not an address"),
        (("lookup", "x@localhost"), "domain is not a DNS name"),
    ],
)
def test_discovery_command_rejects_bad_input_in_one_line(
    args: tuple[str, ...], message: str
) -> None:
    with pytest.raises(CommandError, match=message) as caught:
        run("discovery", *args)
    assert "\n" not in str(caught.value)


def test_lookup_json_lists_every_level(alice: Address, partner: Partner, named: BindServer,
                                       settings: pytest.FixtureRequest) -> None:
    settings.HISP_DNS_SERVERS = [named.address]  # type: ignore[attr-defined]
    hosted = json.loads(run("discovery", "lookup", alice.address, "--json"))
    assert hosted["hosted"] is True
    assert [(lv["source"], lv["binding"]) for lv in hosted["levels"]] == [
        ("hosted", "address"), ("hosted", "domain")
    ]
    [cert] = hosted["levels"][0]["certificates"]
    assert cert["emails"] == [alice.address]
    assert cert["current"] is True

    remote = json.loads(run("discovery", "lookup", partner.address, "--json"))
    assert remote["hosted"] is False
    by_level = {(lv["source"], lv["binding"]): lv for lv in remote["levels"]}
    assert by_level[("dns", "address")]["certificates"][0]["emails"] == [partner.address]
    assert by_level[("dns", "domain")]["certificates"][0]["dns_names"] == [partner.domain]
    # No SRV record: the LDAP levels say so instead of failing silently.
    assert any("no SRV records" in note for note in by_level[("ldap", "address")]["notes"])

    text = run("discovery", "lookup", partner.address)
    assert text.splitlines()[0] == f"{partner.address} (remote)"
    assert "dns address-bound: 1 certificate(s)" in text


def test_lookup_report_explains_a_dead_resolver_within_the_timeout(
    silent_dns: str, settings: pytest.FixtureRequest
) -> None:
    from datetime import timedelta

    settings.HISP_DNS_SERVERS = [silent_dns]  # type: ignore[attr-defined]
    settings.HISP_DISCOVERY_TIMEOUT = timedelta(seconds=1)  # type: ignore[attr-defined]
    started = time.monotonic()
    report = discovery.lookup_report("carol@unreachable.example.net")
    assert time.monotonic() - started < 8  # four levels, each bounded by the time-out
    assert report.hosted is False
    assert report.levels[0].error
    assert all(not level.certificates for level in report.levels)
    # Every level is listed, each with its own error (the agent would wait and retry).
    assert [(level.source, level.binding) for level in report.levels] == [
        ("dns", "address"), ("dns", "domain"), ("ldap", "address"), ("ldap", "domain")
    ]
    assert all(level.error for level in report.levels)
