from __future__ import annotations

import base64
import hashlib
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from django.core import signing
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from adminconsole.forms.fields import MAX_BUNDLE_BYTES
from adminconsole.forms.trust import PREVIEW_MAX_AGE
from hisp.models import AuditEvent, Domain, TrustAnchor, TrustBundle, TrustBundleEvent
from hisp.services import identity, trust
from tests.adminconsole import pkitools
from tests.adminconsole.sessions import verified_client

IMPORT = "adminconsole:anchor-import"
CONFIRM = "adminconsole:anchor-confirm"
BUNDLE_ADD = "adminconsole:bundle-add"


@pytest.fixture
def partner() -> pkitools.Made:
    return pkitools.make_ca("Partner HISP Root")


def _upload(client: Client, domain: Domain, data: bytes, name: str = "anchor.pem", **extra: Any) -> Any:
    fields = {"domain": domain.pk, "incoming": "on", "outgoing": "on", **extra}
    return client.post(
        reverse(IMPORT), {**fields, "certificate": SimpleUploadedFile(name, data)}
    )


def _confirm_data(response: Any) -> dict[str, Any]:
    form = response.context["form"]
    return {name: form[name].value() for name in ("domain", "certificate_pem", "incoming", "outgoing")}


def _colons(hex_digest: str) -> str:
    return ":".join(hex_digest[i : i + 2] for i in range(0, 64, 2))


def test_upload_shows_the_fingerprint_and_saves_nothing_yet(
    staff_client: Client, domain: Domain, partner: pkitools.Made
) -> None:
    response = _upload(staff_client, domain, partner.pem)
    assert response.status_code == 200
    assert _colons(partner.fingerprint.upper()).encode() in response.content
    assert not TrustAnchor.objects.filter(certificate__fingerprint_sha256=partner.fingerprint).exists()


def test_confirmed_fingerprint_imports_the_anchor_and_is_audited(
    staff_client: Client, domain: Domain, partner: pkitools.Made, sam: Any
) -> None:
    step_one = _upload(staff_client, domain, partner.der, name="anchor.der")
    typed = _colons(partner.fingerprint).replace(":", " ")  # read out in pairs, typed with spaces
    response = staff_client.post(reverse(CONFIRM), {**_confirm_data(step_one), "fingerprint": typed})
    assert response.status_code == 302
    anchor = TrustAnchor.objects.get(domain=domain, certificate__fingerprint_sha256=partner.fingerprint)
    assert anchor.incoming and anchor.outgoing
    assert anchor.confirmed_fingerprint == partner.fingerprint
    event = AuditEvent.objects.get(action="anchor.import")
    assert event.actor == sam
    assert event.detail["fingerprint"] == partner.fingerprint


def test_incoming_only_anchor_is_not_trusted_for_outgoing_mail(
    staff_client: Client, domain: Domain, partner: pkitools.Made
) -> None:
    step_one = staff_client.post(
        reverse(IMPORT),
        {"domain": domain.pk, "incoming": "on",
         "certificate": SimpleUploadedFile("a.pem", partner.pem)},
    )
    data = _confirm_data(step_one)
    staff_client.post(reverse(CONFIRM), {**{k: v for k, v in data.items() if v},
                                         "fingerprint": partner.fingerprint})
    anchor = TrustAnchor.objects.get(domain=domain, certificate__fingerprint_sha256=partner.fingerprint)
    assert anchor.incoming and not anchor.outgoing


def test_wrong_fingerprint_is_refused(
    staff_client: Client, domain: Domain, partner: pkitools.Made
) -> None:
    step_one = _upload(staff_client, domain, partner.pem)
    wrong = partner.fingerprint[:-1] + ("0" if partner.fingerprint[-1] != "0" else "1")
    response = staff_client.post(reverse(CONFIRM), {**_confirm_data(step_one), "fingerprint": wrong})
    assert response.status_code == 400
    assert "does not match" in str(response.context["form"].errors["fingerprint"])
    assert not TrustAnchor.objects.filter(certificate__fingerprint_sha256=partner.fingerprint).exists()
    assert not AuditEvent.objects.filter(action="anchor.import").exists()


def test_fingerprint_that_is_not_hex_is_refused(
    staff_client: Client, domain: Domain, partner: pkitools.Made
) -> None:
    step_one = _upload(staff_client, domain, partner.pem)
    response = staff_client.post(
        reverse(CONFIRM), {**_confirm_data(step_one), "fingerprint": "<script>alert(1)</script>"}
    )
    assert response.status_code == 400
    assert "64 hexadecimal" in str(response.context["form"].errors["fingerprint"])
    assert b"<script>alert" not in response.content


def test_swapped_certificate_fails_against_the_fingerprint_of_the_first(
    staff_client: Client, domain: Domain, partner: pkitools.Made
) -> None:
    step_one = _upload(staff_client, domain, partner.pem)
    impostor = pkitools.make_ca("Partner HISP Root")
    data = {**_confirm_data(step_one), "certificate_pem": impostor.pem.decode()}
    response = staff_client.post(reverse(CONFIRM), {**data, "fingerprint": partner.fingerprint})
    assert response.status_code == 400
    assert not TrustAnchor.objects.filter(certificate__subject__contains="Partner").exists()


def test_tampered_hidden_certificate_restarts_the_import(
    staff_client: Client, domain: Domain, partner: pkitools.Made
) -> None:
    step_one = _upload(staff_client, domain, partner.pem)
    data = {**_confirm_data(step_one), "certificate_pem": "garbage"}
    response = staff_client.post(reverse(CONFIRM), {**data, "fingerprint": partner.fingerprint})
    assert response.status_code == 400
    assert "upload it again" in str(response.context["restart"])


@pytest.mark.parametrize(
    "data,message",
    [
        (b"hello, this is not a certificate", "Not a certificate"),
        (b"-----BEGIN PRIVATE KEY-----\nMIIBVQ==\n-----END PRIVATE KEY-----\n", "Not a certificate"),
        (b"<script>alert(1)</script>", "Not a certificate"),
        (b"0" * (70 * 1024), "larger than"),
    ],
)
def test_upload_rejects_what_is_not_a_certificate(
    staff_client: Client, domain: Domain, data: bytes, message: str
) -> None:
    response = _upload(staff_client, domain, data)
    assert response.status_code == 400
    assert message in str(response.context["form"].errors["certificate"])
    assert b"PRIVATE KEY" not in response.content
    assert b"<script>alert" not in response.content


def test_upload_rejects_an_end_entity_certificate(staff_client: Client, domain: Domain) -> None:
    leaf = pkitools.make_leaf(pkitools.make_ca("X"), "x@partner.example.net")
    response = _upload(staff_client, domain, leaf.pem)
    assert response.status_code == 400
    assert "CA certificate" in str(response.context["form"].errors["certificate"])


def test_upload_needs_a_direction(staff_client: Client, domain: Domain, partner: pkitools.Made) -> None:
    response = staff_client.post(
        reverse(IMPORT), {"domain": domain.pk, "certificate": SimpleUploadedFile("a.pem", partner.pem)}
    )
    assert response.status_code == 400
    assert "incoming mail, outgoing mail, or both" in str(response.context["form"].non_field_errors())


def test_export_shows_our_anchor_with_its_fingerprint_and_is_audited(
    staff_client: Client, sam: Any
) -> None:
    hosted = identity.add_domain("clinic.example.com")
    url = reverse("adminconsole:anchor-export", kwargs={"pk": hosted.pk})
    page = staff_client.get(url)
    assert page.status_code == 200
    ca = hosted.issuing_ca
    assert _colons(ca.fingerprint_sha256.upper()).encode() in page.content
    assert b"PRIVATE KEY" not in page.content
    download = staff_client.get(url, {"download": "1"})
    assert download.content.startswith(b"-----BEGIN CERTIFICATE-----")
    assert b"PRIVATE KEY" not in download.content
    events = AuditEvent.objects.filter(action="anchor.export", actor=sam)
    assert events.count() == 2


def test_export_of_a_domain_without_ca_is_404(staff_client: Client, db: None) -> None:
    bare = Domain.objects.create(name="bare.example.org")
    assert staff_client.get(reverse("adminconsole:anchor-export", kwargs={"pk": bare.pk})).status_code == 404


# --- Bundles ---------------------------------------------------------------------------------


def _p7b(*made: pkitools.Made) -> bytes:
    return pkcs7.serialize_certificates([m.certificate for m in made], serialization.Encoding.DER)


def _preview_bundle(client: Client, domain: Domain, **fields: Any) -> Any:
    """Step one: the form on the bundle list, which shows the bundle and stores nothing."""
    data = {"name": "Community", "domain": domain.pk, "incoming": "on", "outgoing": "on", **fields}
    return client.post(reverse(BUNDLE_ADD), data)


def _confirmation(step_one: Any, **changes: str) -> dict[str, str]:
    """What the confirmation page's form sends back, box ticked, with ``changes`` made to it."""
    form = step_one.context["form"]
    return {"preview": form["preview"].value(), "upload": form["upload"].value(),
            "confirm": "on", **changes}


def _add_bundle(client: Client, domain: Domain, **fields: Any) -> Any:
    """Both steps: preview the bundle, then confirm exactly what the preview showed."""
    step_one = _preview_bundle(client, domain, **fields)
    assert step_one.status_code == 200, step_one.content
    return client.post(reverse(BUNDLE_ADD), _confirmation(step_one))


def _nothing_stored() -> None:
    assert not TrustBundle.objects.exists()
    assert not TrustBundleEvent.objects.exists()
    assert not TrustAnchor.objects.filter(bundle__isnull=False).exists()
    assert not AuditEvent.objects.filter(action__startswith="bundle.").exists()


def test_bundle_preview_shows_each_anchor_and_stores_nothing(
    staff_client: Client, domain: Domain, partner: pkitools.Made
) -> None:
    trust.import_anchors(partner.pem, domain=domain.name, outgoing=False)  # trusted by hand
    newcomer = pkitools.make_ca("Community Newcomer CA", days=400)
    body = _p7b(partner, newcomer)
    anchors_before = TrustAnchor.objects.count()
    response = _preview_bundle(
        staff_client, domain, upload=SimpleUploadedFile("community-2026.p7b", body)
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "Add the bundle Community for direct.example.org" in page
    assert "uploaded file community-2026.p7b" in page
    assert hashlib.sha256(body).hexdigest() in page
    rows = {row.subject: row for row in response.context["anchors"]}
    assert set(rows) == {"CN=Partner HISP Root", "CN=Community Newcomer CA"}
    for made in (partner, newcomer):
        assert _colons(made.fingerprint.upper()) in page
    assert rows["CN=Community Newcomer CA"].valid_to == (
        f"{newcomer.certificate.not_valid_after_utc:%Y-%m-%d}"
    )
    assert rows["CN=Community Newcomer CA"].trusted == ""
    assert rows["CN=Partner HISP Root"].trusted == "yes, for incoming mail (imported by hand)"
    assert str(response.context["form"]["confirm"].label) == (
        "I have checked these 2 anchors and trust them for direct.example.org "
        "(incoming and outgoing mail)."
    )
    _nothing_stored()
    assert TrustAnchor.objects.count() == anchors_before


def test_confirmed_upload_adds_the_previewed_anchors_and_is_audited(
    staff_client: Client, domain: Domain, sam: Any
) -> None:
    first, second = pkitools.make_ca("Community A"), pkitools.make_ca("Community B")
    body = _p7b(first, second)
    response = _add_bundle(staff_client, domain, upload=SimpleUploadedFile("c.p7b", body))
    bundle = TrustBundle.objects.get(domain=domain)
    assert response.status_code == 302
    assert response["Location"] == reverse("adminconsole:bundle-detail", kwargs={"pk": bundle.pk})
    assert bytes(bundle.uploaded) == body
    assert bundle.anchors.count() == 2
    event = AuditEvent.objects.get(action="bundle.add")
    assert event.actor == sam
    assert event.detail["digest"] == hashlib.sha256(body).hexdigest()
    assert event.detail["anchors"] == 2
    assert event.detail["domain"] == domain.name
    page = staff_client.get(response["Location"])
    assert first.fingerprint[:17].encode() in page.content  # history lists added fingerprints


def test_confirmation_without_the_tick_adds_nothing(staff_client: Client, domain: Domain) -> None:
    step_one = _preview_bundle(
        staff_client, domain, upload=SimpleUploadedFile("c.p7b", _p7b(pkitools.make_ca("A")))
    )
    data = _confirmation(step_one)
    del data["confirm"]
    response = staff_client.post(reverse(BUNDLE_ADD), data)
    assert response.status_code == 400
    assert "Tick the box" in str(response.context["form"].errors["confirm"])
    assert [row.subject for row in response.context["anchors"]] == ["CN=A"]  # shown again
    _nothing_stored()


@pytest.mark.parametrize(
    "tamper,message",
    [
        # Another bundle's bytes in place of the previewed ones.
        ("swap", "was changed"),
        ("not base64", "was changed"),
        ("too long", "larger than"),
        ("signature", "was changed"),
        ("no preview", "was changed"),
    ],
)
def test_a_changed_confirmation_page_adds_nothing_and_starts_again(
    staff_client: Client, domain: Domain, tamper: str, message: str
) -> None:
    step_one = _preview_bundle(
        staff_client, domain, upload=SimpleUploadedFile("c.p7b", _p7b(pkitools.make_ca("A")))
    )
    data = _confirmation(step_one)
    if tamper == "swap":
        other = _p7b(pkitools.make_ca("Impostor"))
        data["upload"] = base64.b64encode(other).decode()
    elif tamper == "not base64":
        data["upload"] = "<script>alert(1)</script>"
    elif tamper == "too long":
        data["upload"] = "A" * (4 * ((MAX_BUNDLE_BYTES + 2) // 3) + 4)
    elif tamper == "signature":
        data["preview"] = data["preview"][:-2] + ("AA" if data["preview"][-2:] != "AA" else "BB")
    else:
        data["preview"] = ""
    response = staff_client.post(reverse(BUNDLE_ADD), data)
    assert response.status_code == 400
    assert message in response.context["problem"]
    assert "form" in response.context and not response.context["form"].is_bound  # the list again
    assert b"<script>alert" not in response.content
    _nothing_stored()


def test_one_staff_member_cannot_confirm_what_another_was_shown(
    staff_client: Client, domain: Domain, make_user: Any
) -> None:
    step_one = _preview_bundle(
        staff_client, domain, upload=SimpleUploadedFile("c.p7b", _p7b(pkitools.make_ca("A")))
    )
    other = verified_client(make_user("tess", staff=True))
    response = other.post(reverse(BUNDLE_ADD), _confirmation(step_one))
    assert response.status_code == 400
    assert "was changed" in response.context["problem"]
    _nothing_stored()


def test_add_bundle_with_another_expected_digest_stores_nothing(domain: Domain) -> None:
    body = _p7b(pkitools.make_ca("A"))
    with pytest.raises(trust.BundleChangedError) as raised:
        trust.add_bundle(body, domain=domain.name, expect_digest="0" * 64)
    assert raised.value.digest == hashlib.sha256(body).hexdigest()
    _nothing_stored()
    outcome = trust.add_bundle(body, domain=domain.name,
                               expect_digest=hashlib.sha256(body).hexdigest())
    assert len(outcome.added) == 1


def _refresh(client: Client, bundle: TrustBundle) -> Any:
    """Both steps of a refresh: look at the preview, then confirm exactly what it showed."""
    url = reverse("adminconsole:bundle-refresh", kwargs={"pk": bundle.pk})
    form = client.get(url).context["form"]
    return client.post(
        url, {"added": form["added"].value(), "removed": form["removed"].value(), "confirm": "on"}
    )


def test_refresh_now_repairs_a_drifted_bundle_and_is_audited(
    staff_client: Client, domain: Domain, sam: Any
) -> None:
    _add_bundle(staff_client, domain, upload=SimpleUploadedFile("c.p7b", _p7b(pkitools.make_ca("A"))))
    bundle = TrustBundle.objects.get(domain=domain)
    (anchor,) = bundle.anchors.all()
    anchor.delete()  # drifted from the bundle: the refresh brings it back
    response = _refresh(staff_client, bundle)
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="bundle.refresh")
    assert event.actor == sam
    assert event.detail["result"] == "ok"
    assert event.detail["added"] == [anchor.certificate.fingerprint_sha256]
    assert bundle.anchors.count() == 1
    assert TrustBundleEvent.objects.filter(bundle=bundle).count() == 2


def test_refresh_failure_keeps_anchors_and_shows_the_error(
    staff_client: Client, domain: Domain, world: Any
) -> None:
    # The world's bundle points at a URL nothing answers; its anchor must survive.
    bundle = world.bundle
    bundle.url = "http://127.0.0.1:9/bundle.p7b"
    TrustBundle.objects.filter(pk=bundle.pk).update(url=bundle.url)
    response = staff_client.get(reverse("adminconsole:bundle-refresh", kwargs={"pk": bundle.pk}))
    assert response.status_code == 200
    assert b"existing anchors were kept" in response.content
    assert b'name="confirm"' not in response.content
    assert TrustAnchor.objects.filter(pk=world.anchor.pk).exists()
    assert not AuditEvent.objects.filter(action="bundle.refresh").exists()


@pytest.mark.parametrize(
    "fields,message",
    [
        ({}, "either a bundle URL or a bundle file"),
        ({"url": "ftp://bundles.example.net/x.p7b"}, "fetched over HTTP or HTTPS"),
        ({"url": "javascript:alert(1)"}, "Enter a valid URL"),
        ({"url": "http://127.0.0.1:9/none.p7b"}, "was not added"),
    ],
)
def test_bundle_add_rejects_bad_sources_with_a_form_error(
    staff_client: Client, domain: Domain, fields: dict[str, str], message: str
) -> None:
    response = _preview_bundle(staff_client, domain, **fields)
    assert response.status_code == 400
    assert message in str(response.context["form"].errors)
    assert not TrustBundle.objects.exists()


def test_bundle_add_rejects_a_file_that_is_not_a_bundle(staff_client: Client, domain: Domain) -> None:
    response = _preview_bundle(
        staff_client, domain, upload=SimpleUploadedFile("x.p7b", b"<script>alert(1)</script>")
    )
    assert response.status_code == 400
    assert "was not added" in str(response.context["form"].non_field_errors())
    assert b"<script>alert" not in response.content
    assert not TrustBundle.objects.exists()


def test_bundle_add_rejects_a_signer_that_is_not_a_certificate(
    staff_client: Client, domain: Domain
) -> None:
    response = _preview_bundle(
        staff_client, domain,
        upload=SimpleUploadedFile("c.p7b", _p7b(pkitools.make_ca("A"))),
        signer=SimpleUploadedFile("signer.pem", b"nope"),
    )
    assert response.status_code == 400
    assert response.context["form"].errors["signer"]


def _signed_bundle(tmp_path: Path, inner: bytes) -> tuple[bytes, bytes]:
    """(bundle, signer certificate PEM): ``inner`` signed with ``openssl cms`` by a new RSA key
    (the bundle formats in use are RSA-signed)."""
    key, cert = tmp_path / "signer.key", tmp_path / "signer.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
         "-subj", "/CN=Community Bundle Signer", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, timeout=60, check=True,
    )
    (tmp_path / "inner.p7b").write_bytes(inner)
    signed = subprocess.run(
        ["openssl", "cms", "-sign", "-nodetach", "-binary", "-md", "sha256", "-outform", "DER",
         "-in", str(tmp_path / "inner.p7b"), "-signer", str(cert), "-inkey", str(key)],
        capture_output=True, timeout=60, check=True,
    )
    return signed.stdout, cert.read_bytes()


def test_signed_bundle_is_previewed_with_its_pinned_signer_and_added_with_the_pin(
    staff_client: Client, domain: Domain, tmp_path: Path
) -> None:
    member = pkitools.make_ca("Signed Community Member")
    body, signer_pem = _signed_bundle(tmp_path, _p7b(member))
    step_one = _preview_bundle(
        staff_client, domain, upload=SimpleUploadedFile("signed.p7m", body),
        signer=SimpleUploadedFile("signer.pem", signer_pem),
    )
    assert step_one.status_code == 200
    assert "CN=Community Bundle Signer" in step_one.content.decode()
    assert "signature checked" in step_one.content.decode()
    assert [row.subject for row in step_one.context["anchors"]] == ["CN=Signed Community Member"]
    _nothing_stored()
    assert staff_client.post(reverse(BUNDLE_ADD), _confirmation(step_one)).status_code == 302
    bundle = TrustBundle.objects.get(domain=domain)
    pinned = x509.load_pem_x509_certificate(signer_pem).public_bytes(serialization.Encoding.DER)
    assert bytes(bundle.signer_pin) == pinned
    assert {a.certificate.fingerprint_sha256 for a in bundle.anchors.all()} == {member.fingerprint}


def test_bundle_preview_refuses_a_bundle_not_signed_by_the_pinned_signer(
    staff_client: Client, domain: Domain, partner: pkitools.Made
) -> None:
    response = _preview_bundle(
        staff_client, domain,
        upload=SimpleUploadedFile("c.p7b", _p7b(pkitools.make_ca("A"))),
        signer=SimpleUploadedFile("signer.pem", partner.pem),
    )
    assert response.status_code == 400
    assert "a signer is pinned but the bundle is not signed" in str(
        response.context["form"].non_field_errors()
    )
    _nothing_stored()


def test_staff_stops_trusting_an_imported_anchor(staff_client: Client, world: Any, sam: Any) -> None:
    anchor = world.anchor
    response = staff_client.post(
        reverse("adminconsole:anchor-remove", kwargs={"pk": anchor.pk}),
        {"reason": "partner left the community", "confirm": "on"},
    )
    assert response.status_code == 302
    assert not TrustAnchor.objects.filter(pk=anchor.pk).exists()
    event = AuditEvent.objects.get(action="anchor.remove")
    assert event.actor == sam
    assert event.detail["fingerprint"] == anchor.certificate.fingerprint_sha256
    assert event.detail["reason"] == "partner left the community"


def test_a_bundle_anchor_is_not_removed_by_hand(staff_client: Client, world: Any) -> None:
    TrustAnchor.objects.filter(pk=world.anchor.pk).update(bundle=world.bundle)
    response = staff_client.post(
        reverse("adminconsole:anchor-remove", kwargs={"pk": world.anchor.pk}),
        {"reason": "gone", "confirm": "on"},
    )
    assert response.status_code == 400
    assert b"remove the bundle" in response.content
    assert TrustAnchor.objects.filter(pk=world.anchor.pk).exists()
    assert not AuditEvent.objects.filter(action="anchor.remove").exists()


def test_a_domain_keeps_trusting_its_own_ca(staff_client: Client) -> None:
    hosted = identity.add_domain("clinic.example.com")
    own = TrustAnchor.objects.get(domain=hosted, certificate=hosted.issuing_ca)
    response = staff_client.post(
        reverse("adminconsole:anchor-remove", kwargs={"pk": own.pk}),
        {"reason": "gone", "confirm": "on"},
    )
    assert response.status_code == 400
    assert b"always trusts its own" in response.content
    assert TrustAnchor.objects.filter(pk=own.pk).exists()


class _Bundles:
    """A real HTTP server on a free loopback port serving whatever ``body`` holds."""

    def __init__(self) -> None:
        self.body = b""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's hook name
                self.send_response(200)
                self.send_header("Content-Type", "application/pkcs7-mime")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/community.p7b"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def bundle_server() -> Any:
    server = _Bundles()
    yield server
    server.close()


def test_bundle_by_url_is_fetched_and_refresh_now_records_what_changed(
    staff_client: Client, domain: Domain, bundle_server: Any
) -> None:
    first, second, third = (pkitools.make_ca(f"Community {n}") for n in "ABC")
    bundle_server.body = _p7b(first, second)
    response = _add_bundle(staff_client, domain, url=bundle_server.url)
    bundle = TrustBundle.objects.get(domain=domain)
    assert response.status_code == 302
    assert {a.certificate.fingerprint_sha256 for a in bundle.anchors.all()} == {
        first.fingerprint, second.fingerprint
    }
    bundle_server.body = _p7b(second, third)
    assert _refresh(staff_client, bundle).status_code == 302
    event = AuditEvent.objects.get(action="bundle.refresh")
    assert event.detail["added"] == [third.fingerprint]
    assert event.detail["removed"] == [first.fingerprint]
    page = staff_client.get(reverse("adminconsole:bundle-detail", kwargs={"pk": bundle.pk}))
    history = page.context["events"]
    assert [e.result for e in history][:2] == ["ok", "ok"]



def test_bundle_url_preview_fetches_and_shows_the_source(
    staff_client: Client, domain: Domain, bundle_server: Any
) -> None:
    bundle_server.body = _p7b(pkitools.make_ca("Community A"))
    response = _preview_bundle(staff_client, domain, url=bundle_server.url)
    assert response.status_code == 200
    page = response.content.decode()
    assert bundle_server.url in page
    assert hashlib.sha256(bundle_server.body).hexdigest() in page
    assert "fetched again every" in page
    assert response.context["form"]["upload"].value() == ""  # a URL is fetched again, not carried
    _nothing_stored()


def test_bundle_url_that_changed_after_the_preview_adds_nothing_and_shows_it_again(
    staff_client: Client, domain: Domain, bundle_server: Any
) -> None:
    first, second, third = (pkitools.make_ca(f"Community {n}") for n in "ABC")
    bundle_server.body = _p7b(first, second)
    step_one = _preview_bundle(staff_client, domain, url=bundle_server.url)
    bundle_server.body = _p7b(second, third)  # the publisher swaps an anchor meanwhile
    response = staff_client.post(reverse(BUNDLE_ADD), _confirmation(step_one))
    assert response.status_code == 409
    page = response.content.decode()
    assert "The bundle changed since it was previewed: nothing was added." in page
    assert {row.subject for row in response.context["anchors"]} == {
        "CN=Community B", "CN=Community C"
    }
    assert _colons(first.fingerprint.upper()) not in page
    _nothing_stored()
    # Confirming what is shown now adds it.
    assert staff_client.post(reverse(BUNDLE_ADD), _confirmation(response)).status_code == 302
    bundle = TrustBundle.objects.get(domain=domain)
    assert {a.certificate.fingerprint_sha256 for a in bundle.anchors.all()} == {
        second.fingerprint, third.fingerprint
    }


def test_bundle_url_added_by_someone_else_meanwhile_is_not_added_twice(
    staff_client: Client, domain: Domain, bundle_server: Any
) -> None:
    bundle_server.body = _p7b(pkitools.make_ca("Community A"))
    step_one = _preview_bundle(staff_client, domain, url=bundle_server.url)
    trust.add_bundle(bundle_server.url, domain=domain.name)
    response = staff_client.post(reverse(BUNDLE_ADD), _confirmation(step_one))
    assert response.status_code == 400
    assert "already configured" in response.context["problem"]
    assert TrustBundle.objects.count() == 1
    assert not AuditEvent.objects.filter(action="bundle.add", actor__isnull=False).exists()
    # A preview of a URL already configured is refused at once, as adding was.
    again = _preview_bundle(staff_client, domain, url=bundle_server.url)
    assert again.status_code == 400
    assert "already configured" in str(again.context["form"].non_field_errors())


def test_a_preview_confirmed_after_an_hour_adds_nothing_and_says_why(
    staff_client: Client, domain: Domain, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = _p7b(pkitools.make_ca("A"))
    hour_ago = time.time() - PREVIEW_MAX_AGE.total_seconds() - 5
    with monkeypatch.context() as past:
        past.setattr(signing.time, "time", lambda: hour_ago)
        step_one = _preview_bundle(staff_client, domain, upload=SimpleUploadedFile("c.p7b", body))
    response = staff_client.post(reverse(BUNDLE_ADD), _confirmation(step_one))
    assert response.status_code == 400
    assert "more than an hour old" in response.context["problem"]
    _nothing_stored()
    fresh = _preview_bundle(staff_client, domain, upload=SimpleUploadedFile("c.p7b", body))
    assert staff_client.post(reverse(BUNDLE_ADD), _confirmation(fresh)).status_code == 302
