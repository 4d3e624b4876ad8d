"""``domain`` and ``address`` commands."""

from __future__ import annotations

import base64
import json
import os
import secrets
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
    # RFC 5321 4.5.1: the domain accepts mail for postmaster from the start.
    postmaster = Address.objects.get(domain=domain)
    assert postmaster.address == "postmaster@clinic.example.org"
    assert (postmaster.kind, postmaster.status) == ("system", "active")
    assert Certificate.objects.filter(address=postmaster, binding="address").count() == 1
    event = AuditEvent.objects.get(action="address.add", object_id=str(postmaster.pk))
    assert event.actor_label == "cli"


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
    assert row["addresses"] == 1  # its postmaster
    text, _ = run("domain", "list")
    assert provider.name in text


def test_address_add_with_password_cert_and_patient(run: Run, provider: Domain) -> None:
    run("domain", "add", "portal.example.org", "--portal")
    out, _ = run("address", "add", "pat@portal.example.org", "--name", "Pat Patient",
                 "--password-stdin", "--address-cert", "--patient",
                 stdin="a long enough password\n")
    assert "added pat@portal.example.org" in out
    row = Address.objects.get(address="pat@portal.example.org")
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
    with pytest.raises(CommandError, match="patient addresses belong on a patient-portal"):
        run("address", "add", "pat@hospital.example.org", "--patient")
    assert [a.address for a in Address.objects.all()] == ["postmaster@hospital.example.org"]


def test_address_list_json(run: Run, provider: Domain) -> None:
    run("address", "add", "alice@hospital.example.org", "--name", "Alice", "--address-cert",
        "--password-stdin", stdin="a long enough password\n")
    out, _ = run("address", "list", "--json")
    row, postmaster = json.loads(out)
    assert (postmaster["address"], postmaster["kind"]) == ("postmaster@hospital.example.org",
                                                           "system")
    assert postmaster["users"] == [] and len(postmaster["certificates"]) == 1
    assert row["address"] == "alice@hospital.example.org" and row["name"] == "Alice"
    assert row["users"] == ["alice@hospital.example.org"] and row["kind"] == "clinician"
    assert len(row["certificates"]) == 1 and len(row["certificates"][0]["fingerprint"]) == 64


def test_address_add_refuses_the_postmaster_in_any_spelling(run: Run, provider: Domain) -> None:
    for spelling in ("postmaster@hospital.example.org", "Postmaster@Hospital.Example.org"):
        with pytest.raises(CommandError, match="already exists"):
            run("address", "add", spelling)
    assert Address.objects.filter(address__iexact="postmaster@hospital.example.org").count() == 1


def test_cert_issue_gives_a_migrated_postmaster_its_own_certificate(
    run: Run, provider: Domain
) -> None:
    # Migration 0004 creates postmaster@ for older domains without a certificate.
    postmaster = Address.objects.get(address="postmaster@hospital.example.org")
    Certificate.objects.filter(address=postmaster).delete()
    out, _ = run("cert", "issue", "PostMaster@Hospital.example.org")  # any case, as ingress
    [cert] = Certificate.objects.filter(address=postmaster)
    assert (cert.binding, cert.bound_name) == ("address", "postmaster@hospital.example.org")
    assert cert.issued_by_id == provider.issuing_ca_id and cert.private_key_id is not None
    assert out.startswith("issued address-bound certificate for postmaster@hospital.example.org")
    assert cert.fingerprint_sha256[:4].upper() in out.replace(":", "")
    event = AuditEvent.objects.get(action="certificate.issue", object_id=str(cert.pk))
    assert event.actor_label == "cli"
    exported, _ = run("cert", "export", "postmaster@hospital.example.org")
    assert exported.count("BEGIN CERTIFICATE") == 1


def test_cert_issue_rejects_names_not_hosted_here(run: Run, provider: Domain) -> None:
    with pytest.raises(CommandError, match="not hosted here"):
        run("cert", "issue", "nobody@hospital.example.org")
    with pytest.raises(CommandError, match="not hosted here"):
        run("cert", "issue", "elsewhere.example.net")
    with pytest.raises(CommandError, match="not a valid domain name"):
        run("cert", "issue", "not a domain")


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



def test_a_real_process_prints_only_the_error_line_on_stderr(tmp_path: Path) -> None:
    # Secrets given, as in production: the quick start's one-time "generated ..." notices
    # are not what this is about.
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL"}}
    env.update({
        "HISP_DATA_DIR": str(tmp_path / "var"),
        "DJANGO_SETTINGS_MODULE": "hisp.settings",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "HISP_KEY_ENCRYPTION_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    })
    result = subprocess.run(
        [sys.executable, "manage.py", "domain", "add", "not a domain"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["CommandError: not a valid domain name: 'not a domain'"]
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
        ("cert", "issue"),  # the name is required
    ],
)
def test_bad_arguments_are_a_command_error(run: Run, args: tuple[str, ...]) -> None:
    with pytest.raises(CommandError):
        run(*args)


def test_the_embedded_broker_connects_without_a_warning(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL"}}
    env.update({"HISP_DATA_DIR": str(tmp_path / "var"), "DJANGO_SETTINGS_MODULE": "hisp.settings",
                "SECRET_KEY": secrets.token_urlsafe(50),
                "HISP_KEY_ENCRYPTION_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()})
    connect = ("import django; django.setup(); from hisp.celery import app; "
               "c = app.connection_for_write(); c.ensure_connection(); c.info(); "
               "print(c.transport_cls); c.release()")
    result = subprocess.run([sys.executable, "-c", connect], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "filesystem"
    assert result.stderr == ""
