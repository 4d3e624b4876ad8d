"""Trust bundles: the shared vectors, signed bundles with a pinned signer, and refreshes against
a real local HTTP server serving changing bundles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from django.utils import timezone

from agent.types import Direction
from hisp.models import Domain, TrustAnchor, TrustBundle, TrustBundleEvent
from hisp.services import trust
from tests.hisp.pki.conftest import VECTORS
from tests.hisp.pki.support import bundle_server

SIGNED_AT = datetime(2020, 9, 13, tzinfo=UTC)  # the vector's signer expired in 2022


def _vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def _bundle_anchors(bundle: TrustBundle) -> int:
    return TrustAnchor.objects.filter(bundle=bundle).count()


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("java_signedbundle.p7b", 1),
        ("java_signedbundle.p7m", 1),
        ("java_providerTestBundle.p7b", 6),
        ("gateway_testBundle.p7b", 1),
        ("dotnet_bundleNoMetadata.p7b", 2),
        ("dotnet_bundleWithMetadata.p7b", 2),
        ("dotnet_bundlePEM.p7b", 8),
    ],
)
def test_shared_bundle_vectors_give_the_listed_anchor_counts(
    provider: Domain, name: str, count: int
) -> None:
    outcome = trust.add_bundle(_vector(name), domain=provider.name)
    assert outcome.result == TrustBundle.Result.OK
    assert len(outcome.added) == count
    assert _bundle_anchors(outcome.bundle) == count


def test_signed_bundle_with_pinned_signer_loads_at_its_signing_time(provider: Domain) -> None:
    outcome = trust.add_bundle(
        _vector("java_signedbundle.p7m"), domain=provider.name,
        signer_pin=_vector("java_bundleSigner.der"), at=SIGNED_AT,
    )
    assert outcome.result == TrustBundle.Result.OK and len(outcome.added) == 1
    (anchor,) = TrustAnchor.objects.filter(bundle=outcome.bundle)
    assert "sm1.direct.com Root CA" in anchor.certificate.subject


def test_signed_bundle_pinned_to_the_wrong_signer_gives_zero_anchors_and_a_signature_error(
    provider: Domain,
) -> None:
    before = TrustAnchor.objects.count()
    with pytest.raises(trust.BundleSignatureError, match="not by the pinned signer"):
        trust.add_bundle(
            _vector("java_signedbundle.p7m"), domain=provider.name,
            signer_pin=_vector("java_wrong_signer_sm1_root.der"), at=SIGNED_AT,
        )
    assert TrustAnchor.objects.count() == before
    assert not TrustBundle.objects.exists()


def test_pinned_signer_outside_its_validity_is_a_signature_error(provider: Domain) -> None:
    with pytest.raises(trust.BundleSignatureError, match="not valid at"):
        trust.parse_bundle(
            _vector("java_signedbundle.p7m"),
            signer_pin=x509.load_der_x509_certificate(_vector("java_bundleSigner.der")),
            at=datetime(2023, 1, 1, tzinfo=UTC),
        )


def test_pinned_signer_refuses_an_unsigned_bundle(db: None) -> None:
    with pytest.raises(trust.BundleSignatureError, match="not signed"):
        trust.parse_bundle(
            _vector("java_signedbundle.p7b"),
            signer_pin=x509.load_der_x509_certificate(_vector("java_bundleSigner.der")),
        )


def test_tampered_signed_bundle_is_a_signature_error(db: None) -> None:
    data = bytearray(_vector("java_signedbundle.p7m"))
    index = data.index(b"MIID") + 200  # inside the signed content (a base64 PEM body)
    data[index] = ord("A") if data[index] != ord("A") else ord("B")
    with pytest.raises(trust.BundleSignatureError):
        trust.parse_bundle(bytes(data))


def test_invalid_bundle_is_a_format_error_and_existing_anchors_are_untouched(
    provider: Domain, tmp_path: Path
) -> None:
    with bundle_server() as server:
        server.body = _vector("java_providerTestBundle.p7b")
        bundle = trust.add_bundle(server.url, domain=provider.name).bundle
        assert _bundle_anchors(bundle) == 6
        server.body = _vector("java_invalidBundle.der")
        assert len(server.body) == 7
        outcome = trust.refresh_bundle(bundle)
    assert outcome.result == TrustBundle.Result.FORMAT_ERROR
    assert _bundle_anchors(bundle) == 6
    bundle.refresh_from_db()
    assert bundle.last_result == TrustBundle.Result.FORMAT_ERROR and bundle.last_error
    event = TrustBundleEvent.objects.filter(bundle=bundle).first()
    assert event.result == TrustBundle.Result.FORMAT_ERROR and event.added == event.removed == []


def test_adding_an_invalid_bundle_file_is_refused(provider: Domain) -> None:
    with pytest.raises(trust.BundleFormatError):
        trust.add_bundle(_vector("java_invalidBundle.der"), domain=provider.name)
    assert not TrustBundle.objects.exists()


def _p7b(*certs: x509.Certificate) -> bytes:
    return pkcs7.serialize_certificates(list(certs), serialization.Encoding.DER)


def _vector_certs(name: str) -> list[x509.Certificate]:
    return trust.parse_bundle(_vector(name))


def test_refresh_follows_a_changing_bundle_with_history(provider: Domain) -> None:
    six = _vector_certs("java_providerTestBundle.p7b")
    with bundle_server() as server:
        server.body = _p7b(*six[:3])
        outcome = trust.add_bundle(server.url, domain=provider.name)
        bundle = outcome.bundle
        assert len(outcome.added) == 3 and outcome.removed == []
        # Unchanged (same SHA-256): nothing changes, no history entry.
        events = TrustBundleEvent.objects.filter(bundle=bundle).count()
        assert trust.refresh_bundle(bundle).result == TrustBundle.Result.UNCHANGED
        assert TrustBundleEvent.objects.filter(bundle=bundle).count() == events
        # Changed: two added, one removed.
        server.body = _p7b(*six[1:5])
        changed = trust.refresh_bundle(bundle)
        assert server.hits == 3
    assert changed.result == TrustBundle.Result.OK
    assert len(changed.added) == 2 and len(changed.removed) == 1
    assert _bundle_anchors(bundle) == 4
    latest = TrustBundleEvent.objects.filter(bundle=bundle).first()
    assert sorted(latest.added) == changed.added and latest.removed == changed.removed
    from hisp.certificates import fingerprint

    assert latest.removed == [fingerprint(six[0])]
    bundle.refresh_from_db()
    import hashlib

    assert bundle.last_digest == hashlib.sha256(_p7b(*six[1:5])).hexdigest()


def test_fetch_failure_keeps_anchors_and_is_recorded(provider: Domain) -> None:
    with bundle_server() as server:
        server.body = _vector("gateway_testBundle.p7b")
        bundle = trust.add_bundle(server.url, domain=provider.name).bundle
        server.status = 500
        outcome = trust.refresh_bundle(bundle)
    assert outcome.result == TrustBundle.Result.FETCH_ERROR and "fetch failed" in outcome.error
    assert _bundle_anchors(bundle) == 1
    assert TrustBundleEvent.objects.filter(
        bundle=bundle, result=TrustBundle.Result.FETCH_ERROR).exists()


def test_bad_signature_on_refresh_keeps_anchors(provider: Domain) -> None:
    with bundle_server() as server:
        server.body = _vector("java_signedbundle.p7m")
        bundle = trust.add_bundle(server.url, domain=provider.name,
                                  signer_pin=_vector("java_bundleSigner.der"),
                                  at=SIGNED_AT).bundle
        server.body = _vector("java_signedbundle.p7b")  # now unsigned: the pin refuses it
        outcome = trust.refresh_bundle(bundle, at=SIGNED_AT)
    assert outcome.result == TrustBundle.Result.SIGNATURE_ERROR
    assert _bundle_anchors(bundle) == 1


def test_unreachable_url_is_refused_when_adding(provider: Domain) -> None:
    with bundle_server() as server:
        url = server.url
    with pytest.raises(trust.BundleFetchError, match="fetch failed"):
        trust.add_bundle(url, domain=provider.name)
    assert not TrustBundle.objects.exists()


def test_bundles_are_due_after_their_interval(provider: Domain, settings: Any) -> None:
    with bundle_server() as server:
        server.body = _vector("gateway_testBundle.p7b")
        bundle = trust.add_bundle(server.url, domain=provider.name).bundle
    assert trust.due_bundles() == []
    later = timezone.now() + settings.HISP_BUNDLE_REFRESH_INTERVAL + timedelta(seconds=1)
    assert trust.due_bundles(at=later) == [bundle]
    TrustBundle.objects.filter(pk=bundle.pk).update(refresh_interval=timedelta(days=1))
    assert trust.due_bundles(at=later) == []


def test_bundle_anchors_follow_the_bundle_directions(provider: Domain) -> None:
    outcome = trust.add_bundle(_vector("gateway_testBundle.p7b"), domain=provider.name,
                               incoming=True, outgoing=False)
    (cert,) = trust.parse_bundle(_vector("gateway_testBundle.p7b"))
    assert cert in trust.anchors_for(provider.name, Direction.INCOMING)
    assert cert not in trust.anchors_for(provider.name, Direction.OUTGOING)
    assert outcome.bundle.last_result == TrustBundle.Result.OK


def test_import_and_export_anchors_with_fingerprints(provider: Domain) -> None:
    exported = trust.export_anchor(provider.name)
    assert exported.fingerprint.count(":") == 31
    other = identity_domain("partner.example.net")
    rows = trust.import_anchors(exported.pem, domain=other.name, incoming=True, outgoing=False)
    (row,) = rows
    assert row.confirmed_fingerprint == provider.issuing_ca.fingerprint_sha256
    assert row.incoming and not row.outgoing
    # Importing again for the other direction widens the same anchor.
    (again,) = trust.import_anchors(exported.pem, domain=other.name, incoming=False, outgoing=True)
    assert again.pk == row.pk and again.incoming and again.outgoing


def test_import_anchor_rejects_garbage_and_unknown_domains(provider: Domain) -> None:
    with pytest.raises(trust.TrustError, match="not a certificate"):
        trust.import_anchors(b"\x00garbage", domain=provider.name)
    with pytest.raises(trust.TrustError, match="not hosted"):
        trust.import_anchors(trust.export_anchor(provider.name).pem, domain="nowhere.example")


def identity_domain(name: str) -> Domain:
    from hisp.services import identity

    return identity.add_domain(name)
