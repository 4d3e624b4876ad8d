"""The operator CLI's error lines: the input they echo is bounded and visible, and names that
are not host names or addresses are refused before anything is created or looked up."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management.base import CommandError

from hisp.management.cli import (
    LONGEST_ECHOED_WORD,
    LONGEST_ERROR_LINE,
    one_line,
    user_errors,
)
from hisp.models import AuditEvent, Certificate, Domain
from tests.hisp.cli.conftest import Run


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["1.2.3.4", "10.0.0.1.", "clinic.123"])
def test_domain_add_refuses_an_ip_address(run: Run, name: str) -> None:
    with pytest.raises(CommandError, match="not a valid domain name.*(IP address|numeric)"):
        run("domain", "add", name)
    assert not Domain.objects.exists()
    assert not Certificate.objects.exists()


@pytest.mark.django_db
def test_a_100_kb_domain_gives_a_short_error_line(run: Run) -> None:
    with pytest.raises(CommandError, match="not a valid domain name") as caught:
        run("domain", "add", "x" * 100_000 + ".org")
    assert len(str(caught.value)) <= LONGEST_ERROR_LINE
    assert "\u2026" in str(caught.value)


@pytest.mark.django_db
def test_a_refused_route_target_gives_a_short_error_line(run: Run) -> None:
    with pytest.raises(CommandError) as caught:
        run("route", "set", "partner.example.net", "h" * 100_000 + ":25")
    assert len(str(caught.value)) <= LONGEST_ERROR_LINE


def test_a_command_error_raised_inside_user_errors_is_shortened_keeping_its_status() -> None:
    with pytest.raises(CommandError) as caught, user_errors():
        raise CommandError("no certificate in use for " + "q" * 10_000, returncode=3)
    assert str(caught.value).startswith("no certificate in use for qqq")
    assert len(str(caught.value)) <= LONGEST_ERROR_LINE
    assert caught.value.returncode == 3


@pytest.mark.django_db
def test_an_unreadable_file_name_is_shown_short_and_visible(run: Run, provider: Domain) -> None:
    name = "/nonexistent/\x1b[2J\u202e" + "y" * 5_000
    with pytest.raises(CommandError, match="cannot read") as caught:
        run("anchor", "import", name, "--domain", provider.name)
    line = str(caught.value)
    assert "\x1b" not in line and "\u202e" not in line
    assert "\\x1b[2J\\u202e" in line
    assert len(line) <= LONGEST_ERROR_LINE


@pytest.mark.django_db
@pytest.mark.parametrize("address", ["a@b@example.org", "Dr A <a@example.org>", "a@1.2.3.4"])
def test_discovery_lookup_refuses_what_is_not_an_address(
    run: Run, settings: Any, address: str
) -> None:
    settings.HISP_DNS_SERVERS = ["127.0.0.1"]
    with pytest.raises(CommandError, match="not an address"):
        run("discovery", "lookup", address, "--json")
    assert not AuditEvent.objects.filter(action="discovery.lookup").exists()


def test_one_line_escapes_controls_and_cuts_long_words() -> None:
    line = one_line("bad \x1b[31m\ttab\r\nnext \u2028 " + "z" * 1_000 + " (because)")
    assert line.startswith("bad \\x1b[31m tab next ")
    assert "z" * LONGEST_ECHOED_WORD + "\u2026 (because)" in line
    assert "z" * (LONGEST_ECHOED_WORD + 1) not in line


def test_one_line_keeps_both_ends_of_a_long_line() -> None:
    line = one_line("cannot do it: " + " ".join(["word"] * 1_000) + " because of X")
    assert len(line) <= LONGEST_ERROR_LINE
    assert line.startswith("cannot do it: word")
    assert line.endswith("because of X")
