"""``anchor``, ``cert``, ``bundle`` and ``keys`` commands."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from django.core.management.base import CommandError

from hisp.certificates import display_fingerprint, load
from hisp.models import Certificate, Domain, TrustAnchor, TrustBundle
from hisp.services import identity, pki
from tests.hisp.cli.conftest import Run
from tests.hisp.pki.conftest import VECTORS
from tests.hisp.pki.support import bundle_server, openssl


def test_anchor_export_writes_pem_and_fingerprint(run: Run, provider: Domain,
                                                  tmp_path: Path) -> None:
    out, err = run("anchor", "export", provider.name)
    assert load(provider.issuing_ca) == x509.load_pem_x509_certificate(out.encode())
    assert display_fingerprint(provider.issuing_ca.fingerprint_sha256) in err
    target = tmp_path / "ca.pem"
    out, _ = run("anchor", "export", provider.name, "--out", str(target))
    assert x509.load_pem_x509_certificate(target.read_bytes()) == load(provider.issuing_ca)
    assert "SHA-256 fingerprint" in out


def test_anchor_export_unknown_domain_fails(run: Run, provider: Domain) -> None:
    with pytest.raises(CommandError, match="not hosted here"):
        run("anchor", "export", "nowhere.example.org")


def test_anchor_import_defaults_to_both_directions_and_prints_fingerprint(
    run: Run, provider: Domain, tmp_path: Path
) -> None:
    path = tmp_path / "partner.der"
    path.write_bytes((VECTORS / "java_wrong_signer_sm1_root.der").read_bytes())
    out, _ = run("anchor", "import", str(path), "--domain", provider.name)
    cert = x509.load_der_x509_certificate(path.read_bytes())
    assert display_fingerprint(cert.fingerprint(hashes.SHA256()).hex()) in out
    anchor = TrustAnchor.objects.get(certificate__fingerprint_sha256=cert.fingerprint(
        hashes.SHA256()).hex())
    assert anchor.incoming and anchor.outgoing


def test_anchor_import_one_direction_and_bundle_file(run: Run, provider: Domain) -> None:
    out, _ = run("anchor", "import", str(VECTORS / "java_providerTestBundle.p7b"),
                 "--domain", provider.name, "--incoming")
    assert out.count("SHA-256 fingerprint") == 6
    imported = TrustAnchor.objects.filter(bundle__isnull=True).exclude(
        certificate=provider.issuing_ca)
    assert imported.count() == 6 and not imported.filter(outgoing=True).exists()


def test_anchor_import_rejects_garbage(run: Run, provider: Domain) -> None:
    with pytest.raises(CommandError, match="not a certificate"):
        run("anchor", "import", str(VECTORS / "java_invalidBundle.der"), "--domain", provider.name)


def test_anchor_list_json(run: Run, provider: Domain) -> None:
    out, _ = run("anchor", "list", "--json")
    (row,) = json.loads(out)
    assert row["domain"] == provider.name and row["incoming"] and row["outgoing"]
    assert row["fingerprint"] == provider.issuing_ca.fingerprint_sha256 and row["bundle"] is None


def test_cert_export_address_falls_back_to_domain_and_verifies(run: Run, provider: Domain,
                                                               tmp_path: Path) -> None:
    identity.add_address("bob@hospital.example.org")
    out, _ = run("cert", "export", "bob@hospital.example.org")
    (cert,) = x509.load_pem_x509_certificates(out.encode())
    domain_cert = Certificate.objects.get(binding="domain", domain=provider)
    assert cert == load(domain_cert)
    run("anchor", "export", provider.name, "--out", str(tmp_path / "ca.pem"))
    (tmp_path / "leaf.pem").write_text(out)
    assert openssl("verify", "-purpose", "smimeencrypt", "-CAfile", str(tmp_path / "ca.pem"),
                   str(tmp_path / "leaf.pem")).returncode == 0


def test_cert_export_unknown_name_fails(run: Run, provider: Domain) -> None:
    with pytest.raises(CommandError, match="not hosted here"):
        run("cert", "export", "ghost@hospital.example.org")
    with pytest.raises(CommandError, match="no certificate in use"):
        run("cert", "export", "someone@partner.example.net")
    with pytest.raises(CommandError, match="not a valid"):
        run("cert", "export", "@@@")


def test_cert_import_pkcs12_with_password_on_stdin(run: Run, provider: Domain,
                                                   tmp_path: Path) -> None:
    identity.add_address("org@hospital.example.org", address_cert=True)
    row = Certificate.objects.get(bound_name="org@hospital.example.org")
    path = tmp_path / "org.p12"
    path.write_bytes(pki.export_pkcs12(row, passphrase="a long passphrase", actor="staff"))
    Certificate.objects.filter(pk=row.pk).delete()
    out, _ = run("cert", "import", str(path), "--password-stdin", stdin="a long passphrase\n")
    assert "with its key" in out
    assert Certificate.objects.get(bound_name="org@hospital.example.org").private_key_id


def test_cert_import_partner_pem_and_bad_inputs(run: Run, provider: Domain,
                                                tmp_path: Path) -> None:
    other = identity.add_domain("partner.example.net")
    partner = Certificate.objects.get(binding="domain", domain=other)
    pem = tmp_path / "partner.pem"
    pem.write_bytes(load(partner).public_bytes(serialization.Encoding.PEM))
    Certificate.objects.filter(pk=partner.pk).delete()
    Domain.objects.filter(pk=other.pk).update(name="gone.example.net")  # no longer hosted
    out, _ = run("cert", "import", str(pem))
    assert "without key" in out and "partner.example.net" in out
    with pytest.raises(CommandError, match="already stored"):
        run("cert", "import", str(pem))
    with pytest.raises(CommandError, match="PKCS#12"):
        run("cert", "import", str(VECTORS / "java_invalidBundle.der"))
    with pytest.raises(CommandError, match="cannot read"):
        run("cert", "import", str(pem), "--key", str(tmp_path / "missing.key"))


def test_bundle_add_file_and_url_list_and_refresh(run: Run, provider: Domain) -> None:
    out, _ = run("bundle", "add", str(VECTORS / "dotnet_bundlePEM.p7b"), "--domain",
                 provider.name)
    assert "8 anchors" in out
    with bundle_server() as server:
        server.body = (VECTORS / "gateway_testBundle.p7b").read_bytes()
        out, _ = run("bundle", "add", server.url, "--domain", provider.name)
        assert "1 anchors" in out
        listed = json.loads(run("bundle", "list", "--json")[0])
        assert [(b["anchors"], b["url"]) for b in listed] == [(8, None), (1, server.url)]
        out, _ = run("bundle", "refresh")
        assert out.count(": unchanged") == 2
        server.status = 404
        with pytest.raises(CommandError, match="1 of 2 bundles failed"):
            run("bundle", "refresh")
    assert TrustBundle.objects.get(url=server.url).last_result == "fetch_error"
    assert TrustAnchor.objects.filter(bundle__url=server.url).count() == 1


def test_bundle_add_rejects_bad_input(
    run: Run, provider: Domain, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(CommandError, match="not a PKCS#7 bundle"):
        run("bundle", "add", str(VECTORS / "java_invalidBundle.der"), "--domain", provider.name)
    # The error is the whole story: no warning about a bundle that was rolled back.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with pytest.raises(CommandError, match="not hosted here"):
        run("bundle", "add", str(VECTORS / "gateway_testBundle.p7b"), "--domain", "x.example")
    with bundle_server() as server:
        url = server.url
    with pytest.raises(CommandError, match="fetch failed"):
        run("bundle", "add", url, "--domain", provider.name)
    assert not TrustBundle.objects.exists()


def test_anchor_list_shows_a_partners_control_characters_harmlessly(
    run: Run, provider: Domain, tmp_path: Path
) -> None:
    """A partner chooses its CA's name: a terminal escape or a line end in it must not reach
    the operator's terminal (recolour, move the cursor, forge a line)."""
    from tests.adminconsole.pkitools import make_ca

    ca = make_ca("Partner \x1b[2J\x1b[31mCA\rForged line")
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    out, _ = run("anchor", "import", str(tmp_path / "ca.pem"), "--domain", provider.name)
    listing, _ = run("anchor", "list")
    for text in (out, listing):
        assert "\x1b" not in text and "\r" not in text
    assert "Partner \ufffd[2J\ufffd[31mCA\ufffdForged line" in listing
    assert len(listing.splitlines()) == 2  # our own CA and the partner's, one line each
    (row,) = [r for r in json.loads(run("anchor", "list", "--json")[0]) if "Partner" in r["subject"]]
    assert "\x1b" in row["subject"]  # JSON keeps the name as it is, escaped


def test_a_file_larger_than_any_certificate_or_message_is_refused_not_read_whole(
    run: Run, provider: Domain, settings
) -> None:
    settings.HISP_MAX_MESSAGE_BYTES = 4096
    with pytest.raises(CommandError, match=r"cannot read /dev/zero: larger than 4096 bytes"):
        run("cert", "import", "/dev/zero")
    with pytest.raises(CommandError, match="larger than 4096 bytes"):
        run("anchor", "import", "/dev/zero", "--domain", provider.name)
