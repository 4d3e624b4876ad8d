"""Certificate import with hostile or odd files, as an operator receives them from an
organisation that brings its own certificate: a file's own iteration counts must not hold a
console worker or the CLI for hours, and the errors say what is wrong."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from django.utils import timezone

from hisp.ca import ocsp as responder
from hisp.certificates import load
from hisp.models import Certificate, Domain
from hisp.services import identity, pki
from tests.hisp.pki.support import openssl

PASS = "correct horse battery staple"
HUGE = 2**31 - 1


@pytest.fixture
def hosted(db: None, settings: object) -> Domain:
    settings.HISP_CA_KEY_BITS = 2048  # type: ignore[attr-defined]
    domain = identity.add_domain("hospital.example.org")
    identity.add_address("org@hospital.example.org")
    return domain


@pytest.fixture(scope="module")
def own() -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """The organisation's own certificate and key, from its own CA."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "org@hospital.example.org")])
    now = timezone.now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(
                [x509.RFC822Name("org@hospital.example.org")]), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _openssl_pkcs12(own: tuple[x509.Certificate, rsa.RSAPrivateKey], tmp_path: Path,
                    *options: str, mac: bool = True) -> bytes:
    """``openssl pkcs12 -export`` of ``own`` under PASS, with further ``options``."""
    cert, key = own
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    made = openssl("pkcs12", "-export", "-in", str(tmp_path / "c.pem"), "-inkey",
                   str(tmp_path / "k.pem"), "-passout", f"pass:{PASS}",
                   "-out", str(tmp_path / "o.p12"), *options, *([] if mac else ["-nomac"]))
    assert made.returncode == 0, made.stderr
    return (tmp_path / "o.p12").read_bytes()


def _with_mac_iterations(data: bytes, iterations: int) -> bytes:
    pfx = asn1_pkcs12.Pfx.load(data)
    pfx["mac_data"]["iterations"] = iterations
    return pfx.dump(force=True)


def _with_key_bag_iterations(data: bytes, iterations: int) -> bytes:
    # Made without a MAC (openssl -nomac), so nothing fails before the key's own derivation.
    pfx = asn1_pkcs12.Pfx.load(data)
    safes = pfx.authenticated_safe
    for info in safes:
        if info["content_type"].native != "data":
            continue
        bags = asn1_pkcs12.SafeContents.load(info["content"].native)
        for bag in bags:
            if bag["bag_id"].native == "pkcs8_shrouded_key_bag":
                kdf = bag["bag_value"]["encryption_algorithm"]["parameters"]
                kdf["key_derivation_func"]["parameters"]["iteration_count"] = iterations
        info["content"] = bags.dump(force=True)
    pfx["auth_safe"]["content"] = safes.dump(force=True)
    return pfx.dump(force=True)


def _encrypted_key_pem(key: rsa.RSAPrivateKey, iterations: int) -> bytes:
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(PASS.encode()))
    info = asn1_keys.EncryptedPrivateKeyInfo.load(der)
    info["encryption_algorithm"]["parameters"]["key_derivation_func"]["parameters"][
        "iteration_count"] = iterations
    from asn1crypto import pem

    return pem.armor("ENCRYPTED PRIVATE KEY", info.dump(force=True))


def _outcome_within(seconds: float, work: Callable[[], object]) -> str:
    """What ``work`` came to in a forked child, or "still running" after ``seconds``: a native
    key derivation cannot be interrupted inside the test process."""
    context = multiprocessing.get_context("fork")
    answers = context.SimpleQueue()

    def run() -> None:
        try:
            work()
        except pki.PkiError as exc:
            answers.put(f"refused: {exc}")
        except BaseException as exc:  # reported, not raised, across the fork
            answers.put(f"{type(exc).__name__}: {exc}")
        else:
            answers.put("imported")

    child = context.Process(target=run)
    child.start()
    child.join(seconds)
    if child.is_alive():
        child.kill()
        child.join()
        return "still running"
    return answers.get()


@pytest.mark.parametrize("patch", [_with_mac_iterations, _with_key_bag_iterations])
def test_a_pkcs12_asking_for_two_billion_iterations_is_refused_at_once(
    hosted: Domain, own: tuple[x509.Certificate, rsa.RSAPrivateKey], tmp_path: Path,
    patch: Callable[[bytes, int], bytes],
) -> None:
    data = patch(_openssl_pkcs12(own, tmp_path, mac=patch is _with_mac_iterations), HUGE)
    outcome = _outcome_within(20, lambda: pki.import_certificate(data, password=PASS))
    assert outcome.startswith("refused:") and "key-derivation iterations" in outcome, outcome


def test_an_encrypted_key_asking_for_two_billion_iterations_is_refused_at_once(
    hosted: Domain, own: tuple[x509.Certificate, rsa.RSAPrivateKey],
) -> None:
    cert, key = own
    key_pem = _encrypted_key_pem(key, HUGE)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    outcome = _outcome_within(20, lambda: pki.import_certificate(
        cert_pem, key_data=key_pem, password=PASS))
    assert outcome.startswith("refused:") and "key-derivation iterations" in outcome, outcome
    # The same file with the key inside it, as `cert import bundle.pem` reads it.
    outcome = _outcome_within(20, lambda: pki.import_certificate(
        cert_pem + key_pem, password=PASS))
    assert outcome.startswith("refused:") and "key-derivation iterations" in outcome, outcome


def test_pkcs12_files_with_usual_iteration_counts_still_import(
    hosted: Domain, own: tuple[x509.Certificate, rsa.RSAPrivateKey], tmp_path: Path,
) -> None:
    data = _openssl_pkcs12(own, tmp_path)  # OpenSSL's 2,048
    row = pki.import_certificate(data, password=PASS)
    assert row.private_key_id is not None
    cert, key = own
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.BestAvailableEncryption(PASS.encode()))
    row.delete()
    row = pki.import_certificate(cert.public_bytes(serialization.Encoding.PEM),
                                 key_data=key_pem, password=PASS)
    assert row.private_key_id is not None


def test_a_password_given_for_a_key_that_has_none_is_named_as_such(
    hosted: Domain, own: tuple[x509.Certificate, rsa.RSAPrivateKey],
) -> None:
    cert, key = own
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    with pytest.raises(pki.PkiError, match="the key is not encrypted"):
        pki.import_certificate(cert.public_bytes(serialization.Encoding.PEM),
                               key_data=key_pem, password=PASS)


@pytest.mark.parametrize("passphrase", ["pässwörd-für-die-praxis", "🔑 sechs wörter lang ok",
                                        "tab\tand space  kept"])
def test_an_exported_pkcs12_opens_in_openssl_with_a_non_ascii_passphrase(
    hosted: Domain, tmp_path: Path, passphrase: str,
) -> None:
    address = identity.add_address("dr@hospital.example.org", address_cert=True)
    row = address.certificates.get()
    (tmp_path / "o.p12").write_bytes(pki.export_pkcs12(row, passphrase=passphrase, actor="s"))
    (tmp_path / "pass").write_text(passphrase, encoding="utf-8")
    result = openssl("pkcs12", "-in", str(tmp_path / "o.p12"), "-passin",
                     f"file:{tmp_path / 'pass'}", "-nodes", "-noout")
    assert result.returncode == 0, result.stderr


def test_a_certificate_merely_naming_our_ca_as_issuer_is_not_vouched_for_by_our_ocsp(
    hosted: Domain,
) -> None:
    ca = hosted.issuing_ca
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = timezone.now()
    forged = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dr")]))
              .issuer_name(load(ca).subject)  # our CA's name, someone else's signature
              .public_key(stranger.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
              .add_extension(x509.SubjectAlternativeName(
                  [x509.RFC822Name("dr@partner.example.net")]), critical=False)
              .sign(stranger, hashes.SHA256()))
    row = pki.import_certificate(forged.public_bytes(serialization.Encoding.PEM))
    assert row.issued_by is None
    request = ocsp.OCSPRequestBuilder().add_certificate(forged, load(ca), hashes.SHA1()).build()
    answer = ocsp.load_der_ocsp_response(
        responder.respond(request.public_bytes(serialization.Encoding.DER)))
    assert answer.certificate_status == ocsp.OCSPCertStatus.UNKNOWN


def test_our_own_certificate_brought_back_is_tied_to_the_ca_that_signed_it(
    hosted: Domain,
) -> None:
    address = identity.add_address("dr@hospital.example.org", address_cert=True)
    row = address.certificates.get()
    data = pki.export_pkcs12(row, passphrase=PASS, actor="staff")
    Certificate.objects.filter(pk=row.pk).delete()
    imported = pki.import_certificate(data, password=PASS)
    assert imported.issued_by == hosted.issuing_ca


def test_a_partner_chain_that_starts_with_its_ca_imports_the_partners_certificate(
    hosted: Domain,
) -> None:
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Partner CA")])
    now = timezone.now()
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=300))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dr")]))
            .issuer_name(ca_name).public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(
                [x509.RFC822Name("dr@partner.example.net")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (ca, leaf))
    row = pki.import_certificate(chain)
    assert row.bound_name == "dr@partner.example.net"
    assert row.fingerprint_sha256 == leaf.fingerprint(hashes.SHA256()).hex()
