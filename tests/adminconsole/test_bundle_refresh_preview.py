"""Refreshing a trust bundle from the console is two steps: the bundle is fetched and verified
and the anchors it would add and remove are shown, changing nothing; a confirmation applies
exactly those changes, and a bundle that changed in between is shown again instead of applied.

The bundles come from a real HTTP server on loopback: the shared interop vectors, and bundles
signed here with ``openssl cms``."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from hisp.certificates import display_fingerprint, fingerprint
from hisp.models import AuditEvent, Domain, TrustAnchor, TrustBundle, TrustBundleEvent
from hisp.services import trust
from tests.adminconsole import pkitools
from tests.hisp.pki.support import BundleServer, bundle_server

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "bundles"
SIGNED_AT = datetime(2020, 9, 13, tzinfo=UTC)  # the vector's pinned signer expired in 2022
WHERE = "198.51.100.31"


def _vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


# Six real-world anchors (the Java reference implementation's provider test bundle), in the
# order the bundle lists them.
SIX = trust.parse_bundle(_vector("java_providerTestBundle.p7b"))


def _p7b(*certificates: x509.Certificate) -> bytes:
    return pkcs7.serialize_certificates(list(certificates), serialization.Encoding.DER)


def _fps(*certificates: x509.Certificate) -> list[str]:
    return sorted(fingerprint(c) for c in certificates)


@pytest.fixture
def server() -> Iterator[BundleServer]:
    with bundle_server() as running:
        yield running


def _url(bundle: TrustBundle) -> str:
    return reverse("adminconsole:bundle-refresh", kwargs={"pk": bundle.pk})


def _add(server: BundleServer, domain: Domain, body: bytes, **options: Any) -> TrustBundle:
    server.body = body
    return trust.add_bundle(server.url, domain=domain.name, name="Community", **options).bundle


def _anchors(bundle: TrustBundle) -> set[str]:
    return set(
        TrustAnchor.objects.filter(bundle=bundle).values_list(
            "certificate__fingerprint_sha256", flat=True
        )
    )


@dataclass(frozen=True)
class Snapshot:
    """Everything a preview must leave as it was."""

    anchors: set[str]
    events: int
    fetched: datetime | None
    digest: str
    result: str
    audited: int

    @classmethod
    def of(cls, bundle: TrustBundle) -> Snapshot:
        row = TrustBundle.objects.get(pk=bundle.pk)
        return cls(
            anchors=_anchors(bundle),
            events=TrustBundleEvent.objects.filter(bundle=bundle).count(),
            fetched=row.last_fetched_at,
            digest=row.last_digest,
            result=row.last_result,
            audited=AuditEvent.objects.filter(action="bundle.refresh").count(),
        )


def _confirmation(response: Any) -> dict[str, str]:
    form = response.context["form"]
    return {"added": form["added"].value(), "removed": form["removed"].value(), "confirm": "on"}


# --- Step one: the preview -------------------------------------------------------------------


def test_preview_names_the_anchors_added_and_removed_and_changes_nothing(
    staff_client: Client, domain: Domain, server: BundleServer
) -> None:
    bundle = _add(server, domain, _p7b(*SIX[:3]))
    before = Snapshot.of(bundle)
    server.body = _p7b(*SIX[1:5])
    hits = server.hits
    response = staff_client.get(_url(bundle))
    assert response.status_code == 200
    assert server.hits == hits + 1  # fetched for real, not read from the last refresh
    body = response.content.decode()
    listed = [(a.change, a.fingerprint) for a in response.context["impact"].anchors]
    assert listed == [("added", display_fingerprint(fp)) for fp in _fps(*SIX[3:5])] + [
        ("removed", display_fingerprint(fingerprint(SIX[0])))
    ]
    for certificate in (SIX[0], SIX[3], SIX[4]):
        assert escape(certificate.subject.rfc4514_string()) in body
        assert display_fingerprint(fingerprint(certificate)) in body
    assert "direct.example.org (incoming and outgoing mail)" in body
    assert "direct.example.org starts trusting 2 anchors from this bundle" in body
    assert "Incoming mail signed under the 1 removed anchor is refused" in body
    assert "2 other anchors from this bundle stay as they are." in body
    assert 'name="confirm"' in body
    assert "<script" not in body
    form = response.context["form"]
    assert form["added"].value().split() == _fps(*SIX[3:5])
    assert form["removed"].value().split() == _fps(SIX[0])
    assert Snapshot.of(bundle) == before


def test_a_refresh_that_changes_nothing_says_so_and_offers_nothing_to_confirm(
    staff_client: Client, domain: Domain, server: BundleServer
) -> None:
    bundle = _add(server, domain, _p7b(*SIX[:3]))
    before = Snapshot.of(bundle)
    response = staff_client.get(_url(bundle))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Refreshing changes nothing: the bundle lists the same 3 anchors" in body
    assert 'name="confirm"' not in body
    posted = staff_client.post(_url(bundle), {"added": "", "removed": "", "confirm": "on"})
    assert posted.status_code == 400
    assert "Refreshing changes nothing" in posted.content.decode()
    assert Snapshot.of(bundle) == before


def test_preview_says_when_a_removed_anchor_stays_trusted_through_another(
    staff_client: Client, domain: Domain, server: BundleServer
) -> None:
    bundle = _add(server, domain, _p7b(*SIX[:2]))
    trust.import_anchors(SIX[0].public_bytes(serialization.Encoding.PEM), domain=domain.name)
    server.body = _p7b(SIX[1])
    body = staff_client.get(_url(bundle)).content.decode()
    assert "still trusted through another anchor" in body
    assert "is refused" not in body  # the domain loses no trust


def test_anchor_subjects_are_escaped(
    staff_client: Client, domain: Domain, server: BundleServer
) -> None:
    bundle = _add(server, domain, _p7b(SIX[0]))
    hostile = pkitools.make_ca("<script>alert(1)</script>").certificate
    server.body = _p7b(hostile)
    body = staff_client.get(_url(bundle)).content.decode()
    assert "<script>alert" not in body
    assert escape(hostile.subject.rfc4514_string()) in body
    assert "&lt;script" in body


# --- Step two: applying what was previewed ---------------------------------------------------


def test_confirming_applies_exactly_the_preview_and_is_audited(
    staff_client: Client, domain: Domain, server: BundleServer, sam: Any
) -> None:
    bundle = _add(server, domain, _p7b(*SIX[:3]))
    server.body = _p7b(*SIX[1:5])
    data = _confirmation(staff_client.get(_url(bundle)))
    response = staff_client.post(_url(bundle), data, REMOTE_ADDR=WHERE, follow=True)
    assert response.redirect_chain[-1][0] == reverse(
        "adminconsole:bundle-detail", kwargs={"pk": bundle.pk}
    )
    assert "Refreshed: 2 added, 1 removed." in response.content.decode()
    assert _anchors(bundle) == set(_fps(*SIX[1:5]))
    event = AuditEvent.objects.get(action="bundle.refresh")
    assert (event.actor, event.client_address) == (sam, WHERE)
    assert event.object_id == str(bundle.pk)
    assert event.detail["result"] == "ok"
    assert event.detail["added"] == _fps(*SIX[3:5])
    assert event.detail["removed"] == _fps(SIX[0])
    history = TrustBundleEvent.objects.filter(bundle=bundle).first()
    assert (history.added, history.removed) == (_fps(*SIX[3:5]), _fps(SIX[0]))
    assert event.detail["digest"] == history.digest


def test_a_bundle_that_changed_after_the_preview_is_not_applied_but_previewed_again(
    staff_client: Client, domain: Domain, server: BundleServer
) -> None:
    bundle = _add(server, domain, _p7b(*SIX[:3]))
    server.body = _p7b(*SIX[1:5])
    seen = _confirmation(staff_client.get(_url(bundle)))
    before = Snapshot.of(bundle)
    server.body = _p7b(*SIX[2:6])  # the partner published again in between
    response = staff_client.post(_url(bundle), seen)
    assert response.status_code == 400
    body = response.content.decode()
    assert "The bundle changed since it was previewed: nothing was applied." in body
    assert Snapshot.of(bundle) == before
    # The new changes are shown, with a fresh box to tick.
    assert [a.change for a in response.context["impact"].anchors] == ["added"] * 3 + ["removed"] * 2
    assert escape(SIX[5].subject.rfc4514_string()) in body
    again = _confirmation(response)
    assert again["added"].split() == _fps(*SIX[3:6])
    assert not response.context["form"].is_bound
    assert staff_client.post(_url(bundle), again).status_code == 302
    assert _anchors(bundle) == set(_fps(*SIX[2:6]))
    assert AuditEvent.objects.filter(action="bundle.refresh").count() == 1


def test_a_scheduled_refresh_between_preview_and_confirmation_makes_it_stale(
    staff_client: Client, domain: Domain, server: BundleServer
) -> None:
    bundle = _add(server, domain, _p7b(*SIX[:3]))
    server.body = _p7b(*SIX[1:5])
    seen = _confirmation(staff_client.get(_url(bundle)))
    trust.refresh_bundle(bundle)  # the periodic task applies the same bundle first
    response = staff_client.post(_url(bundle), seen)
    assert response.status_code == 400
    body = response.content.decode()
    assert "changed since it was previewed" in body
    assert "Refreshing changes nothing" in body
    assert not AuditEvent.objects.filter(action="bundle.refresh").exists()


def test_a_bundle_removed_by_someone_else_while_confirming_is_said_not_a_500(
    staff_client: Client, domain: Domain, server: BundleServer, monkeypatch: Any
) -> None:
    from adminconsole import services

    bundle = _add(server, domain, _p7b(*SIX[:3]))
    server.body = _p7b(*SIX[1:5])
    seen = _confirmation(staff_client.get(_url(bundle)))
    apply = services.apply_previewed_refresh

    def removed_first(**kwargs: Any) -> Any:
        # Another staff member's removal commits after this request loaded the bundle.
        TrustBundle.objects.filter(pk=bundle.pk).delete()
        return apply(**kwargs)

    monkeypatch.setattr(services, "apply_previewed_refresh", removed_first)
    response = staff_client.post(_url(bundle), seen, follow=True)
    assert response.redirect_chain[-1][0] == reverse("adminconsole:bundle-list")
    assert "was removed" in response.content.decode()
    assert not AuditEvent.objects.filter(action="bundle.refresh").exists()


def test_the_same_confirmation_twice_applies_once(
    staff_client: Client, domain: Domain, server: BundleServer
) -> None:
    bundle = _add(server, domain, _p7b(*SIX[:3]))
    server.body = _p7b(*SIX[1:5])
    seen = _confirmation(staff_client.get(_url(bundle)))
    assert staff_client.post(_url(bundle), seen).status_code == 302
    assert staff_client.post(_url(bundle), seen).status_code == 400
    assert AuditEvent.objects.filter(action="bundle.refresh").count() == 1
    assert TrustBundleEvent.objects.filter(bundle=bundle).count() == 2  # add, one refresh


@pytest.mark.parametrize(
    "data",
    [
        {"confirm": "on"},
        {"added": "zz", "removed": "", "confirm": "on"},
        {"added": "", "removed": "<script>", "confirm": "on"},
    ],
    ids=["no-preview", "not-hex", "markup"],
)
def test_a_confirmation_without_a_valid_preview_applies_nothing(
    staff_client: Client, domain: Domain, server: BundleServer, data: dict[str, str]
) -> None:
    bundle = _add(server, domain, _p7b(*SIX[:3]))
    server.body = _p7b(*SIX[1:5])
    before = Snapshot.of(bundle)
    response = staff_client.post(_url(bundle), data)
    assert response.status_code == 400
    assert b"nothing was applied" in response.content
    assert b"<script>" not in response.content
    assert Snapshot.of(bundle) == before


def test_a_preview_without_the_box_ticked_applies_nothing(
    staff_client: Client, domain: Domain, server: BundleServer
) -> None:
    bundle = _add(server, domain, _p7b(*SIX[:3]))
    server.body = _p7b(*SIX[1:5])
    seen = _confirmation(staff_client.get(_url(bundle)))
    before = Snapshot.of(bundle)
    response = staff_client.post(_url(bundle), {**seen, "confirm": ""})
    assert response.status_code == 400
    assert response.context["form"].errors["confirm"]
    assert response.context["form"]["confirm"].label.startswith("I have checked these anchors")
    assert Snapshot.of(bundle) == before


# --- What counts as a valid bundle is the refresh's: failures change nothing ------------------


def _pin(der: bytes) -> Callable[[BundleServer, TrustBundle], None]:
    def change(server: BundleServer, bundle: TrustBundle) -> None:
        TrustBundle.objects.filter(pk=bundle.pk).update(signer_pin=der)

    return change


def _serve(body: bytes) -> Callable[[BundleServer, TrustBundle], None]:
    def change(server: BundleServer, bundle: TrustBundle) -> None:
        server.body = body

    return change


def _fail(server: BundleServer, bundle: TrustBundle) -> None:
    server.status = 500


FAILURES = {
    # The vector's pinned signer expired in 2022: valid when added, not now.
    "pinned-signer-expired": (lambda s, b: None, "not valid at"),
    "unsigned-while-pinned": (_serve(_vector("java_signedbundle.p7b")), "not signed"),
    "other-signer-pinned": (
        _pin(_vector("java_wrong_signer_sm1_root.der")), "not by the pinned signer"
    ),
    "unreadable-pin": (_pin(b"not a certificate"), "pinned signer certificate is unreadable"),
    "invalid-bundle": (_serve(_vector("java_invalidBundle.der")), "not a PKCS#7 bundle"),
    "server-error": (_fail, "fetch failed"),
}


@pytest.mark.parametrize("name", sorted(FAILURES))
def test_a_bundle_that_fails_verification_is_not_offered_and_nothing_changes(
    staff_client: Client, domain: Domain, server: BundleServer, name: str
) -> None:
    bundle = _add(
        server, domain, _vector("java_signedbundle.p7m"),
        signer_pin=_vector("java_bundleSigner.der"), at=SIGNED_AT,
    )
    assert len(_anchors(bundle)) == 1
    breaks, message = FAILURES[name]
    breaks(server, bundle)
    before = Snapshot.of(bundle)
    response = staff_client.get(_url(bundle))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Refresh failed" in body and message in body
    assert "the existing anchors were kept" in body
    assert 'name="confirm"' not in body
    posted = staff_client.post(_url(bundle), {"added": "", "removed": "", "confirm": "on"})
    assert posted.status_code == 400
    assert Snapshot.of(bundle) == before


def test_a_bundle_that_breaks_after_the_preview_is_not_applied(
    staff_client: Client, domain: Domain, server: BundleServer
) -> None:
    bundle = _add(server, domain, _p7b(*SIX[:3]))
    server.body = _p7b(*SIX[1:5])
    seen = _confirmation(staff_client.get(_url(bundle)))
    server.body = _vector("java_invalidBundle.der")
    before = Snapshot.of(bundle)
    response = staff_client.post(_url(bundle), seen)
    assert response.status_code == 400
    assert b"Refresh failed" in response.content
    assert Snapshot.of(bundle) == before


def test_the_vectors_signed_bundle_without_a_pin_is_previewed_and_applied(
    staff_client: Client, domain: Domain, server: BundleServer
) -> None:
    bundle = _add(server, domain, _vector("dotnet_bundleNoMetadata.p7b"))
    two = trust.parse_bundle(_vector("dotnet_bundleNoMetadata.p7b"))
    # CMS SignedData around a .p7b; without a pin its (SHA-1) signature is still checked.
    server.body = _vector("java_signedbundle.p7m")
    response = staff_client.get(_url(bundle))
    body = response.content.decode()
    (sm1,) = trust.parse_bundle(_vector("java_signedbundle.p7m"))
    assert "ST=MO,C=US,CN=sm1.direct.com Root CA" in body
    assert [(a.change, a.fingerprint) for a in response.context["impact"].anchors] == [
        ("added", display_fingerprint(fingerprint(sm1)))
    ] + [("removed", display_fingerprint(fp)) for fp in _fps(*two)]
    assert "Incoming mail signed under the 2 removed anchors is refused" in body
    assert staff_client.post(_url(bundle), _confirmation(response)).status_code == 302
    assert _anchors(bundle) == {fingerprint(sm1)}


def test_the_same_anchor_published_in_another_format_changes_nothing(
    staff_client: Client, domain: Domain, server: BundleServer
) -> None:
    # The gateway's certs-only bundle and the signed Java bundle list the same anchor.
    bundle = _add(server, domain, _vector("gateway_testBundle.p7b"))
    server.body = _vector("java_signedbundle.p7m")
    body = staff_client.get(_url(bundle)).content.decode()
    assert "Refreshing changes nothing: the bundle lists the same 1 anchor" in body


# --- Signed bundles with a pinned signer, signed here with openssl -----------------------------


@dataclass(frozen=True)
class Signer:
    certificate: x509.Certificate
    key: rsa.RSAPrivateKey


def _signer(common_name: str) -> Signer:
    # RSA: the agent verifies RSA signatures (the bundle formats in use are RSA-signed).
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return Signer(certificate, key)


def _signed(tmp_path: Path, signer: Signer, inner: bytes) -> bytes:
    cert = tmp_path / "signer.pem"
    key = tmp_path / "signer.key"
    data = tmp_path / "bundle.p7b"
    cert.write_bytes(signer.certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(signer.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    data.write_bytes(inner)
    done = subprocess.run(
        ["openssl", "cms", "-sign", "-nodetach", "-binary", "-md", "sha256", "-outform", "DER",
         "-in", str(data), "-signer", str(cert), "-inkey", str(key)],
        capture_output=True, timeout=60, check=True,
    )
    return done.stdout


def test_a_signed_bundle_is_previewed_and_applied_only_under_its_pinned_signer(
    staff_client: Client, domain: Domain, server: BundleServer, tmp_path: Path
) -> None:
    signer = _signer("Community Bundle Signer")
    bundle = _add(
        server, domain, _signed(tmp_path, signer, _p7b(*SIX[:2])),
        signer_pin=signer.certificate.public_bytes(serialization.Encoding.DER),
    )
    assert _anchors(bundle) == set(_fps(*SIX[:2]))
    # The partner adds an anchor and signs again: previewed, then applied.
    server.body = _signed(tmp_path, signer, _p7b(*SIX[:3]))
    response = staff_client.get(_url(bundle))
    assert [a.change for a in response.context["impact"].anchors] == ["added"]
    seen = _confirmation(response)
    # Re-signed (a new signature over the same list) before the confirmation: the same
    # changes, so the confirmation still applies.
    server.body = _signed(tmp_path, signer, _p7b(*SIX[:3]))
    assert staff_client.post(_url(bundle), seen).status_code == 302
    assert _anchors(bundle) == set(_fps(*SIX[:3]))
    # Someone else signs a bundle that drops every anchor: refused, nothing offered.
    server.body = _signed(tmp_path, _signer("Impostor"), _p7b(SIX[5]))
    before = Snapshot.of(bundle)
    refused = staff_client.get(_url(bundle))
    assert "not by the pinned signer" in refused.content.decode()
    assert 'name="confirm"' not in refused.content.decode()
    assert Snapshot.of(bundle) == before
    # The genuine signature over altered content fails verification.
    tampered = bytearray(_signed(tmp_path, signer, _p7b(*SIX[:3])))
    at = bytes(tampered).index(SIX[2].public_bytes(serialization.Encoding.DER)) + 100
    tampered[at] ^= 0x01
    server.body = bytes(tampered)
    assert "bundle signature" in staff_client.get(_url(bundle)).content.decode()
    assert Snapshot.of(bundle) == before


# --- Where the refresh starts, and who may start it ------------------------------------------


def test_the_bundle_pages_link_to_the_preview_instead_of_refreshing(
    staff_client: Client, domain: Domain, server: BundleServer
) -> None:
    bundle = _add(server, domain, _p7b(*SIX[:3]))
    for page in (reverse("adminconsole:bundle-detail", kwargs={"pk": bundle.pk}),
                 reverse("adminconsole:bundle-list")):
        body = staff_client.get(page).content.decode()
        assert f'href="{_url(bundle)}"' in body
        assert f'action="{_url(bundle)}"' not in body


def test_outsiders_cannot_preview_or_confirm_and_nothing_is_fetched(
    outsider_client: Client, client: Client, domain: Domain, server: BundleServer
) -> None:
    bundle = _add(server, domain, _p7b(*SIX[:3]))
    server.body = _p7b(*SIX[1:5])
    hits = server.hits
    data = {"added": " ".join(_fps(*SIX[3:5])), "removed": fingerprint(SIX[0]), "confirm": "on"}
    assert outsider_client.get(_url(bundle)).status_code == 404
    assert outsider_client.post(_url(bundle), data).status_code == 404
    assert client.get(_url(bundle)).status_code == 302
    assert client.post(_url(bundle), data).status_code == 302
    assert server.hits == hits
    assert _anchors(bundle) == set(_fps(*SIX[:3]))


def test_an_unknown_bundle_is_404(staff_client: Client, db: None) -> None:
    assert staff_client.get(reverse("adminconsole:bundle-refresh", kwargs={"pk": 999999})).status_code == 404
