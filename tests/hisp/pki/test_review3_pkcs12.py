"""A PKCS#12 file whose shrouded key sits inside an encrypted safe: its iteration count shows
only once that safe is decrypted, so the visible bounds cannot see it. Opening is bounded by
processor time instead, and ordinary OpenSSL exports (the default and -legacy) still import."""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from pathlib import Path

import pytest
from asn1crypto import algos as asn1_algos
from asn1crypto import core as asn1_core
from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from hisp.keystore import unwrap_private_key
from hisp.models import Domain
from hisp.services import identity, pki
from tests.hisp import test_pki_review_pkcs12 as earlier
from tests.hisp.pki.support import openssl
from tests.hisp.test_pki_review_pkcs12 import _openssl_pkcs12, _outcome_within

PASS = "correct horse battery staple"
HUGE = 2**31 - 1
ADDRESS = "org@hospital.example.org"
own = earlier.own  # the organisation's certificate and key (a fixture), exported under PASS


@pytest.fixture
def org(provider: Domain) -> Domain:
    identity.add_address(ADDRESS)
    return provider


# --- Crafting the file: the key bag moved into the (PBES2) encrypted safe, MAC recomputed ------


def _pkcs12_kdf(digest: str, salt: bytes, iterations: int, purpose: int, length: int) -> bytes:
    """RFC 7292 appendix B.2, for the MAC key (purpose 3); openssl checks the result below."""
    v = hashlib.new(digest).block_size

    def fill(block: bytes) -> bytes:
        size = v * -(-len(block) // v)
        return (block * -(-size // len(block)))[:size] if block else b""

    password = PASS.encode("utf-16-be") + b"\0\0"
    i, out = fill(salt) + fill(password), b""
    while len(out) < length:
        a = hashlib.new(digest, bytes([purpose]) * v + i).digest()
        for _ in range(iterations - 1):
            a = hashlib.new(digest, a).digest()
        out += a
        b = int.from_bytes(fill(a)[:v], "big")
        i = b"".join(((int.from_bytes(i[j:j + v], "big") + b + 1) % (1 << 8 * v)).to_bytes(v, "big")
                     for j in range(0, len(i), v))
    return out[:length]


def _aes_cbc(algorithm: asn1_pkcs12.EncryptionAlgorithm, data: bytes, *, encrypt: bool) -> bytes:
    params = algorithm["parameters"]
    kdf = params["key_derivation_func"]["parameters"]
    key = PBKDF2HMAC(hashes.SHA256(), 32, kdf["salt"].native,
                     kdf["iteration_count"].native).derive(PASS.encode())
    cipher = Cipher(algorithms.AES(key), modes.CBC(params["encryption_scheme"]["parameters"].native))
    if encrypt:
        padder = padding.PKCS7(128).padder()
        encryptor = cipher.encryptor()
        return encryptor.update(padder.update(data) + padder.finalize()) + encryptor.finalize()
    decryptor, unpadder = cipher.decryptor(), padding.PKCS7(128).unpadder()
    return unpadder.update(decryptor.update(data) + decryptor.finalize()) + unpadder.finalize()


def _key_hidden_in_encrypted_safe(data: bytes, iterations: int) -> bytes:
    pfx = asn1_pkcs12.Pfx.load(data)
    safes = list(pfx.authenticated_safe)
    key_bags = [bag for info in safes if info["content_type"].native == "data"
                for bag in asn1_pkcs12.SafeContents.load(info["content"].native)
                if bag["bag_id"].native == "pkcs8_shrouded_key_bag"]
    for bag in key_bags:
        bag["bag_value"]["encryption_algorithm"]["parameters"]["key_derivation_func"][
            "parameters"]["iteration_count"] = iterations
    (encrypted,) = [info for info in safes if info["content_type"].native == "encrypted_data"]
    content = encrypted["content"]["encrypted_content_info"]
    algorithm = content["content_encryption_algorithm"]
    bags = asn1_pkcs12.SafeContents.load(
        _aes_cbc(algorithm, content["encrypted_content"].native, encrypt=False))
    inner = asn1_pkcs12.SafeContents([*bags, *key_bags]).dump(force=True)
    content["encrypted_content"] = _aes_cbc(algorithm, inner, encrypt=True)
    authenticated = asn1_pkcs12.AuthenticatedSafe([encrypted]).dump(force=True)
    pfx["auth_safe"]["content"] = authenticated
    mac = pfx["mac_data"]
    digest = mac["mac"]["digest_algorithm"]["algorithm"].native
    mac_key = _pkcs12_kdf(digest, mac["mac_salt"].native, mac["iterations"].native, 3,
                          hashlib.new(digest).digest_size)
    mac["mac"]["digest"] = hmac.new(mac_key, authenticated, digest).digest()
    return pfx.dump(force=True)


def test_a_key_hidden_in_an_encrypted_safe_asking_for_two_billion_iterations_is_refused(
    org: Domain, own: tuple[x509.Certificate, rsa.RSAPrivateKey], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crafted = tmp_path / "crafted.p12"
    crafted.write_bytes(_key_hidden_in_encrypted_safe(_openssl_pkcs12(own, tmp_path), HUGE))
    # The oracle: a well-formed file whose MAC verifies and whose cheap encrypted safe holds
    # the costly key (-nokeys: openssl lists the bag without deriving its key).
    shown = openssl("pkcs12", "-in", str(crafted), "-passin", f"pass:{PASS}", "-info",
                    "-nokeys", "-noout")
    assert shown.returncode == 0, shown.stderr
    assert "Mac verify error" not in shown.stderr
    assert "PKCS7 Data" not in shown.stderr  # no plain safe: the key is inside the encrypted one
    assert f"Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration {HUGE}" in shown.stderr
    monkeypatch.setattr(pki, "PKCS12_CPU_SECONDS", 1)
    data = crafted.read_bytes()
    started = time.monotonic()
    outcome = _outcome_within(20, lambda: pki.import_certificate(data, password=PASS))
    assert outcome == (
        "refused: the file's password protection asks for more key-derivation work than 1 "
        "seconds of processor time allow: export it again with the tool's defaults"), outcome
    assert time.monotonic() - started < 15


def test_the_same_file_with_an_ordinary_iteration_count_imports(
    org: Domain, own: tuple[x509.Certificate, rsa.RSAPrivateKey], tmp_path: Path,
) -> None:
    data = _key_hidden_in_encrypted_safe(_openssl_pkcs12(own, tmp_path), 2048)
    row = pki.import_certificate(data, password=PASS)
    assert row.bound_name == ADDRESS
    assert unwrap_private_key(row.private_key).private_numbers() == own[1].private_numbers()


@pytest.mark.parametrize("options", [
    (),  # OpenSSL 3: PBES2, AES-256-CBC, HMAC-SHA256 MAC
    ("-legacy",),  # OpenSSL 1.x and Windows: 40-bit RC2 certificates, 3DES key, SHA-1 MAC
    ("-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1"),
    ("-nomac",),
], ids=["default", "legacy", "3des", "nomac"])
def test_openssl_exports_still_import_and_a_wrong_password_is_named(
    org: Domain, own: tuple[x509.Certificate, rsa.RSAPrivateKey], tmp_path: Path,
    options: tuple[str, ...],
) -> None:
    data = _openssl_pkcs12(own, tmp_path, *options)
    if options != ("-nomac",):  # without a MAC only the key's own decryption can tell
        with pytest.raises(pki.PkiError, match="PKCS#12 file this password opens") as caught:
            pki.import_certificate(data, password="not the password")
        assert PASS not in str(caught.value)
    row = pki.import_certificate(data, password=PASS)
    assert row.bound_name == ADDRESS and row.private_key_id is not None
    assert unwrap_private_key(row.private_key).private_numbers() == own[1].private_numbers()


def test_a_pkcs12_with_a_non_ascii_password_imports(
    org: Domain, own: tuple[x509.Certificate, rsa.RSAPrivateKey], tmp_path: Path,
) -> None:
    cert, key = own
    secret = "pässwörd-ünïcode-✓"
    encryption = (serialization.PrivateFormat.PKCS12.encryption_builder()
                  .kdf_rounds(2048).build(secret.encode()))
    data = pki.pkcs12.serialize_key_and_certificates(
        name=None, key=key, cert=cert, cas=None, encryption_algorithm=encryption)
    row = pki.import_certificate(data, password=secret)
    assert unwrap_private_key(row.private_key).private_numbers() == key.private_numbers()


# --- PBMAC1 (RFC 9579): the MAC's cost is PBKDF2's count, not macData.iterations -------------


class _Pbmac1Params(asn1_core.Sequence):
    _fields = [
        ("key_derivation_func", asn1_algos.KdfAlgorithm),
        ("message_auth_scheme", asn1_algos.HmacAlgorithm),
    ]


def _with_pbmac1(data: bytes, iterations: int) -> bytes:
    """The file's MAC replaced by PBMAC1 (HMAC-SHA256 under PBKDF2), made valid for PASS when
    ``iterations`` is small enough to compute here."""
    pfx = asn1_pkcs12.Pfx.load(data)
    salt = os.urandom(16)
    params = _Pbmac1Params({
        "key_derivation_func": {"algorithm": "pbkdf2", "parameters": {
            "salt": asn1_algos.Pbkdf2Salt(name="specified", value=asn1_core.OctetString(salt)),
            "iteration_count": iterations, "key_length": 32,
            "prf": {"algorithm": "sha256", "parameters": asn1_core.Null()}}},
        "message_auth_scheme": {"algorithm": "sha256", "parameters": asn1_core.Null()},
    })
    key = (PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(PASS.encode())
           if iterations <= 100_000 else bytes(32))
    mac = pfx["mac_data"]
    mac["mac"]["digest_algorithm"] = {"algorithm": "1.2.840.113549.1.5.14",
                                      "parameters": asn1_core.Any.load(params.dump())}
    mac["mac"]["digest"] = hmac.new(key, pfx.authenticated_safe.dump(), "sha256").digest()
    mac["iterations"] = 1  # RFC 9579: ignored with PBMAC1
    return pfx.dump(force=True)


def test_a_pbmac1_mac_is_counted_by_its_pbkdf2_iterations(
    org: Domain, own: tuple[x509.Certificate, rsa.RSAPrivateKey], tmp_path: Path,
) -> None:
    exported = _openssl_pkcs12(own, tmp_path)
    row = pki.import_certificate(_with_pbmac1(exported, 2048), password=PASS)
    assert unwrap_private_key(row.private_key).private_numbers() == own[1].private_numbers()
    row.delete()
    data = _with_pbmac1(exported, HUGE)
    started = time.monotonic()
    # A wrong password: a MAC is checked first, so nothing but the MAC's own cost is at stake.
    outcome = _outcome_within(20, lambda: pki.import_certificate(data, password="wrong"))
    assert outcome == f"refused: {pki._TOO_MUCH_WORK}", outcome
    assert time.monotonic() - started < 5
