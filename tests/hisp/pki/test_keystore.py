"""Key custody: envelope encryption, the KEK verifier, wrong KEK at start-up, KEK rotation."""

from __future__ import annotations

import base64
import logging
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.management import call_command
from django.core.management.base import CommandError

from hisp import keystore
from hisp.checks import key_encryption_key_check
from hisp.models import Address, Certificate, KekVerifier, PrivateKey

ROOT = Path(__file__).resolve().parents[3]


def _new_kek_text() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pkcs8(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.mark.django_db
def test_key_round_trips_and_is_never_stored_in_clear(rsa_key: rsa.RSAPrivateKey) -> None:
    row = keystore.wrap_private_key(rsa_key)
    stored = PrivateKey.objects.get(pk=row.pk)
    der = _pkcs8(rsa_key)
    assert der not in bytes(stored.ciphertext) and der[40:80] not in bytes(stored.ciphertext)
    assert len(bytes(stored.wrapped_data_key)) == 40  # AES-KW of a 256-bit data key (RFC 3394)
    assert _pkcs8(keystore.unwrap_private_key(stored)) == der


@pytest.mark.django_db
def test_every_key_has_its_own_data_key(rsa_key: rsa.RSAPrivateKey) -> None:
    first = keystore.wrap_private_key(rsa_key)
    second = keystore.wrap_private_key(rsa_key)
    assert bytes(first.wrapped_data_key) != bytes(second.wrapped_data_key)
    assert bytes(first.ciphertext) != bytes(second.ciphertext)


@pytest.mark.django_db
def test_unwrap_with_wrong_kek_raises_kek_mismatch(rsa_key: rsa.RSAPrivateKey) -> None:
    row = keystore.wrap_private_key(rsa_key)
    with pytest.raises(keystore.KekMismatch, match="does not unwrap"):
        keystore.unwrap_private_key(row, kek=keystore.parse_kek(_new_kek_text()))


@pytest.mark.django_db
def test_tampered_ciphertext_fails_its_integrity_check(rsa_key: rsa.RSAPrivateKey) -> None:
    row = keystore.wrap_private_key(rsa_key)
    sealed = bytearray(bytes(row.ciphertext))
    sealed[-1] ^= 1
    row.ciphertext = bytes(sealed)
    with pytest.raises(keystore.KeystoreError, match="integrity check"):
        keystore.unwrap_private_key(row)


@pytest.mark.parametrize("text", ["not base64!", base64.urlsafe_b64encode(b"short").decode()])
def test_malformed_kek_is_rejected(text: str) -> None:
    with pytest.raises(keystore.InvalidKek):
        keystore.parse_kek(text)


def test_reprs_never_show_key_bytes(rsa_key: rsa.RSAPrivateKey) -> None:
    kek = keystore.parse_kek(_new_kek_text())
    assert "hidden" in repr(kek) and kek.key.hex() not in repr(kek)
    row = PrivateKey(pk=3, wrapped_data_key=b"\x01" * 40, ciphertext=b"\x02" * 100)
    assert repr(row) == "<PrivateKey 3 rsa-2048 (wrapped)>" and str(row) == repr(row)


@pytest.mark.django_db
def test_startup_check_fails_clearly_with_wrong_kek(alice: Address, settings: Any) -> None:
    assert key_encryption_key_check() == []
    settings.HISP_KEY_ENCRYPTION_KEY = _new_kek_text()
    (error,) = key_encryption_key_check()
    assert error.id == "hisp.E001"
    assert "HISP_KEY_ENCRYPTION_KEY does not match" in error.msg


@pytest.mark.django_db
def test_startup_check_hint_names_the_section_that_explains_the_kek(
    alice: Address, settings: Any
) -> None:
    settings.HISP_KEY_ENCRYPTION_KEY = _new_kek_text()
    (error,) = key_encryption_key_check()
    match = re.fullmatch(r"see (\S+), section '([^']+)'", error.hint or "")
    assert match, error.hint
    page = (ROOT / match[1]).read_text()
    section = page.split(f"\n## {match[2]}\n", 1)[1].split("\n## ", 1)[0]
    assert "HISP_KEY_ENCRYPTION_KEY" in section and "keys rotate-kek" in section


@pytest.mark.django_db
def test_startup_check_passes_before_any_key_exists() -> None:
    assert not KekVerifier.objects.exists()
    assert key_encryption_key_check() == []


@pytest.mark.django_db
def test_wrapping_under_a_different_kek_than_the_verifier_is_refused(
    alice: Address, rsa_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(keystore.KekMismatch):
        keystore.wrap_private_key(rsa_key, kek=keystore.parse_kek(_new_kek_text()))


@pytest.mark.django_db
def test_rotate_kek_rewraps_every_key_in_one_go(alice: Address, tmp_path: Path,
                                               settings: Any) -> None:
    keys = {row.pk: _pkcs8(keystore.unwrap_private_key(row)) for row in PrivateKey.objects.all()}
    assert len(keys) == 4  # CA, domain, postmaster, alice
    new_text = _new_kek_text()
    key_file = tmp_path / "new.kek"
    key_file.write_text(new_text + "\n")
    out = _call("keys", "rotate-kek", "--new-key-file", str(key_file))
    assert "re-wrapped 4 private keys" in out and "HISP_KEY_ENCRYPTION_KEY" in out
    # The old KEK opens nothing any more; the start-up check says so.
    with pytest.raises(keystore.KekMismatch):
        keystore.unwrap_private_key(PrivateKey.objects.first())
    assert key_encryption_key_check()[0].id == "hisp.E001"
    settings.HISP_KEY_ENCRYPTION_KEY = new_text
    assert key_encryption_key_check() == []
    for row in PrivateKey.objects.all():
        assert _pkcs8(keystore.unwrap_private_key(row)) == keys[row.pk]
    assert KekVerifier.objects.get().rotated_at is not None


@pytest.mark.django_db
def test_rotate_kek_changes_nothing_when_the_current_kek_is_wrong(alice: Address,
                                                                 settings: Any) -> None:
    before = {row.pk: bytes(row.wrapped_data_key) for row in PrivateKey.objects.all()}
    right = settings.HISP_KEY_ENCRYPTION_KEY
    settings.HISP_KEY_ENCRYPTION_KEY = _new_kek_text()
    with pytest.raises(keystore.KekMismatch):
        keystore.rotate_kek(new=keystore.parse_kek(_new_kek_text()))
    settings.HISP_KEY_ENCRYPTION_KEY = right
    assert {row.pk: bytes(row.wrapped_data_key) for row in PrivateKey.objects.all()} == before


@pytest.mark.django_db
def test_rotate_kek_refuses_the_same_key(alice: Address, settings: Any) -> None:
    with pytest.raises(keystore.KeystoreError, match="same as the current"):
        keystore.rotate_kek(new=keystore.parse_kek(settings.HISP_KEY_ENCRYPTION_KEY))


@pytest.mark.django_db
def test_rotate_kek_cli_rejects_a_bad_key_file(alice: Address, tmp_path: Path) -> None:
    bad = tmp_path / "bad.kek"
    bad.write_text("too-short")
    with pytest.raises(CommandError, match="key-encryption key"):
        _call("keys", "rotate-kek", "--new-key-file", str(bad))
    with pytest.raises(CommandError, match="cannot read"):
        _call("keys", "rotate-kek", "--new-key-file", str(tmp_path / "missing"))


@pytest.mark.django_db
def test_no_key_material_in_logs_during_issuance_and_use(
    provider: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from hisp.services import identity

    with caplog.at_level(logging.DEBUG):
        identity.add_address("erin@hospital.example.org", address_cert=True)
        row = Certificate.objects.get(bound_name="erin@hospital.example.org")
        der = _pkcs8(keystore.unwrap_private_key(row.private_key))
    text = caplog.text
    assert "PRIVATE KEY" not in text
    assert base64.b64encode(der)[:60].decode() not in text


def _call(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def _manage(data_dir: Path, kek: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE", "HISP_KEY_ENCRYPTION_KEY"}}
    env.update({"HISP_DATA_DIR": str(data_dir), "HISP_KEY_ENCRYPTION_KEY": kek,
                "DJANGO_SETTINGS_MODULE": "hisp.settings", "HISP_CA_KEY_BITS": "2048"})
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_wrong_kek_fails_start_up_of_a_real_process_with_a_clear_message(tmp_path: Path) -> None:
    right, wrong = _new_kek_text(), _new_kek_text()
    data = tmp_path / "var"
    # An empty database: the start-up check must not get in the way of migrate.
    empty = _manage(data, right, "check", "--tag", "security")
    assert empty.returncode == 0, empty.stderr
    migrated = _manage(data, right, "migrate", "--skip-checks", "-v0")
    assert migrated.returncode == 0, migrated.stderr
    added = _manage(data, right, "domain", "--skip-checks", "add", "kek.example.org")
    assert added.returncode == 0, added.stderr
    passed = _manage(data, right, "check", "--tag", "security")
    assert passed.returncode == 0, passed.stderr
    failed = _manage(data, wrong, "check", "--tag", "security")
    assert failed.returncode != 0, failed.stderr
    assert "hisp.E001" in failed.stderr
    assert "HISP_KEY_ENCRYPTION_KEY does not match" in failed.stderr
    assert wrong not in failed.stderr and right not in failed.stderr
    # A Celery worker given the wrong KEK stops at start-up too, with the same message.
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL"}}
    env.update({"HISP_DATA_DIR": str(data), "HISP_KEY_ENCRYPTION_KEY": wrong,
                "DJANGO_SETTINGS_MODULE": "hisp.settings"})
    worker = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "hisp", "worker", "--pool", "solo",
         "-l", "warning", "-Q", f"kek-test-{secrets.token_hex(4)}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
    )
    assert worker.returncode == 1, worker.stderr[-2000:]
    assert "refusing to start: HISP_KEY_ENCRYPTION_KEY does not match" in worker.stderr
