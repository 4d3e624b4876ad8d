"""Trust bundles that list an anchor this HISP cannot use: a public key it cannot read (an SM2
key made by openssl) or a name that is not valid UTF-8. Before, such an anchor was stored and
trusted like the others (the SM2 one), or the whole bundle could not be added or refreshed at
all (the undecodable name raised out of ``add_bundle`` and every scheduled refresh). Now each is
skipped, never stored, with its fingerprint and the reason in the bundle's history, and the
bundle's other anchors keep working."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from agent.trust.validate import validate_signer
from hisp.agent_env import build_environment
from hisp.models import AuditEvent, Certificate, Domain, TrustAnchor, TrustBundle, TrustBundleEvent
from hisp.services import identity, trust
from tests.adminconsole import pkitools
from tests.hisp.pki.support import bundle_server


@pytest.fixture
def hospital(db: None) -> Domain:
    return identity.add_domain("hospital.example.org")


@pytest.fixture(scope="module")
def sm2_ca(tmp_path_factory: pytest.TempPathFactory) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pkitools.make_sm2_ca_pem(tmp_path_factory.mktemp("sm2")))


def _undecodable_ca() -> x509.Certificate:
    der = bytearray(pkitools.make_ca("ZZZZZZ").der)
    # The CN's UTF8String, in the issuer and the subject, made invalid UTF-8.
    at = der.find(b"\x0c\x06ZZZZZZ")
    while at != -1:
        der[at + 2] = 0xFF
        at = der.find(b"\x0c\x06ZZZZZZ", at + 1)
    return x509.load_der_x509_certificate(bytes(der))


def _p7b(*certificates: x509.Certificate) -> bytes:
    return pkcs7.serialize_certificates(list(certificates), serialization.Encoding.DER)


def _fp(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def test_a_bundle_anchor_with_an_unusable_key_is_skipped_with_its_reason_recorded(
    hospital: Domain, sm2_ca: x509.Certificate
) -> None:
    partner = pkitools.make_ca("Partner CA")
    outcome = trust.add_bundle(_p7b(sm2_ca, partner.certificate), domain=hospital.name)
    assert outcome.result == TrustBundle.Result.OK
    assert outcome.added == [partner.fingerprint]
    assert not Certificate.objects.filter(fingerprint_sha256=_fp(sm2_ca)).exists()
    assert _fp(sm2_ca) in outcome.error and "public key" in outcome.error
    event = TrustBundleEvent.objects.get(bundle=outcome.bundle)
    assert _fp(sm2_ca) in event.error and event.added == [partner.fingerprint]
    outcome.bundle.refresh_from_db()
    assert _fp(sm2_ca) in outcome.bundle.last_error


def test_a_bundle_anchor_whose_name_is_not_utf8_is_skipped_and_the_bundle_still_loads(
    hospital: Domain,
) -> None:
    partner, odd = pkitools.make_ca("Partner CA"), _undecodable_ca()
    outcome = trust.add_bundle(_p7b(odd, partner.certificate), domain=hospital.name)
    assert outcome.result == TrustBundle.Result.OK
    assert outcome.added == [partner.fingerprint]
    assert _fp(odd) in outcome.error and "name" in outcome.error
    assert not Certificate.objects.filter(fingerprint_sha256=_fp(odd)).exists()


def test_a_scheduled_refresh_that_meets_such_an_anchor_still_applies_the_others(
    hospital: Domain, sm2_ca: x509.Certificate
) -> None:
    first, second = pkitools.make_ca("First CA"), pkitools.make_ca("Second CA")
    with bundle_server() as server:
        server.body = _p7b(first.certificate)
        bundle = trust.add_bundle(server.url, domain=hospital.name).bundle
        server.body = _p7b(first.certificate, _undecodable_ca(), sm2_ca, second.certificate)
        outcome = trust.refresh_bundle(bundle)
    assert outcome.result == TrustBundle.Result.OK
    assert outcome.added == [second.fingerprint] and outcome.removed == []
    assert set(
        TrustAnchor.objects.filter(bundle=bundle).values_list(
            "certificate__fingerprint_sha256", flat=True)
    ) == {first.fingerprint, second.fingerprint}


def test_a_bundle_of_nothing_but_unusable_anchors_is_refused(
    hospital: Domain, sm2_ca: x509.Certificate
) -> None:
    with pytest.raises(trust.BundleFormatError, match="no usable"):
        trust.add_bundle(_p7b(sm2_ca, _undecodable_ca()), domain=hospital.name)
    assert not TrustBundle.objects.exists()


def test_the_preview_lists_only_usable_anchors_and_says_which_were_skipped(
    hospital: Domain, sm2_ca: x509.Certificate
) -> None:
    partner, odd = pkitools.make_ca("Partner CA"), _undecodable_ca()
    preview = trust.preview_bundle(_p7b(sm2_ca, odd, partner.certificate), domain=hospital.name)
    assert [_fp(c) for c in preview.anchors] == [partner.fingerprint]
    reasons = dict(preview.skipped)
    assert set(reasons) == {_fp(sm2_ca), _fp(odd)}
    assert "public key" in reasons[_fp(sm2_ca)] and "name" in reasons[_fp(odd)]


def test_the_refresh_preview_says_which_anchors_it_skips(
    hospital: Domain, sm2_ca: x509.Certificate
) -> None:
    partner = pkitools.make_ca("Partner CA")
    bundle = trust.add_bundle(_p7b(partner.certificate), domain=hospital.name).bundle
    change = trust.preview_refresh(bundle, body=_p7b(partner.certificate, sm2_ca))
    assert change.unchanged and change.kept == 1
    assert [fp for fp, _why in change.skipped] == [_fp(sm2_ca)]


def test_mail_signed_under_the_bundles_other_anchor_still_validates(
    hospital: Domain, sm2_ca: x509.Certificate
) -> None:
    partner = pkitools.make_ca("Partner CA")
    signer = pkitools.make_leaf(partner, "doctor@partner.example.net")
    trust.add_bundle(_p7b(sm2_ca, _undecodable_ca(), partner.certificate), domain=hospital.name)
    anchor, _path = validate_signer(
        signer.certificate, [], sender="doctor@partner.example.net",
        recipient_domain=hospital.name, env=build_environment(), at=datetime.now(UTC),
    )
    assert anchor == partner.certificate


def test_adding_a_bundle_audits_the_fingerprints_of_the_anchors_it_brought(
    hospital: Domain, sm2_ca: x509.Certificate
) -> None:
    first, second = pkitools.make_ca("First CA"), pkitools.make_ca("Second CA")
    trust.add_bundle(_p7b(first.certificate, second.certificate, sm2_ca), domain=hospital.name)
    event = AuditEvent.objects.get(action="bundle.add")
    assert event.detail["added"] == sorted([first.fingerprint, second.fingerprint])
    assert event.detail["anchors"] == 2
    assert [s["fingerprint"] for s in event.detail["skipped"]] == [_fp(sm2_ca)]


def test_importing_an_anchor_with_an_unusable_key_by_hand_is_refused(
    hospital: Domain, sm2_ca: x509.Certificate
) -> None:
    pem = sm2_ca.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(trust.TrustError, match="public key algorithm .* is not supported"):
        trust.import_anchors(pem, domain=hospital.name)
    assert not TrustAnchor.objects.filter(certificate__fingerprint_sha256=_fp(sm2_ca)).exists()


def test_importing_an_anchor_whose_name_is_not_utf8_is_a_clear_refusal(hospital: Domain) -> None:
    odd = _undecodable_ca()
    with pytest.raises(trust.TrustError, match="name does not decode"):
        trust.import_anchors(odd.public_bytes(serialization.Encoding.DER), domain=hospital.name)
    assert not Certificate.objects.filter(fingerprint_sha256=_fp(odd)).exists()


def test_the_skipped_anchors_named_in_a_bundles_last_result_are_bounded() -> None:
    skipped = [(f"{n:064x}", "its public key algorithm (1.2.3) is not supported here")
               for n in range(12)]
    text = trust.skipped_text(skipped)
    assert text.startswith("skipped 12 listed anchor(s)") and text.endswith("; and 2 more")
    assert f"{9:064x}" in text and f"{10:064x}" not in text


def test_a_pinned_signer_this_hisp_cannot_use_is_refused_before_anything_is_fetched(
    hospital: Domain, sm2_ca: x509.Certificate
) -> None:
    partner = pkitools.make_ca("Partner CA")
    for signer in (sm2_ca, _undecodable_ca()):
        with pytest.raises(trust.TrustError, match="signer certificate: its"):
            trust.preview_bundle(
                _p7b(partner.certificate), domain=hospital.name,
                signer_pin=signer.public_bytes(serialization.Encoding.DER),
            )


def test_the_consoles_confirmation_pages_name_the_anchors_not_usable_here(
    hospital: Domain, sm2_ca: x509.Certificate
) -> None:
    from django.utils import timezone

    from adminconsole import impact

    partner = pkitools.make_ca("Partner CA")
    body = _p7b(sm2_ca, partner.certificate)
    adding = impact.bundle_addition(
        trust.preview_bundle(body, domain=hospital.name), name="Partners", incoming=True,
        outgoing=True, file_name="partners.p7b", now=timezone.now(),
        refresh_interval=timezone.timedelta(hours=1),
    )
    bundle = trust.add_bundle(_p7b(partner.certificate), domain=hospital.name).bundle
    refreshing = impact.bundle_refresh(trust.preview_refresh(bundle, body=body),
                                       now=timezone.now())
    for page in (adding.impact, refreshing):
        (shown,) = [fact.value for fact in page.facts if fact.label == "Not usable here"]
        assert _fp(sm2_ca) in shown and "public key" in shown
