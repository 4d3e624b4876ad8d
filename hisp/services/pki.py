"""Certificates of hosted addresses and domains: issue, renew, revoke, export and import.

Every function here is a staff or system action and leaves an AuditEvent. Key material never
appears in an audit detail, a log line or an exception message: fingerprints and ids only. The
functions that hold a key, a key file or its password are ``sensitive_variables``, so Django's
error reports (which print a traceback's local variables) show none of them.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import struct
import subprocess
import sys
from datetime import datetime

from asn1crypto import algos as asn1_algos
from asn1crypto import core as asn1_core
from asn1crypto import keys as asn1_keys
from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from hisp.agent_env import bump_pki_version
from hisp.ca import crl as crls
from hisp.ca.authority import MIN_CA_REMAINING, CAError, issue, issue_set
from hisp.certificates import (
    CertificateFormatError,
    fingerprint,
    is_ca,
    load,
    load_certificates,
    row_fields,
    san_names,
)
from hisp.keystore import unwrap_private_key, wrap_private_key
from hisp.mailtext import printable
from hisp.models import Address, Certificate, Domain, PrivateKey
from hisp.services import audit, outside_revocation
from hisp.services.identity import Actor, IdentityError, normalise_address, normalise_domain

MIN_PASSPHRASE = 10
# Opening a PKCS#12 file or an encrypted PKCS#8 key runs every key-derivation iteration the file
# asks for before a wrong password can show: a crafted file asking for 2^31 held a console worker
# (or the CLI) for hours. Real files ask for 2,048 (OpenSSL's default) up to a few hundred
# thousand (ours: 200,000); the bound is for the whole file (its MAC and every encrypted part).
MAX_KDF_ITERATIONS = 5_000_000
_TOO_MUCH_WORK = (
    f"the file's password protection asks for more than {MAX_KDF_ITERATIONS:,} key-derivation "
    f"iterations: export it again with the tool's defaults"
)
_MAX_BAG_NESTING = 4
# What shows before decrypting is bounded above, but a shrouded key bag inside an encrypted safe
# shows only once that safe is decrypted, by the loader itself, which then runs the key's own
# iterations. The `cryptography` library cannot decrypt the safes OpenSSL -legacy and Windows
# write (40-bit RC2 under the PKCS#12 KDF; RC2 there takes 128-bit keys only), so the file is
# opened in a fresh interpreter whose CPU time the kernel bounds (SIGKILL at the limit, no core
# file) and whose wall-clock time we bound. Enough for 5,000,000 iterations with room to spare.
PKCS12_CPU_SECONDS = 10
PKCS12_WALL_SECONDS = 30
_NOT_OPENED = "not a certificate (PEM/DER) or a PKCS#12 file this password opens"
# Run as `python -I -c _OPEN_PKCS12 CPU_SECONDS`: the file and password come on stdin and the
# key (PKCS#8 DER), certificate (DER) and the file's other certificates (DER each: its CA chain)
# go back on stdout, length-prefixed: pipes only, so the key is never written to a file, an
# argument list or the environment. Exit 3: cannot open.
_OPEN_PKCS12 = r'''
import resource, struct, sys
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
limit = int(sys.argv[1])
hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
if hard != resource.RLIM_INFINITY:
    limit = min(limit, hard)
resource.setrlimit(resource.RLIMIT_CPU, (limit, limit))
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
raw = sys.stdin.buffer.read()
size = struct.unpack(">i", raw[:4])[0]
password = None if size < 0 else raw[4:4 + size]
try:
    key, cert, extra = pkcs12.load_key_and_certificates(raw[4 + max(size, 0):], password)
    key_der = b"" if key is None else key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    cert_der = b"" if cert is None else cert.public_bytes(serialization.Encoding.DER)
    extra_der = [c.public_bytes(serialization.Encoding.DER) for c in extra]
except Exception:
    sys.exit(3)
out = sys.stdout.buffer
for part in (key_der, cert_der, *extra_der):
    out.write(struct.pack(">I", len(part)) + part)
out.flush()
'''

log = logging.getLogger(__name__)


class PkiError(ValueError):
    """A certificate operation cannot be done as asked (the message says why)."""


# --- Lookups -------------------------------------------------------------------------------------


def current_certificates(name: str, *, at: datetime | None = None) -> list[Certificate]:
    """The certificates in use for a hosted address or domain (or a partner's imported ones):
    unexpired, unrevoked and not superseded, newest first. For an address without address-bound
    certificates, those of its domain (Direct Applicability Statement 4.0: domain binding)."""
    now = at or timezone.now()
    if "@" in name:
        value = normalise_address(name)
        domain = value.rsplit("@", 1)[1]
        if Domain.objects.filter(name=domain).exists() and not Address.objects.filter(
            address=value
        ).exists():
            raise PkiError(f"address {value} is not hosted here")
        rows = _usable(value, Certificate.Binding.ADDRESS, now)
        if rows:
            return rows
        return _usable(domain, Certificate.Binding.DOMAIN, now)
    return _usable(normalise_domain(name), Certificate.Binding.DOMAIN, now)


def _usable(name: str, binding: str, now: datetime) -> list[Certificate]:
    return list(
        Certificate.objects.filter(
            bound_name=name,
            binding=binding,
            revoked_at__isnull=True,
            superseded_by__isnull=True,
            not_before__lte=now,
            not_after__gt=now,
        ).order_by("-not_before", "-pk")
    )


# --- Issuance and renewal ---------------------------------------------------------------------


def issue_for(
    name: str,
    *,
    key_bits: int | None = None,
    separate: bool | None = None,
    actor: Actor = None,
    client: str | None = None,  # the staff member's address, for the audit event
) -> list[Certificate]:
    """Issue new certificate(s) for a hosted address (address-bound) or domain (domain-bound)."""
    if "@" in name:
        value = normalise_address(name)
        # Local parts are matched ignoring case, as ingress does (Postmaster@ is postmaster@).
        address = (Address.objects.filter(address=value).first()
                   or Address.objects.filter(address__iexact=value).first())
        if address is None:
            raise PkiError(f"address {name} is not hosted here")
        domain = address.domain
        binding, bound = Certificate.Binding.ADDRESS, address.address
    else:
        address = None
        found = Domain.objects.filter(name=normalise_domain(name)).first()
        if found is None:
            raise PkiError(f"domain {name} is not hosted here")
        domain = found
        binding, bound = Certificate.Binding.DOMAIN, domain.name
    if domain.issuing_ca is None:
        raise PkiError(f"domain {domain.name} has no issuing CA")
    with transaction.atomic():
        try:
            rows = issue_set(
                domain.issuing_ca,
                binding=binding,
                name=bound,
                domain=domain,
                address=address,
                key_bits=key_bits,
                separate=separate,
            )
        except CAError as exc:
            raise PkiError(str(exc)) from None
        for row in rows:
            audit.record(action="certificate.issue", obj=row, actor=actor, client=client,
                         fingerprint=row.fingerprint_sha256, binding=binding)
    return rows


def due_for_renewal(*, at: datetime | None = None) -> QuerySet[Certificate]:
    """Our issued end-entity certificates old enough to renew (``HISP_CERT_RENEW_AFTER``, 12
    months by default), as close to expiry as a fresh one would be at that age, or issued by a
    CA that a rollover replaced (hisp.services.ca_rollover); not yet renewed or revoked, and
    only when their successor would last longer than they do."""
    now = at or timezone.now()
    return Certificate.objects.filter(
        Q(not_before__lte=now - settings.HISP_CERT_RENEW_AFTER)
        | Q(not_after__lte=now + (settings.HISP_CERT_VALIDITY - settings.HISP_CERT_RENEW_AFTER))
        | Q(issued_by__superseded_by__isnull=False),
        source=Certificate.Source.HOSTED,
        binding__in=[Certificate.Binding.ADDRESS, Certificate.Binding.DOMAIN],
        issued_by__isnull=False,
        superseded_by__isnull=True,
        revoked_at__isnull=True,
        not_after__gt=now,
    ).annotate(
        # The CA renew() would issue from. A certificate never outlives its CA, so in a CA's
        # last months one that already ends with it was "due" again right after each renewal:
        # a new key for every certificate at every run of the task, until a rollover.
        renewing_ca_ends=Coalesce("domain__issuing_ca__not_after", "issued_by__not_after"),
    ).filter(
        renewing_ca_ends__gt=F("not_after"),
        # A CA this close to its end issues nothing (hisp.ca.authority.MIN_CA_REMAINING): its
        # certificates wait for the rollover, which makes them due again under the new CA.
        renewing_ca_ends__gte=now + MIN_CA_REMAINING,
    )


def renew(
    certificate: Certificate, *, actor: Actor = None, client: str | None = None,
    at: datetime | None = None,
) -> Certificate:
    """Issue the successor of ``certificate`` with a new key and publish it. The old certificate
    and key stay (marked superseded) so mail already encrypted to them still decrypts.
    Running twice is harmless: the second call returns the successor the first one made."""
    with transaction.atomic():
        old = Certificate.objects.select_for_update().get(pk=certificate.pk)
        if old.superseded_by_id is not None:
            successor = Certificate.objects.get(pk=old.superseded_by_id)
            if successor.revoked_at is not None:
                # Handing back the revoked successor read as "renewed" while the address
                # was left without a usable certificate.
                raise PkiError(
                    f"this certificate was renewed and its successor has since been revoked: "
                    f"issue a new certificate for {old.bound_name}"
                )
            return successor
        if old.source != Certificate.Source.HOSTED or old.issued_by_id is None:
            raise PkiError("only certificates issued by this HISP can be renewed")
        if old.revoked_at is not None:
            raise PkiError("a revoked certificate cannot be renewed")
        # The domain's issuing CA now: after a CA rollover (hisp.services.ca_rollover) that is
        # the successor, not the CA that issued the old certificate.
        ca = (old.domain.issuing_ca if old.domain is not None else None) or old.issued_by
        assert ca is not None
        key_bits = old.private_key.key_bits if old.private_key else None
        try:
            new = issue(
                ca,
                binding=old.binding,
                name=old.bound_name,
                usage=old.usage,
                key_bits=key_bits,
                domain=old.domain,
                address=old.address,
                at=at,
            )
        except CAError as exc:
            raise PkiError(str(exc)) from None
        Certificate.objects.filter(pk=old.pk, superseded_by__isnull=True).update(superseded_by=new)
        bump_pki_version()  # workers stop signing with the old certificate (docs/pki.md)
        audit.record(action="certificate.renew", obj=new, actor=actor, client=client,
                     fingerprint=new.fingerprint_sha256, previous=old.fingerprint_sha256)
    return new


def renew_due(*, at: datetime | None = None) -> list[Certificate]:
    """Renew every due certificate; one that cannot be renewed (its successor revoked, its CA
    refusing) is logged and left, never stopping the others' renewal."""
    renewed = []
    for row in due_for_renewal(at=at):
        try:
            renewed.append(renew(row, at=at))
        except PkiError as exc:
            log.warning("certificate %s not renewed: %s", row.pk, exc)
    return renewed


# --- Revocation ------------------------------------------------------------------------------------


def revoke(
    certificate: Certificate,
    *,
    reason: str = Certificate.RevocationReason.UNSPECIFIED,
    note: str = "",
    actor: Actor = None,
    client: str | None = None,  # the staff member's address, for the audit event
    at: datetime | None = None,
) -> Certificate:
    """Revoke one of our certificates. The CA's CRL is regenerated in the same transaction and
    the OCSP responder reads the database, so both show it from the next request on.
    ``reason`` is the RFC 5280 code the CRL publishes; ``note``, the staff member's own words
    on why (the console asks for them), goes into the audit event only."""
    if reason not in Certificate.RevocationReason.values:
        raise PkiError(f"unknown revocation reason {reason!r}")
    now = at or timezone.now()
    with transaction.atomic():
        row = Certificate.objects.select_for_update().get(pk=certificate.pk)
        if row.issued_by_id is None or row.source != Certificate.Source.HOSTED:
            raise PkiError("only certificates issued by this HISP can be revoked here")
        if row.revoked_at is not None:
            raise PkiError("the certificate is already revoked")
        # RFC 5280 5.1.2.6: revocation dates are whole seconds in the CRL; store what we publish.
        when = now.replace(microsecond=0)
        Certificate.objects.filter(pk=row.pk, revoked_at__isnull=True).update(
            revoked_at=when, revocation_reason=reason
        )
        bump_pki_version()  # workers stop using it within the bound in docs/pki.md
        ca = row.issued_by
        assert ca is not None
        crls.generate(ca, at=now)
        audit.record(action="certificate.revoke", obj=row, actor=actor, client=client,
                     fingerprint=row.fingerprint_sha256, reason=reason,
                     **({"note": note} if note else {}))
        row.refresh_from_db()
    return row


# --- PKCS#12 export and import ---------------------------------------------------------------------


@sensitive_variables()
def export_pkcs12(
    certificate: Certificate,
    *,
    passphrase: str,
    actor: Actor,
    client: str | None = None,
) -> bytes:
    """A passphrase-protected PKCS#12 of a hosted certificate, its key and its CA, for an edge
    client that does its own S/MIME. Always audited: the key leaves our custody."""
    if certificate.private_key_id is None:
        raise PkiError("this certificate has no private key here")
    if certificate.binding == Certificate.Binding.CA:
        # An edge client needs its own end-entity key; a CA key never leaves the HISP.
        raise PkiError("a CA key is never exported")
    if certificate.revoked_at is not None:
        # Revoked for a compromise, or replaced: either way no client should start using it.
        raise PkiError("the certificate is revoked: its key is not exported")
    if len(passphrase) < MIN_PASSPHRASE:
        raise PkiError(f"the passphrase must be at least {MIN_PASSPHRASE} characters")
    key = unwrap_private_key(PrivateKey.objects.get(pk=certificate.private_key_id))
    cas = [load(certificate.issued_by)] if certificate.issued_by is not None else []
    # AES-256-CBC with PBKDF2 and an HMAC-SHA256 MAC: readable by OpenSSL 3 and current clients.
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(200_000)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(passphrase.encode())
    )
    data = pkcs12.serialize_key_and_certificates(
        name=certificate.bound_name.encode(),
        key=key,
        cert=load(certificate),
        cas=cas or None,
        encryption_algorithm=encryption,
    )
    del key
    audit.record(action="certificate.export_pkcs12", obj=certificate, actor=actor, client=client,
                 fingerprint=certificate.fingerprint_sha256)
    return data


def _kdf_work(algorithm: asn1_algos.EncryptionAlgorithm) -> int:
    # asn1crypto reads PBES1, PBES2 with PBKDF2 and the PKCS#12 PBEs; other key derivations
    # (scrypt, whose cost is not an iteration count) raise ValueError and are refused.
    iterations = algorithm.kdf_iterations
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError("no iteration count")
    return iterations


def _bag_work(bags: asn1_pkcs12.SafeContents, depth: int = 0) -> int:
    if depth > _MAX_BAG_NESTING:
        raise ValueError("safe contents nested too deep")
    total = 0
    for bag in bags:
        if bag["bag_id"].native == "pkcs8_shrouded_key_bag":
            total += _kdf_work(bag["bag_value"]["encryption_algorithm"])
        elif bag["bag_id"].native == "safe_contents":
            total += _bag_work(bag["bag_value"], depth + 1)
    return total


class _Pbmac1Params(asn1_core.Sequence):
    """RFC 9579 section 3: PBMAC1-params, which asn1crypto does not know."""

    _fields = [
        ("key_derivation_func", asn1_algos.KdfAlgorithm),
        ("message_auth_scheme", asn1_algos.HmacAlgorithm),
    ]


_PBMAC1 = "1.2.840.113549.1.5.14"


def _mac_work(pfx: asn1_pkcs12.Pfx) -> int:
    """The MAC's key derivation. With PBMAC1 (RFC 9579, read by OpenSSL 3.4 and later) the
    count is PBKDF2's and macData's own iterations field is ignored: a file whose PBKDF2 asked
    for 2^31 held the loader for hours before even a wrong password showed."""
    mac = pfx["mac_data"]
    if mac.native is None:
        return 0
    algorithm = mac["mac"]["digest_algorithm"]
    if algorithm["algorithm"].dotted != _PBMAC1:
        return int(mac["iterations"].native)
    params = _Pbmac1Params.load(algorithm["parameters"].dump(), strict=True)
    kdf = params["key_derivation_func"]
    if kdf["algorithm"].native != "pbkdf2":
        raise ValueError("not PBKDF2")
    iterations = kdf["parameters"]["iteration_count"].native
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError("no iteration count")
    return iterations


def _check_pkcs12_work(data: bytes) -> None:
    """Refuse a PKCS#12 file whose key derivations (as far as they show before decrypting)
    exceed MAX_KDF_ITERATIONS, or that cannot be read far enough to tell."""
    try:
        pfx = asn1_pkcs12.Pfx.load(data)
        total = _mac_work(pfx)
        for info in pfx.authenticated_safe:
            kind = info["content_type"].native
            if kind == "encrypted_data":
                content = info["content"]["encrypted_content_info"]
                total += _kdf_work(content["content_encryption_algorithm"])
            elif kind == "data":
                total += _bag_work(asn1_pkcs12.SafeContents.load(info["content"].native))
    except (ValueError, TypeError, KeyError):
        raise PkiError(_NOT_OPENED) from None
    if total > MAX_KDF_ITERATIONS:
        raise PkiError(_TOO_MUCH_WORK)


# The other certificates of a PKCS#12 file kept (its CA chain, for finding the issuer to ask
# about revocation); a real chain has a handful, more is not a chain.
MAX_PKCS12_EXTRA_CERTIFICATES = 20


@sensitive_variables()
def _open_pkcs12(
    data: bytes, password: bytes | None
) -> tuple[rsa.RSAPrivateKey | None, x509.Certificate | None, list[x509.Certificate]]:
    """The key, certificate and other certificates (its CA chain: never trusted or anchored
    here, only a way to find the issuer to ask about revocation) of a PKCS#12 file, opened
    under the CPU and time bounds above.

    The interpreter is exec'd at once (no Python runs in a forked copy of this threaded
    process) and holds nothing of ours: no settings, no KEK (empty environment), no database
    connection. Soft and hard CPU limits are equal, so the kernel sends SIGKILL, not SIGXCPU
    (whose default action dumps core)."""
    secret = b"" if password is None else password
    framed = struct.pack(">i", -1 if password is None else len(secret)) + secret + data
    cpu = int(PKCS12_CPU_SECONDS)
    child: subprocess.CompletedProcess[bytes] | None = None
    try:
        child = subprocess.run(  # noqa: S603 (our interpreter, our script, no shell)
            [sys.executable, "-I", "-c", _OPEN_PKCS12, str(cpu)],
            input=framed, capture_output=True, env={}, timeout=PKCS12_WALL_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pass  # raised below, outside this block: the timeout keeps the child's partial output
    except OSError:
        raise PkiError("PKCS#12 files cannot be opened here (no Python interpreter to run)") from None
    del framed, secret
    if child is None or child.returncode < 0:  # our timeout, or the kernel's SIGKILL at the limit
        raise PkiError(
            "the file's password protection asks for more key-derivation work than "
            f"{cpu} seconds of processor time allow: export it again with the tool's defaults"
        )
    if child.returncode != 0:
        raise PkiError(_NOT_OPENED)
    parts: list[bytes] = []
    rest = child.stdout
    del child
    try:
        while rest or len(parts) < 2:
            (size,) = struct.unpack(">I", rest[:4])
            if len(rest) < 4 + size:
                raise ValueError("truncated")
            parts.append(rest[4 : 4 + size])
            rest = rest[4 + size :]
        key_der, cert_der, *extra_der = parts
        key = serialization.load_der_private_key(key_der, password=None) if key_der else None
        cert = x509.load_der_x509_certificate(cert_der) if cert_der else None
        extra = [x509.load_der_x509_certificate(der)
                 for der in extra_der[:MAX_PKCS12_EXTRA_CERTIFICATES]]
    except (ValueError, struct.error):
        raise PkiError(_NOT_OPENED) from None
    finally:
        del parts, rest
    del key_der
    if key is not None and not isinstance(key, rsa.RSAPrivateKey):
        raise PkiError("only RSA keys are supported")
    return key, cert, extra


_ENCRYPTED_PEM_KEY = re.compile(
    rb"-----BEGIN ENCRYPTED PRIVATE KEY-----(.*?)-----END ENCRYPTED PRIVATE KEY-----", re.S
)


def _check_key_work(data: bytes) -> None:
    """The same bound for a PKCS#8 key encrypted under a password (PEM or DER)."""
    # Anywhere in the file: openssl pkcs12 output starts with "Bag Attributes" lines, and the
    # PEM loader reads past such text to the key.
    if b"-----BEGIN" in data:
        for body in _ENCRYPTED_PEM_KEY.findall(data):
            try:
                der = base64.b64decode(b"".join(body.split()), validate=True)
            except (binascii.Error, ValueError):
                raise PkiError("the key file is not a readable private key") from None
            _check_encrypted_key(der, required=True)
        return
    _check_encrypted_key(data, required=False)


def _check_encrypted_key(der: bytes, *, required: bool) -> None:
    try:
        info = asn1_keys.EncryptedPrivateKeyInfo.load(der, strict=True)
        algorithm = info["encryption_algorithm"]
        algorithm["algorithm"].native  # noqa: B018 (reading it is the check)
    except (ValueError, TypeError, KeyError):
        if required:
            raise PkiError("the key file is not a readable private key") from None
        return  # not an encrypted PKCS#8 key: the loaders judge it
    try:
        work = _kdf_work(algorithm)
    except (ValueError, TypeError, KeyError):
        raise PkiError("the key's password protection is not one we read") from None
    if work > MAX_KDF_ITERATIONS:
        raise PkiError(_TOO_MUCH_WORK)


@sensitive_variables()
def _load_key(data: bytes, password: bytes | None) -> rsa.RSAPrivateKey:
    _check_key_work(data)
    loaders = (serialization.load_pem_private_key, serialization.load_der_private_key)
    for loader in loaders:
        try:
            key = loader(data, password=password)
        except TypeError:
            if password is not None:
                raise PkiError("the key is not encrypted: import it without a password") from None
            raise PkiError("the key is encrypted: give its password on stdin") from None
        except ValueError:
            continue
        if not isinstance(key, rsa.RSAPrivateKey):
            raise PkiError("only RSA keys are supported")
        return key
    # The message never repeats the bytes: they may be a private key.
    raise PkiError("the key file is not a readable private key (PEM or DER, right password?)")


def _end_entity(certificates: list[x509.Certificate]) -> x509.Certificate:
    """The certificate a file without a key is meant to import: partners send chains in either
    order, and taking the first one refused a file that starts with its CA ("binds no Direct
    address") although the partner's own certificate follows it."""
    for cert in certificates:
        if not is_ca(cert) and any(san_names(cert)):
            return cert
    return certificates[0]


@sensitive_variables()
def _parse_import(
    data: bytes, key_data: bytes | None, password: bytes | None
) -> tuple[x509.Certificate, rsa.RSAPrivateKey | None, list[x509.Certificate]]:
    """The certificate to import, its key if one came, and every certificate in the file (a
    chain may hold the outside CA that import_certificate asks about revocation)."""
    certificates: list[x509.Certificate] = []
    chain: list[x509.Certificate] = []
    key: rsa.RSAPrivateKey | None = None
    try:
        certificates = load_certificates(data)
    except CertificateFormatError:
        _check_pkcs12_work(data)
        p12_key, p12_cert, chain = _open_pkcs12(data, password)
        if p12_cert is None:
            raise PkiError("the PKCS#12 file holds no certificate")
        # The file's CA certificates were dropped here, and an issuer neither stored nor named
        # by a caIssuers URL left the revocation check "issuer-unknown". They are only for that
        # lookup (issued_by checks the signature), never the certificate imported.
        certificates, key = [p12_cert], p12_key
    if key_data is not None:
        key = _load_key(key_data, password)
    elif key is None and b"PRIVATE KEY-----" in data:
        key = _load_key(data, password)
    if key is None:
        return _end_entity(certificates), None, certificates + chain
    public = key.public_key().public_numbers()
    for cert in certificates:
        cert_key = cert.public_key()
        if isinstance(cert_key, rsa.RSAPublicKey) and cert_key.public_numbers() == public:
            return cert, key, certificates + chain
    raise PkiError("the private key does not belong to the certificate")


def _our_issuer(cert: x509.Certificate) -> Certificate | None:
    """Our CA that signed ``cert``, if one did. By signature, not by name: a rollover's successor
    has its predecessor's name (hisp.ca.authority), and anyone can write our CA's name into a
    certificate; the issuer is what the OCSP responder answers for and export_pkcs12 chains."""
    candidates = Certificate.objects.filter(
        binding=Certificate.Binding.CA, source=Certificate.Source.HOSTED,
        subject=cert.issuer.rfc4514_string()[:1024],
    ).order_by("-pk")
    for ca in candidates:
        try:
            cert.verify_directly_issued_by(load(ca))
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca
    return None


@sensitive_variables()
def import_certificate(
    data: bytes,
    *,
    key_data: bytes | None = None,
    password: str | None = None,
    actor: Actor = None,
    client: str | None = None,  # the staff member's address, for the audit event
) -> Certificate:
    """Import a partner's certificate exchanged out of band (no key), or a hosted address's or
    domain's own certificate with its key (PEM, DER or PKCS#12) for organisations that bring
    their own. The binding comes from the subjectAltName (rfc822Name before dNSName)."""
    secret = password.encode() if password is not None else None
    cert, key, in_file = _parse_import(data, key_data, secret)
    emails, dns_names = san_names(cert)
    if any(printable(name) != name for name in (*emails, *dns_names)):
        # An IA5String may hold any ASCII, but no address or domain holds a control character
        # (RFC 5321 4.1.2); a NUL would also be refused by the database the name is looked up in.
        raise PkiError("the certificate's subjectAltName holds a control character")
    # Stored as addresses and domains are everywhere here (domain in lower case), and matched
    # ignoring case (hisp.agent_env._candidate_rows): a SAN written in capitals is the same
    # mailbox or domain.
    if emails:
        local, _, at = emails[0].rpartition("@")
        binding, bound = Certificate.Binding.ADDRESS, f"{local}@{at.lower()}"
    elif dns_names:
        binding, bound = Certificate.Binding.DOMAIN, dns_names[0].lower()
    else:
        raise PkiError("the certificate binds no Direct address or domain (no rfc822Name/dNSName)")
    if Certificate.objects.filter(fingerprint_sha256=fingerprint(cert)).exists():
        raise PkiError(f"certificate {fingerprint(cert)} is already stored")
    address = domain = None
    if binding == Certificate.Binding.ADDRESS:
        address = Address.objects.filter(address__iexact=bound).first()
        domain = address.domain if address else None
    else:
        domain = Domain.objects.filter(name=bound).first()
    if key is not None and domain is None:
        raise PkiError(f"{bound} is not hosted here: only hosted certificates come with a key")
    if key is None and domain is not None:
        raise PkiError(f"{bound} is hosted here: import its certificate together with its key")
    issuer = _our_issuer(cert)
    finding = None
    if key is not None and issuer is None:
        # Another CA's certificate that we would publish and sign with: ask that CA first
        # (network, so outside the transaction). Revoked is refused; unreachable is imported,
        # the failure recorded and shown on the certificate's page (docs/pki.md).
        finding = outside_revocation.check(cert, chain=in_file)
        if finding.result is outside_revocation.Result.REVOKED:
            raise PkiError(f"the certificate cannot be imported: {finding.describe()}")
    with transaction.atomic():
        row = Certificate.objects.create(
            **row_fields(cert),
            binding=binding,
            bound_name=bound,
            source=Certificate.Source.IMPORTED,
            address=address,
            domain=domain,
            issued_by=issuer,
            private_key=wrap_private_key(key) if key is not None else None,
        )
        audit.record(action="certificate.import", obj=row, actor=actor, client=client,
                     fingerprint=row.fingerprint_sha256, with_key=key is not None)
        if finding is not None:
            outside_revocation.record(row, finding, at_import=True)
        if key is None:  # a partner's: mail held for want of it goes now, not at the re-check
            from hisp.services.outbound import recheck_held_soon

            recheck_held_soon(certificate_pk=row.pk)
    del key
    return row


__all__ = [
    "IdentityError",
    "PkiError",
    "current_certificates",
    "due_for_renewal",
    "export_pkcs12",
    "import_certificate",
    "issue_for",
    "renew",
    "renew_due",
    "revoke",
]
