"""Trust anchors per hosted domain (incoming and outgoing) and trust bundles.

Bundles are certs-only PKCS#7 (DER or PEM) or signed bundles: CMS SignedData whose content is
such a .p7b, optionally with a pinned signer certificate (the DirectTrust / Direct Project trust
bundle formats). A refresh only ever changes anchors after a bundle was fetched, parsed and (when
signed) verified: a fetch failure, a format error or a bad signature leaves the existing anchors
as they are and is recorded in the bundle's history.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agent import cms as agent_cms
from agent.errors import AgentError
from agent.trust.fetch import Fetcher, FetchError
from agent.types import AlgorithmPolicy, Direction
from hisp.agent_env import bump_pki_version
from hisp.ca import authority
from hisp.certificates import (
    CertificateFormatError,
    anchor_row,
    display_fingerprint,
    fingerprint,
    lenient_serials,
    load,
    load_certificates,
    to_pem,
)
from hisp.models import Certificate, Domain, TrustAnchor, TrustBundle, TrustBundleEvent
from hisp.services import audit
from hisp.services.identity import Actor, normalise_domain
from hisp.services.outbound import recheck_held_soon

log = logging.getLogger(__name__)

# Published bundles (Direct Project reference implementations, older DirectTrust bundles) are
# signed with SHA-1; the signature only protects transport of a list staff chose to trust, and a
# pinned signer is what actually authenticates it, so SHA-1 is accepted here and nowhere else.
_BUNDLE_SIGNATURE_POLICY = AlgorithmPolicy(allow_sha1_digest=True, allow_sha1_certificates=True)
_MAX_BUNDLE_BYTES = 16 << 20
_SKIPPED_SHOWN = 10  # skipped anchors named in a bundle's last result
_PEM_BLOCK = re.compile(rb"-----BEGIN (PKCS7|CMS)-----(.+?)-----END \1-----", re.S)


class TrustError(ValueError):
    """A trust operation cannot be done as asked (the message says why)."""


class BundleFormatError(TrustError):
    pass


class BundleSignatureError(TrustError):
    pass


class BundleFetchError(TrustError):
    pass


class BundleRemovedError(TrustError):
    """The bundle was removed (by staff) while it was being refreshed: nothing was written."""


def lock_bundle(bundle: TrustBundle) -> TrustBundle | None:
    """Lock a bundle's anchors, then its row, until the transaction ends; None when it is gone.
    Every writer of a bundle (a refresh, staff removing it) locks in this one order, so two of
    them wait for each other instead of deadlocking."""
    list(TrustAnchor.objects.select_for_update().filter(bundle_id=bundle.pk).values("id"))
    return TrustBundle.objects.select_for_update().filter(pk=bundle.pk).first()


# --- Anchors ---------------------------------------------------------------------------------


def _domain(name: str) -> Domain:
    found = Domain.objects.filter(name=normalise_domain(name)).first()
    if found is None:
        raise TrustError(f"domain {name} is not hosted here")
    return found


def anchors_for(domain: str, direction: Direction) -> list[x509.Certificate]:
    """The certificates ``domain`` trusts for mail in ``direction``."""
    flag = Q(incoming=True) if direction == Direction.INCOMING else Q(outgoing=True)
    rows = (
        TrustAnchor.objects.filter(flag, domain__name=domain.lower())
        .select_related("certificate")
        .order_by("pk")
    )
    seen: dict[str, x509.Certificate] = {}
    for row in rows:
        seen.setdefault(row.certificate.fingerprint_sha256, load(row.certificate))
    return list(seen.values())


def import_anchors(
    data: bytes,
    *,
    domain: str,
    incoming: bool = True,
    outgoing: bool = True,
    actor: Actor = None,
    client: str | None = None,  # the staff member's address, for the audit event
) -> list[TrustAnchor]:
    """Trust the certificate(s) in ``data`` (PEM/DER certificate or PKCS#7 bundle) for
    ``domain``. Each SHA-256 fingerprint is recorded as the one shown to the operator."""
    if not (incoming or outgoing):
        raise TrustError("an anchor must be trusted for incoming or outgoing mail (or both)")
    target = _domain(domain)
    try:
        certificates = load_certificates(data)
    except CertificateFormatError as exc:
        raise TrustError(str(exc)) from None
    for certificate in certificates:
        # Refused, as the console refuses it: chosen by hand, so better said than skipped.
        why = unusable(certificate)
        if why:
            raise TrustError(
                f"certificate {fingerprint(certificate)} cannot be a trust anchor here: {why}"
            )
    rows: list[TrustAnchor] = []
    with transaction.atomic():
        for certificate in certificates:
            cert_row = anchor_row(certificate)
            row = TrustAnchor.objects.filter(
                domain=target, certificate=cert_row, bundle__isnull=True
            ).first()
            if row is None:
                row = TrustAnchor.objects.create(
                    certificate=cert_row,
                    domain=target,
                    incoming=incoming,
                    outgoing=outgoing,
                    confirmed_fingerprint=cert_row.fingerprint_sha256,
                )
            else:
                TrustAnchor.objects.filter(pk=row.pk).update(
                    incoming=row.incoming or incoming, outgoing=row.outgoing or outgoing
                )
                bump_pki_version()
                row.refresh_from_db()
            audit.record(action="anchor.import", obj=row, actor=actor, client=client,
                         domain=target.name,
                         fingerprint=cert_row.fingerprint_sha256,
                         incoming=row.incoming, outgoing=row.outgoing)
            rows.append(row)
        if outgoing:
            # A recipient's certificate it vouches for is trusted now, for this domain's senders.
            recheck_held_soon(sender_domain=target.name)
    return rows


@dataclass(frozen=True)
class ExportedAnchor:
    certificate: Certificate
    pem: bytes

    @property
    def fingerprint(self) -> str:
        return display_fingerprint(self.certificate.fingerprint_sha256)


def export_anchor(
    domain: str, *, successor: bool = False, actor: Actor = None, client: str | None = None
) -> ExportedAnchor:
    """The CA that issues ``domain``'s certificates, as partners import it, with its SHA-256
    fingerprint for confirmation out of band. With ``successor``, the CA prepared to replace it
    (hisp.services.ca_rollover), which partners must trust before the rollover is activated."""
    target = _domain(domain)
    if target.issuing_ca is None:
        raise TrustError(f"domain {target.name} has no issuing CA")
    ca = target.issuing_ca
    if successor:
        found = authority.successor(target)
        if found is None:
            raise TrustError(
                f"no CA rollover is under way for {target.name} "
                f"(start one with 'manage.py anchor rollover {target.name}')"
            )
        ca = found
    audit.record(action="anchor.export", obj=ca, actor=actor, client=client,
                 domain=target.name, **({"successor": True} if successor else {}))
    return ExportedAnchor(ca, to_pem([load(ca)]))


# --- Bundle formats ----------------------------------------------------------------------------


def _pem_to_der(data: bytes) -> bytes:
    match = _PEM_BLOCK.search(data)
    if match is None:
        raise BundleFormatError("PEM file holds no PKCS7 block")
    try:
        return base64.b64decode(b"".join(match.group(2).split()), validate=True)
    except (binascii.Error, ValueError):
        raise BundleFormatError("PEM PKCS7 block is not valid base64") from None


def _signed_data(der: bytes) -> asn1_cms.SignedData:
    try:
        info = asn1_cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise BundleFormatError("not a PKCS#7 SignedData bundle")
        signed = info["content"]
        signed["signer_infos"].native  # noqa: B018 (parses lazily: force it here)
        # Each certificate's framing only: its fields are cryptography's to read, one at a time,
        # so that one certificate with a field asn1crypto cannot decode (a name that is not
        # UTF-8) is skipped alone rather than refusing the whole bundle (_bundle_certificates).
        for choice in signed["certificates"] or ():
            choice.chosen.dump()
        return signed
    except BundleFormatError:
        raise
    except (ValueError, TypeError, KeyError, OverflowError):
        raise BundleFormatError("not a PKCS#7 bundle (unparseable DER)") from None


def _bundle_certificates(signed: asn1_cms.SignedData) -> list[x509.Certificate]:
    out: list[x509.Certificate] = []
    for choice in signed["certificates"] or ():
        if choice.name != "certificate":
            continue
        try:
            with lenient_serials():
                out.append(x509.load_der_x509_certificate(choice.chosen.dump()))
        except ValueError:
            raise BundleFormatError("bundle holds an unreadable certificate") from None
    return out


def unusable(certificate: x509.Certificate) -> str:
    """Why this HISP could never use ``certificate`` as a trust anchor ("" when it can): a name
    or extension that does not decode (a name that is not UTF-8, say) or a public key it cannot
    read (an SM2 curve, say). Nothing would ever verify under such an anchor, and its name could
    not be shown or stored."""
    try:
        certificate.subject.rfc4514_string()
        certificate.issuer.rfc4514_string()
    except ValueError:
        return "its subject or issuer name does not decode (not UTF-8, or malformed)"
    try:
        certificate.extensions  # noqa: B018 (parses lazily: force it here)
        certificate.not_valid_before_utc  # noqa: B018
        certificate.not_valid_after_utc  # noqa: B018
    except ValueError:
        return "its extensions or validity do not decode"
    try:
        certificate.public_key()
    except (UnsupportedAlgorithm, ValueError):
        algorithm = certificate.public_key_algorithm_oid.dotted_string
        return f"its public key algorithm ({algorithm}) is not supported here"
    return ""


@dataclass(frozen=True)
class BundleContents:
    anchors: tuple[x509.Certificate, ...]  # in the order the bundle lists them, no duplicates
    # (SHA-256 hex, why) of the anchors it lists that this HISP cannot use: never stored.
    skipped: tuple[tuple[str, str], ...] = ()


def skipped_text(skipped: Sequence[tuple[str, str]]) -> str:
    """The skipped anchors as the bundle's history and last result show them."""
    if not skipped:
        return ""
    # Bounded: a bundle may list thousands (the bundle.add audit event keeps every one).
    each = "; ".join(f"{fp}: {why}" for fp, why in skipped[:_SKIPPED_SHOWN])
    more = f"; and {len(skipped) - _SKIPPED_SHOWN} more" if len(skipped) > _SKIPPED_SHOWN else ""
    return f"skipped {len(skipped)} listed anchor(s) this HISP cannot use: {each}{more}"


def read_bundle(
    data: bytes, *, signer_pin: x509.Certificate | None = None, at: datetime | None = None
) -> BundleContents:
    """The anchors in a trust bundle this HISP can use, and those it skips (with why).

    A signed bundle's signature is always checked; with ``signer_pin`` it must also be signed by
    exactly that certificate, valid at ``at``. A pinned bundle that arrives unsigned is refused,
    and so is a bundle none of whose anchors can be used.
    """
    anchors: list[x509.Certificate] = []
    skipped: list[tuple[str, str]] = []
    for certificate in _listed(data, signer_pin=signer_pin, at=at):
        why = unusable(certificate)
        if why:
            skipped.append((fingerprint(certificate), why))
        else:
            anchors.append(certificate)
    if not anchors:
        raise BundleFormatError(f"bundle holds no usable anchors ({skipped_text(skipped)})")
    return BundleContents(tuple(anchors), tuple(skipped))


def parse_bundle(
    data: bytes, *, signer_pin: x509.Certificate | None = None, at: datetime | None = None
) -> list[x509.Certificate]:
    """The usable anchors in a trust bundle (``read_bundle`` says which it skipped)."""
    return list(read_bundle(data, signer_pin=signer_pin, at=at).anchors)


def _listed(
    data: bytes, *, signer_pin: x509.Certificate | None, at: datetime | None
) -> list[x509.Certificate]:
    """Every certificate a bundle lists, once each, after its signature was checked."""
    when = at or timezone.now()
    body = data
    if not data.strip():
        raise BundleFormatError("empty bundle")
    if data.lstrip().startswith(b"-----BEGIN"):
        body = data.strip()
        if _PEM_BLOCK.search(body) is None:
            if signer_pin is not None:
                raise BundleSignatureError("a signer is pinned but the bundle is not signed")
            try:
                certificates = load_certificates(body)
            except CertificateFormatError as exc:
                raise BundleFormatError(str(exc)) from None
            return _unique(certificates)
        body = _pem_to_der(body)
    signed = _signed_data(body)
    if len(signed["signer_infos"]) == 0:
        # Certs-only (RFC 5652 5.1 "degenerate" SignedData); its content may carry metadata.
        if signer_pin is not None:
            raise BundleSignatureError("a signer is pinned but the bundle is not signed")
        certificates = _bundle_certificates(signed)
    else:
        try:
            verified = agent_cms.verify(body, detached=None, policy=_BUNDLE_SIGNATURE_POLICY)
        except AgentError as exc:
            raise BundleSignatureError(f"bundle signature: {exc}") from None
        if signer_pin is not None:
            pinned = signer_pin.public_bytes(serialization.Encoding.DER)
            if verified.signer.public_bytes(serialization.Encoding.DER) != pinned:
                raise BundleSignatureError(
                    "bundle is signed by "
                    f"{verified.signer.subject.rfc4514_string()}, not by the pinned signer"
                )
            if not (
                verified.signer.not_valid_before_utc <= when <= verified.signer.not_valid_after_utc
            ):
                raise BundleSignatureError(
                    f"the pinned bundle signer is not valid at {when.isoformat()}"
                )
        inner = bytes(verified.content)
        # The signed content is itself a certs-only bundle (.p7b, PEM or DER); never nested again.
        inner_body = inner
        if inner.lstrip().startswith(b"-----BEGIN"):
            inner_body = _pem_to_der(inner)
        inner_signed = _signed_data(inner_body)
        if len(inner_signed["signer_infos"]) != 0:
            raise BundleFormatError("a signed bundle must wrap a certs-only bundle")
        certificates = _bundle_certificates(inner_signed)
    if not certificates:
        raise BundleFormatError("bundle holds no certificates")
    return _unique(certificates)


def _unique(certificates: list[x509.Certificate]) -> list[x509.Certificate]:
    return list({fingerprint(c): c for c in certificates}.values())


# --- Bundles -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefreshOutcome:
    bundle: TrustBundle
    result: str  # TrustBundle.Result
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    error: str = ""  # why it failed; on success, the listed anchors skipped (skipped_text)
    skipped: tuple[tuple[str, str], ...] = ()  # (SHA-256 hex, why): see BundleContents

    @property
    def failed(self) -> bool:
        return self.result in (
            TrustBundle.Result.FETCH_ERROR,
            TrustBundle.Result.FORMAT_ERROR,
            TrustBundle.Result.SIGNATURE_ERROR,
        )


@dataclass(frozen=True)
class _BundleFetcher(Fetcher):
    """Checks the first URL and every redirect target (agent.http): once https, https only.
    An unsigned bundle is only as safe as its transport, and a redirect to plain http (a
    publisher's slip, or one an attacker's server answers) hands its anchors to anyone on the
    path; no pinned signer stands behind most bundles to catch that."""

    https_only: bool = False

    def check_url(self, url: str) -> None:
        if self.https_only and urlsplit(url).scheme.lower() != "https":
            raise FetchError(f"{url}: a bundle fetched over https is not followed to plain http")
        super().check_url(url)


def _fetcher(url: str) -> Fetcher:
    # Bundle URLs are chosen by staff, not taken from certificates a stranger sent, so private
    # networks are allowed (a community may publish its bundle on an internal host).
    return _BundleFetcher(
        timeout=30.0,
        max_bytes=_MAX_BUNDLE_BYTES,
        allow_private_networks=True,
        https_only=urlsplit(url).scheme.lower() == "https",
    )


def _fetch(url: str) -> bytes:
    try:
        return _fetcher(url).get(url)
    except FetchError as exc:
        raise BundleFetchError(f"fetch failed: {exc}") from None
    except (OSError, ValueError) as exc:
        raise BundleFetchError(f"fetch failed: {type(exc).__name__}: {exc}") from None


def _pin(bundle: TrustBundle) -> x509.Certificate | None:
    if not bundle.signer_pin:
        return None
    return x509.load_der_x509_certificate(bytes(bundle.signer_pin))


def _record_failure(
    bundle: TrustBundle, result: str, error: str, digest: str, log_failure: bool
) -> RefreshOutcome:
    now = timezone.now()
    if not TrustBundle.objects.filter(pk=bundle.pk).update(
        last_fetched_at=now, last_result=result, last_error=error[:2000]
    ):
        raise BundleRemovedError(f"bundle {bundle.pk} was removed meanwhile")
    TrustBundleEvent.objects.create(bundle=bundle, result=result, digest=digest, error=error[:2000])
    if log_failure:
        log.warning("trust bundle %s refresh failed: %s", bundle.pk, result)
    bundle.refresh_from_db()
    return RefreshOutcome(bundle, result, error=error)


def refresh_bundle(
    bundle: TrustBundle,
    *,
    at: datetime | None = None,
    body: bytes | None = None,
    force: bool = False,
    log_failure: bool = True,
) -> RefreshOutcome:
    """Fetch (or re-read the upload of) one bundle and bring its anchors in line with it.

    Unchanged content (same SHA-256) changes nothing; ``force`` re-applies it anyway. ``at`` is
    the time the pinned signer must be valid at (default now). ``log_failure=False`` when the
    caller raises the failure itself (a new bundle: it is rolled back, and a warning about it
    would name a bundle that never existed).
    """
    if body is None:
        if bundle.url:
            try:
                body = _fetch(bundle.url)
            except BundleFetchError as exc:
                return _record_failure(
                    bundle, TrustBundle.Result.FETCH_ERROR, str(exc), "", log_failure
                )
        else:
            body = bytes(bundle.uploaded or b"")
    digest = hashlib.sha256(body).hexdigest()
    if digest == bundle.last_digest and not force:
        # The anchors it skipped when these bytes were applied are still skipped: say so still.
        applied = TrustBundleEvent.objects.filter(
            bundle=bundle, result=TrustBundle.Result.OK, digest=digest
        ).values_list("error", flat=True).first()
        if not TrustBundle.objects.filter(pk=bundle.pk).update(
            last_fetched_at=timezone.now(),
            last_result=TrustBundle.Result.UNCHANGED,
            last_error=applied or "",
        ):
            raise BundleRemovedError(f"bundle {bundle.pk} was removed meanwhile")
        bundle.refresh_from_db()
        return RefreshOutcome(bundle, TrustBundle.Result.UNCHANGED)
    try:
        contents = read_bundle(body, signer_pin=_pin(bundle), at=at)
    except BundleSignatureError as exc:
        return _record_failure(
            bundle, TrustBundle.Result.SIGNATURE_ERROR, str(exc), digest, log_failure
        )
    except BundleFormatError as exc:
        return _record_failure(
            bundle, TrustBundle.Result.FORMAT_ERROR, str(exc), digest, log_failure
        )
    wanted = {fingerprint(c): c for c in contents.anchors}
    skipped = skipped_text(contents.skipped)
    with transaction.atomic():
        # Holding the row makes a refresh running at the same time finish first, and the
        # anchors are read again after it: read only before, its new anchors went unseen and
        # were added a second time, and the copy outlived the publisher dropping the anchor.
        if lock_bundle(bundle) is None:
            raise BundleRemovedError(f"bundle {bundle.pk} was removed meanwhile")
        current = {
            row.certificate.fingerprint_sha256: row
            for row in TrustAnchor.objects.filter(bundle=bundle).select_related("certificate")
        }
        added = sorted(set(wanted) - set(current))
        removed = sorted(set(current) - set(wanted))
        for fp in added:
            TrustAnchor.objects.create(
                certificate=anchor_row(wanted[fp]),
                domain_id=bundle.domain_id,
                incoming=bundle.incoming,
                outgoing=bundle.outgoing,
                bundle=bundle,
            )
        TrustAnchor.objects.filter(pk__in=[current[fp].pk for fp in removed]).delete()
        TrustBundle.objects.filter(pk=bundle.pk).update(
            last_digest=digest,
            last_fetched_at=timezone.now(),
            last_result=TrustBundle.Result.OK,
            last_error=skipped,
        )
        TrustBundleEvent.objects.create(
            bundle=bundle, result=TrustBundle.Result.OK, digest=digest, added=added,
            removed=removed, error=skipped,
        )
        if added and bundle.outgoing:
            recheck_held_soon(sender_domain=bundle.domain.name)  # as for an anchor by hand
    bundle.refresh_from_db()
    return RefreshOutcome(
        bundle, TrustBundle.Result.OK, added, removed, error=skipped, skipped=contents.skipped
    )


@dataclass(frozen=True)
class BundleChange:
    """What refreshing ``bundle`` from ``body`` would do to the anchors trusted from it."""

    bundle: TrustBundle
    body: bytes  # exactly the bytes that were parsed and verified, to apply these and no others
    digest: str  # SHA-256 hex of ``body``
    added: tuple[x509.Certificate, ...]  # listed by the bundle, not trusted from it yet
    removed: tuple[Certificate, ...]  # trusted from it, no longer listed
    kept: int  # trusted from it and still listed
    skipped: tuple[tuple[str, str], ...] = ()  # listed but unusable here: see BundleContents

    @property
    def added_fingerprints(self) -> list[str]:
        return sorted(fingerprint(c) for c in self.added)

    @property
    def removed_fingerprints(self) -> list[str]:
        return sorted(row.fingerprint_sha256 for row in self.removed)

    @property
    def unchanged(self) -> bool:
        return not self.added and not self.removed


def preview_refresh(
    bundle: TrustBundle, *, at: datetime | None = None, body: bytes | None = None
) -> BundleChange:
    """What ``refresh_bundle`` would change now, computed without changing anything (not even
    the bundle's history): the bundle is fetched (or its upload re-read), parsed and verified as
    a refresh does it, and compared with the anchors trusted from it.

    A fetch, format or signature failure raises ``BundleFetchError``, ``BundleFormatError`` or
    ``BundleSignatureError``.
    """
    if body is None:
        body = _fetch(bundle.url) if bundle.url else bytes(bundle.uploaded or b"")
    try:
        pin = _pin(bundle)
    except ValueError:
        raise BundleSignatureError("the pinned signer certificate is unreadable") from None
    contents = read_bundle(body, signer_pin=pin, at=at)
    wanted = {fingerprint(c): c for c in contents.anchors}
    current = {
        row.certificate.fingerprint_sha256: row.certificate
        for row in TrustAnchor.objects.filter(bundle=bundle).select_related("certificate")
    }
    return BundleChange(
        bundle=bundle,
        body=body,
        digest=hashlib.sha256(body).hexdigest(),
        added=tuple(wanted[fp] for fp in sorted(set(wanted) - set(current))),
        removed=tuple(current[fp] for fp in sorted(set(current) - set(wanted))),
        kept=len(set(wanted) & set(current)),
        skipped=contents.skipped,
    )


class BundleChangedError(TrustError):
    """The bundle is not the one that was previewed (its SHA-256 differs): nothing was added.
    ``body`` and ``digest`` are what was fetched now, so the caller can show it instead."""

    def __init__(self, message: str, *, body: bytes, digest: str) -> None:
        super().__init__(message)
        self.body = body
        self.digest = digest


@dataclass(frozen=True)
class BundlePreview:
    """What ``add_bundle`` would trust for ``domain``, computed without storing anything."""

    domain: Domain
    url: str  # "" for an uploaded bundle
    body: bytes  # exactly the bytes that were parsed and verified
    digest: str  # SHA-256 hex of ``body``: what ``add_bundle(expect_digest=...)`` must find
    signer: x509.Certificate | None  # the pinned signer the signature was checked against
    anchors: tuple[x509.Certificate, ...]  # in the order the bundle lists them, no duplicates
    skipped: tuple[tuple[str, str], ...] = ()  # listed but unusable here: see BundleContents


def _bundle_source(
    source: str | bytes, *, target: Domain, signer_pin: bytes | None, body: bytes | None = None
) -> tuple[str, bytes, bytes | None]:
    """(url, body, pinned signer DER) as ``add_bundle`` takes them, fetching a URL unless
    ``body`` is given. Shared by the preview so it refuses exactly what adding refuses."""
    pin_der: bytes | None = None
    if signer_pin is not None:
        try:
            pin = load_certificates(signer_pin)[0]
        except CertificateFormatError as exc:
            raise TrustError(f"signer certificate: {exc}") from None
        why = unusable(pin)
        if why:  # no signature could verify under it, and its name could not be shown
            raise TrustError(f"signer certificate: {why}")
        pin_der = pin.public_bytes(serialization.Encoding.DER)
    if isinstance(source, str):
        url = source.strip()
        if not url.lower().startswith(("http://", "https://")):
            raise TrustError("a bundle URL must start with http:// or https://")
        if TrustBundle.objects.filter(domain=target, url=url).exists():
            raise TrustError(f"bundle {url} is already configured for {target.name}")
        return url, _fetch(url) if body is None else body, pin_der
    return "", source, pin_der


def preview_bundle(
    source: str | bytes,
    *,
    domain: str,
    incoming: bool = True,
    outgoing: bool = True,
    signer_pin: bytes | None = None,
    at: datetime | None = None,
    body: bytes | None = None,
) -> BundlePreview:
    """The anchors ``add_bundle`` with the same arguments would trust, storing nothing (not
    even a history row): the URL is fetched, the bundle parsed and its signature checked as
    adding does it. ``body`` stands in for a URL's fetch (one already made).

    Raises what ``add_bundle`` raises: ``TrustError`` for the arguments, ``BundleFetchError``,
    ``BundleFormatError`` or ``BundleSignatureError`` for the bundle.
    """
    target = _domain(domain)
    if not (incoming or outgoing):
        raise TrustError("a bundle must be trusted for incoming or outgoing mail (or both)")
    url, data, pin_der = _bundle_source(source, target=target, signer_pin=signer_pin, body=body)
    try:
        signer = x509.load_der_x509_certificate(pin_der) if pin_der is not None else None
    except ValueError:
        raise BundleSignatureError("the pinned signer certificate is unreadable") from None
    contents = read_bundle(data, signer_pin=signer, at=at)
    return BundlePreview(
        domain=target,
        url=url,
        body=data,
        digest=hashlib.sha256(data).hexdigest(),
        signer=signer,
        anchors=contents.anchors,
        skipped=contents.skipped,
    )


def add_bundle(
    source: str | bytes,
    *,
    domain: str,
    name: str = "",
    incoming: bool = True,
    outgoing: bool = True,
    signer_pin: bytes | None = None,
    refresh_interval: timedelta | None = None,
    at: datetime | None = None,
    expect_digest: str | None = None,
    actor: Actor = None,
    client: str | None = None,  # the staff member's address, for the audit event
) -> RefreshOutcome:
    """Add a bundle from a URL (``str``) or an upload (``bytes``) for ``domain`` and load it.

    The bundle is only kept if it loads: a URL that cannot be fetched, a file that is not a
    bundle or a bad signature is an error and nothing is stored. With ``expect_digest`` (the
    SHA-256 hex of the bundle as previewed, see ``preview_bundle``) a bundle whose bytes differ
    now is refused with ``BundleChangedError`` before anything is written: the publisher may
    have changed it between the preview and the confirmation.
    """
    target = _domain(domain)
    if not (incoming or outgoing):
        raise TrustError("a bundle must be trusted for incoming or outgoing mail (or both)")
    url, body, pin_der = _bundle_source(source, target=target, signer_pin=signer_pin)
    uploaded = None if url else body
    digest = hashlib.sha256(body).hexdigest()
    if expect_digest is not None and digest != expect_digest.strip().lower():
        raise BundleChangedError(
            f"the bundle changed since it was previewed (SHA-256 {digest}, previewed "
            f"{expect_digest})",
            body=body,
            digest=digest,
        )
    with transaction.atomic():
        bundle = TrustBundle.objects.create(
            name=name or url or f"upload {digest[:12]}",
            url=url,
            uploaded=uploaded,
            domain=target,
            incoming=incoming,
            outgoing=outgoing,
            signer_pin=pin_der,
            refresh_interval=refresh_interval,
        )
        outcome = refresh_bundle(bundle, at=at, body=body, log_failure=False)
        if outcome.failed:
            error_type = (
                BundleSignatureError
                if outcome.result == TrustBundle.Result.SIGNATURE_ERROR
                else BundleFormatError
            )
            raise error_type(outcome.error)
        # The fingerprints, as each refresh's history and the bundle.refresh and bundle.remove
        # events record them: an auditor can tell which anchors this bundle brought in.
        audit.record(action="bundle.add", obj=bundle, actor=actor, client=client,
                     domain=target.name,
                     url=url, digest=bundle.last_digest, anchors=len(outcome.added),
                     added=outcome.added,
                     skipped=[{"fingerprint": fp, "reason": why} for fp, why in outcome.skipped])
    return outcome


def due_bundles(*, at: datetime | None = None) -> list[TrustBundle]:
    now = at or timezone.now()
    due = []
    for bundle in TrustBundle.objects.exclude(url="").order_by("pk"):
        interval = bundle.refresh_interval or settings.HISP_BUNDLE_REFRESH_INTERVAL
        if bundle.last_fetched_at is None or bundle.last_fetched_at + interval <= now:
            due.append(bundle)
    return due


def refresh_all(*, due_only: bool = False) -> list[RefreshOutcome]:
    bundles = due_bundles() if due_only else list(TrustBundle.objects.order_by("pk"))
    outcomes = []
    for bundle in bundles:
        try:
            outcomes.append(refresh_bundle(bundle))
        except BundleRemovedError:
            # Removed by staff while the bundles before it were fetched (each may take up to
            # the fetch timeout): nothing to refresh, and no reason to skip the ones after it.
            log.info("trust bundle %s was removed during the refresh", bundle.pk)
    return outcomes
