from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from hisp.models import AuditEvent, Domain, TrustAnchor, TrustBundle, TrustBundleEvent
from hisp.services import identity
from tests.adminconsole import pkitools

IMPORT = "adminconsole:anchor-import"
CONFIRM = "adminconsole:anchor-confirm"


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


def _add_bundle(client: Client, domain: Domain, **fields: Any) -> Any:
    data = {"name": "Community", "domain": domain.pk, "incoming": "on", "outgoing": "on", **fields}
    return client.post(reverse("adminconsole:bundle-add"), data)


def test_uploaded_bundle_adds_its_anchors_and_is_audited(
    staff_client: Client, domain: Domain, sam: Any
) -> None:
    first, second = pkitools.make_ca("Community A"), pkitools.make_ca("Community B")
    response = _add_bundle(
        staff_client, domain, upload=SimpleUploadedFile("c.p7b", _p7b(first, second))
    )
    bundle = TrustBundle.objects.get(domain=domain)
    assert response.status_code == 302
    assert response["Location"] == reverse("adminconsole:bundle-detail", kwargs={"pk": bundle.pk})
    assert bundle.anchors.count() == 2
    assert AuditEvent.objects.get(action="bundle.add").actor == sam
    page = staff_client.get(response["Location"])
    assert first.fingerprint[:17].encode() in page.content  # history lists added fingerprints


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
    response = _add_bundle(staff_client, domain, **fields)
    assert response.status_code == 400
    assert message in str(response.context["form"].errors)
    assert not TrustBundle.objects.exists()


def test_bundle_add_rejects_a_file_that_is_not_a_bundle(staff_client: Client, domain: Domain) -> None:
    response = _add_bundle(
        staff_client, domain, upload=SimpleUploadedFile("x.p7b", b"<script>alert(1)</script>")
    )
    assert response.status_code == 400
    assert "was not added" in str(response.context["form"].non_field_errors())
    assert b"<script>alert" not in response.content
    assert not TrustBundle.objects.exists()


def test_bundle_add_rejects_a_signer_that_is_not_a_certificate(
    staff_client: Client, domain: Domain
) -> None:
    response = _add_bundle(
        staff_client, domain,
        upload=SimpleUploadedFile("c.p7b", _p7b(pkitools.make_ca("A"))),
        signer=SimpleUploadedFile("signer.pem", b"nope"),
    )
    assert response.status_code == 400
    assert response.context["form"].errors["signer"]


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
