"""A system check lists hosted domains and addresses stored under older rules, which identity
refuses or spells differently today: nothing migrates them, and until now nothing said so."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from hisp.checks import identity_rules_check
from hisp.models import Address, Domain


@pytest.fixture
def stale(db: None) -> None:
    # Written directly, as rows made before today's rules were (no service, no certificates).
    hospital = Domain.objects.create(name="hospital.example.org")
    Domain.objects.create(name="1.2.3.4")
    Domain.objects.create(name="fass.example")  # faß under IDNA 2003: valid, just another name
    Domain.objects.create(name="bücher.example")  # stored in Unicode, not as its A-label
    Address.objects.create(address="dr.adams@hospital.example.org", domain=hospital)
    Address.objects.create(address="d" * 64 + "@hospital.example.org", domain=hospital)
    Address.objects.create(address='"front desk"@hospital.example.org', domain=hospital)


def _flagged(messages: list) -> dict[str, str]:
    return {message.msg.split("'")[1]: message.id for message in messages}


def test_rows_that_fail_todays_rules_are_listed(stale: None) -> None:
    found = identity_rules_check(databases=["default"])
    assert _flagged(found) == {
        "1.2.3.4": "hisp.W001",
        "bücher.example": "hisp.W001",
        "d" * 64 + "@hospital.example.org": "hisp.W002",
        '"front desk"@hospital.example.org': "hisp.W002",
    }
    [ip] = [m for m in found if "'1.2.3.4'" in m.msg]
    assert "IP address" in ip.msg  # identity's own reason
    [unicode] = [m for m in found if "bücher" in m.msg]
    assert "'xn--bcher-kva.example'" in unicode.msg
    assert all(m.is_serious() is False for m in found)  # a warning: the HISP still starts
    assert all("manage.py domain add" in m.hint for m in found)


@pytest.mark.parametrize(
    "command",
    [
        ("check", {"databases": ["default"]}),
        ("migrate", {"skip_checks": False}),  # every upgrade: migrate checks its database
    ],
)
def test_the_operator_sees_them_from_check_and_migrate(stale: None, command: tuple) -> None:
    name, options = command
    err = io.StringIO()
    call_command(name, stdout=io.StringIO(), stderr=err, **options)
    assert "hisp.W001" in err.getvalue()
    assert "'1.2.3.4'" in err.getvalue()
    assert "hisp.W002" in err.getvalue()


def test_every_other_command_does_not_query_the_rows(stale: None) -> None:
    # Without a database the check is skipped: it reads every address, which is for migrate
    # and an explicit check, not for each `manage.py mailbox`.
    assert identity_rules_check() == []
    assert identity_rules_check(databases=None) == []


def test_rows_that_meet_todays_rules_give_no_warning(db: None) -> None:
    hospital = Domain.objects.create(name="hospital.example.org")
    Domain.objects.create(name="xn--fa-hia.example")
    Address.objects.create(address="Dr.Adams@hospital.example.org", domain=hospital)
    Address.objects.create(address="postmaster@hospital.example.org", domain=hospital)
    assert identity_rules_check(databases=["default"]) == []


def test_a_long_list_is_cut_with_a_count(db: None) -> None:
    for n in range(23):
        Domain.objects.create(name=f"10.0.0.{n}")
    found = identity_rules_check(databases=["default"])
    assert len(found) == 21
    assert "3 more hosted domains" in found[-1].msg
