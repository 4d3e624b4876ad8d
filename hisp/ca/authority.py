"""The built-in certificate authority: issuing CAs and the certificates they issue.

Profiles follow the Direct Applicability Statement 1.2 section 4 and the DirectTrust certificate
policy: SHA-256 with RSA, keyUsage digitalSignature + keyEncipherment (or one of them for a
separate signing/encryption pair), extendedKeyUsage emailProtection, subjectAltName rfc822Name
(address-bound) or dNSName (domain-bound), key identifiers, CRL distribution point and AIA
(caIssuers, OCSP) URLs on this HISP's web address (RFC 5280 sections 4.2.1.13, 4.2.2.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from hisp.ca.publication import ca_issuers_url, crl_url, ocsp_url
from hisp.certificates import load, row_fields
from hisp.keystore import unwrap_private_key, wrap_private_key
from hisp.models import Address, Certificate, Domain, PrivateKey

ALLOWED_KEY_BITS = (2048, 3072, 4096)
# Small backdating so a certificate is valid on peers whose clocks run slightly behind ours.
_CLOCK_SKEW = timedelta(minutes=5)
# No certificate is issued under a CA with less life left than this. A certificate never outlives
# its CA, so one issued in the CA's last days would live days or minutes: partners would fetch
# it (DNS CERT, LDAP) and find it expired by the time they write back, and nothing would tell
# staff that the CA, not the certificate, needs replacing. Refusing says so while the current
# certificates still work, leaving time for the rollover's two steps (docs/pki.md).
MIN_CA_REMAINING = timedelta(days=30)


class CAError(ValueError):
    """A certificate cannot be issued as asked (the message says why)."""


@dataclass(frozen=True)
class Scope:
    """Who a CA issues for: one hosted domain, or every provider / portal domain."""

    label: str  # bound_name of the CA row: the domain, or "community:provider"/"community:portal"
    portal: bool
    domain: Domain | None


def _key(bits: int) -> rsa.RSAPrivateKey:
    if bits not in ALLOWED_KEY_BITS:
        raise CAError(f"RSA key size must be one of {ALLOWED_KEY_BITS}, not {bits}")
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def scope_for(domain: Domain) -> Scope:
    portal = domain.kind == Domain.Kind.PATIENT_PORTAL
    if settings.HISP_CA_SCOPE == "community":
        return Scope(f"community:{'portal' if portal else 'provider'}", portal, None)
    if settings.HISP_CA_SCOPE != "domain":
        raise CAError("HISP_CA_SCOPE must be 'domain' or 'community'")
    return Scope(domain.name, portal, domain)


def _scope_cas(scope: Scope) -> QuerySet[Certificate]:
    """The scope's usable CAs: ours, neither revoked nor replaced by a completed rollover."""
    return Certificate.objects.filter(
        binding=Certificate.Binding.CA,
        source=Certificate.Source.HOSTED,
        bound_name=scope.label,
        revoked_at__isnull=True,
        superseded_by__isnull=True,
    )


def scope_domains(domain: Domain) -> list[Domain]:
    """The hosted domains that issue from the same CA as ``domain`` (just ``domain`` with a CA
    per domain; every provider, or every portal, domain with the community CAs)."""
    if domain.issuing_ca_id is None or scope_for(domain).domain is not None:
        return [domain]
    return list(Domain.objects.filter(issuing_ca_id=domain.issuing_ca_id).order_by("name"))


def successor(domain: Domain) -> Certificate | None:
    """The CA prepared to take over from ``domain``'s issuing CA (hisp.services.ca_rollover):
    the newest usable CA of its scope that no domain issues from yet."""
    if domain.issuing_ca_id is None:
        return None
    return (
        _scope_cas(scope_for(domain))
        .exclude(pk__in=Domain.objects.filter(issuing_ca__isnull=False).values("issuing_ca"))
        .filter(pk__gt=domain.issuing_ca_id)  # made after it (certificate times are in seconds)
        .order_by("-pk")
        .first()
    )


def ca_for(domain: Domain) -> Certificate:
    """The issuing CA for ``domain``: its own, or the shared community one (created if needed).

    Patient-portal domains never share a CA with provider domains: patients are identity-proofed
    differently, and partners decide separately whether to trust each kind. A community CA that
    other domains already issue from wins over a successor still being rolled out.
    """
    scope = scope_for(domain)
    usable = _scope_cas(scope).order_by("-not_after")
    in_use = usable.filter(
        pk__in=Domain.objects.filter(issuing_ca__isnull=False).values("issuing_ca")
    ).first()
    return in_use or usable.first() or create_ca(scope)


def create_ca(scope: Scope, *, at: datetime | None = None) -> Certificate:
    now = at or timezone.now()
    key = _key(settings.HISP_CA_KEY_BITS)
    kind = "Patient Portal" if scope.portal else "Provider"
    if scope.domain is not None:
        common_name = f"{scope.domain.name} {kind} Direct CA"
    else:
        common_name = f"{settings.HISP_HOSTNAME} {kind} Community Direct CA"
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "HISP"),
        ]
    )
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + settings.HISP_CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,  # signs OCSP responses directly (RFC 6960 section 4.2.2.2)
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    with transaction.atomic():
        row = Certificate.objects.create(
            **row_fields(certificate),
            binding=Certificate.Binding.CA,
            bound_name=scope.label,
            source=Certificate.Source.HOSTED,
            domain=scope.domain,
            private_key=wrap_private_key(key),
        )
    del key
    return row


def authority_key_identifier(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The AKI that certificates and CRLs signed by ``ca_cert`` carry: the CA's own SKI, which
    relying parties match it against (RFC 5280 4.2.1.1), or, for a CA certificate without one
    (allowed for some older CAs), the SHA-1 of its subjectPublicKey, as RFC 5280 4.2.1.2 method 1
    derives an SKI. Both the certificates and the CRLs take it from here, so they always agree."""
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        ski = x509.SubjectKeyIdentifier.from_public_key(ca_cert.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _policies() -> list[x509.PolicyInformation]:
    try:
        return [
            x509.PolicyInformation(x509.ObjectIdentifier(oid.strip()), None)
            for oid in settings.HISP_CERT_POLICY_OIDS
            if oid.strip()
        ]
    except ValueError:
        raise CAError("HISP_CERT_POLICY_OIDS holds a value that is not an OID") from None


def _key_usage(usage: str) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=usage in (Certificate.Usage.DUAL, Certificate.Usage.SIGNING),
        content_commitment=False,
        key_encipherment=usage in (Certificate.Usage.DUAL, Certificate.Usage.ENCRYPTION),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _check_remaining_life(ca_cert: x509.Certificate, now: datetime, domain: Domain | None) -> None:
    end = ca_cert.not_valid_after_utc
    if end <= now:
        # A certificate never outlives its CA: it would end before it began (a ValueError from
        # the builder, a 500 in the console) or be issued already expired.
        raise CAError(
            f"the issuing CA expired on {end:%Y-%m-%d %H:%M} UTC: "
            f"replace it first (manage.py anchor rollover, docs/pki.md)"
        )
    if end - now < MIN_CA_REMAINING:
        target = domain.name if domain is not None else "DOMAIN"
        raise CAError(
            f"the issuing CA expires on {end:%Y-%m-%d %H:%M} UTC, less than "
            f"{MIN_CA_REMAINING.days} days from now, and a certificate cannot outlive it: "
            f"roll the CA over first (manage.py anchor rollover {target}, then --activate once "
            f"partners trust the new CA; docs/pki.md)"
        )


def issue(
    ca: Certificate,
    *,
    binding: str,
    name: str,
    usage: str = Certificate.Usage.DUAL,
    key_bits: int | None = None,
    domain: Domain | None = None,
    address: Address | None = None,
    at: datetime | None = None,
) -> Certificate:
    """Issue one end-entity certificate with a new key under ``ca`` and store both."""
    if ca.binding != Certificate.Binding.CA or ca.private_key_id is None:
        raise CAError("the issuing certificate is not one of our CAs")
    if binding not in (Certificate.Binding.ADDRESS, Certificate.Binding.DOMAIN):
        raise CAError(f"unknown binding {binding!r}")
    if usage not in Certificate.Usage.values:
        raise CAError(f"unknown usage {usage!r}")
    now = at or timezone.now()
    ca_cert = load(ca)
    _check_remaining_life(ca_cert, now, domain)
    ca_key = unwrap_private_key(PrivateKey.objects.get(pk=ca.private_key_id))
    key = _key(key_bits or settings.HISP_CERT_KEY_BITS)
    public = key.public_key()
    if binding == Certificate.Binding.ADDRESS:
        san: x509.GeneralName = x509.RFC822Name(name)
    else:
        san = x509.DNSName(name)
    not_after = min(now + settings.HISP_CERT_VALIDITY, ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(usage), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(authority_key_identifier(ca_cert), critical=False)
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(crl_url(ca))],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url())
                    ),
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(ca_issuers_url(ca)),
                    ),
                ]
            ),
            critical=False,
        )
    )
    policies = _policies()
    if policies:
        builder = builder.add_extension(x509.CertificatePolicies(policies), critical=False)
    certificate = builder.sign(ca_key, hashes.SHA256())
    del ca_key
    with transaction.atomic():
        row = Certificate.objects.create(
            **row_fields(certificate),
            binding=binding,
            bound_name=name,
            source=Certificate.Source.HOSTED,
            usage=usage,
            address=address,
            domain=domain,
            issued_by=ca,
            private_key=wrap_private_key(key),
        )
    del key
    return row


def issue_set(
    ca: Certificate,
    *,
    binding: str,
    name: str,
    domain: Domain | None = None,
    address: Address | None = None,
    key_bits: int | None = None,
    separate: bool | None = None,
    at: datetime | None = None,
) -> list[Certificate]:
    """One dual-use certificate, or a signing and an encryption certificate with separate keys
    when ``HISP_CERT_SEPARATE_KEYS`` (or ``separate``) says so."""
    split = settings.HISP_CERT_SEPARATE_KEYS if separate is None else separate
    usages = (
        [Certificate.Usage.SIGNING, Certificate.Usage.ENCRYPTION]
        if split
        else [Certificate.Usage.DUAL]
    )
    return [
        issue(
            ca,
            binding=binding,
            name=name,
            usage=usage,
            key_bits=key_bits,
            domain=domain,
            address=address,
            at=at,
        )
        for usage in usages
    ]
