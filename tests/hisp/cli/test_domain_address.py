"""``domain`` and ``address`` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management.base import CommandError

from hisp.models import Address, AuditEvent, Certificate, Domain
from tests.hisp.cli.conftest import Run

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.django_db
def test_domain_add_creates_the_domain_with_ca_and_prints_its_fingerprint(run: Run) -> None:
    out, _ = run("domain", "add", "Clinic.Example.org", "--portal")
    domain = Domain.objects.get(name="clinic.example.org")
    assert domain.kind == Domain.Kind.PATIENT_PORTAL
    assert "added clinic.example.org" in out
    assert domain.issuing_ca.fingerprint_sha256[:4].upper() in out.replace(":", "")
    assert Certificate.objects.filter(domain=domain, binding="domain").count() == 1
    assert AuditEvent.objects.get(action="domain.add").actor_label == "cli"


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["not a domain", "nodot"])
def test_domain_add_rejects_a_bad_name(run: Run, name: str) -> None:
    with pytest.raises(CommandError, match="not a valid domain name"):
        run("domain", "add", name)


def test_domain_add_rejects_a_duplicate(run: Run, provider: Domain) -> None:
    with pytest.raises(CommandError, match="already exists"):
        run("domain", "add", provider.name)


def test_domain_list_json_is_only_a_json_array(run: Run, provider: Domain) -> None:
    out, _ = run("domain", "list", "--json")
    (row,) = json.loads(out)
    assert row["name"] == provider.name and row["kind"] == "provider"
    assert row["ca_fingerprint"] == provider.issuing_ca.fingerprint_sha256
    assert row["addresses"] == 0
    text, _ = run("domain", "list")
    assert provider.name in text


def test_address_add_with_password_cert_and_patient(run: Run, provider: Domain) -> None:
    out, _ = run("address", "add", "pat@hospital.example.org", "--name", "Pat Patient",
                 "--password-stdin", "--address-cert", "--patient",
                 stdin="a long enough password\n")
    assert "added pat@hospital.example.org" in out
    row = Address.objects.get(address="pat@hospital.example.org")
    assert row.kind == Address.Kind.PATIENT and row.display_name == "Pat Patient"
    assert row.users.get().check_password("a long enough password")
    assert Certificate.objects.filter(address=row, binding="address").exists()


def test_address_add_rejects_bad_input(run: Run, provider: Domain) -> None:
    with pytest.raises(CommandError, match="not a valid Direct address"):
        run("address", "add", "no-at-sign")
    with pytest.raises(CommandError, match="not hosted here"):
        run("address", "add", "a@elsewhere.example.net")
    with pytest.raises(CommandError, match="no password on standard input"):
        run("address", "add", "b@hospital.example.org", "--password-stdin", stdin="")
    with pytest.raises(CommandError, match="password rejected"):
        run("address", "add", "b@hospital.example.org", "--password-stdin", stdin="123\n")
    assert not Address.objects.exists()


def test_address_list_json(run: Run, provider: Domain) -> None:
    run("address", "add", "alice@hospital.example.org", "--name", "Alice", "--address-cert",
        "--password-stdin", stdin="a long enough password\n")
    out, _ = run("address", "list", "--json")
    (row,) = json.loads(out)
    assert row["address"] == "alice@hospital.example.org" and row["name"] == "Alice"
    assert row["users"] == ["alice@hospital.example.org"] and row["kind"] == "clinician"
    assert len(row["certificates"]) == 1 and len(row["certificates"][0]["fingerprint"]) == 64


def test_a_real_process_exits_non_zero_with_one_line_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL"}}
    env.update({"HISP_DATA_DIR": str(tmp_path / "var"), "DJANGO_SETTINGS_MODULE": "hisp.settings"})
    result = subprocess.run(
        [sys.executable, "manage.py", "anchor", "--skip-checks", "import", str(tmp_path / "nope"),
         "--domain", "x.example.org"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("CommandError")]
    assert errors == [f"CommandError: cannot read {tmp_path / 'nope'}: No such file or directory"]
    assert result.stdout == ""


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args",
    [
        ("domain",),
        ("domain", "list", "--bogus"),
        ("address", "list", "--bogus"),
        ("anchor", "list", "extra"),
        ("bundle", "list", "--bogus"),
        ("anchor", "import", "x.pem"),  # --domain is required
        ("keys", "rotate-kek"),  # --new-key-file is required
        ("cert", "frobnicate"),
    ],
)
def test_bad_arguments_are_a_command_error(run: Run, args: tuple[str, ...]) -> None:
    with pytest.raises(CommandError):
        run(*args)
