"""CMS SignedData (RFC 5652 section 5) as S/MIME uses it (RFC 8551 section 3.5)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from asn1crypto import algos, cms, core
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from agent.cms import der
from agent.cms.algorithms import SIGNATURE_DIGEST, digest_hash, hash_for
from agent.cms.certs import (
    cert_der,
    issuer_and_serial,
    load_der,
    matches_issuer_serial,
    subject_key_identifier,
)
from agent.errors import AgentError, Code
from agent.types import AlgorithmPolicy, Digest

# SMIMECapabilities (RFC 8551 section 2.5.2): what we can read, most preferred first.
_CAPABILITIES = cms.CMSAttribute(
    {
        "type": "smime_capabilities",
        "values": [
            [
                {"capability_id": "2.16.840.1.101.3.4.1.46"},  # aes256-gcm
                {"capability_id": "2.16.840.1.101.3.4.1.6"},  # aes128-gcm
                {"capability_id": "2.16.840.1.101.3.4.1.42"},  # aes256-cbc
                {"capability_id": "2.16.840.1.101.3.4.1.2"},  # aes128-cbc
            ]
        ],
    }
).dump()


_OID_DATA = der.encode(der.OID, bytes.fromhex("2a864886f70d010701"))
_OID_SIGNED_DATA = der.encode(der.OID, bytes.fromhex("2a864886f70d010702"))
_OID_SIGNING_TIME = der.encode(der.OID, bytes.fromhex("2a864886f70d010905"))
_OID_MESSAGE_DIGEST = der.encode(der.OID, bytes.fromhex("2a864886f70d010904"))
_ATTR_CONTENT_TYPE_DATA = bytes(
    cms.CMSAttribute({"type": "content_type", "values": ["data"]}).dump()
)
_RSA_ENCRYPTION = bytes(algos.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15"}).dump())


# Every SignerInfo must verify, and each costs a public-key operation: a few cover every real
# use (one per signature algorithm, RFC 5752), and a bound keeps a crafted SET of thousands
# from costing seconds.
MAX_SIGNER_INFOS = 8
# A signer sends its certificate and chain, a handful; each one carried is parsed and offered to
# path building, so thousands (a 25 MB message holds some 20,000) would cost seconds.
MAX_CERTIFICATES = 64


@dataclass(frozen=True)
class VerifiedSignature:
    signer: x509.Certificate
    certificates: tuple[x509.Certificate, ...]  # every other certificate the message carried
    digest: str  # the SignerInfo digest algorithm, e.g. "sha256"
    content: bytes | memoryview  # the signed content (detached or encapsulated)


def sign(
    content: bytes | memoryview | Sequence[bytes | memoryview],
    *,
    certificate: x509.Certificate,
    key: rsa.RSAPrivateKey,
    chain: Sequence[x509.Certificate],
    digest: Digest,
    at: datetime,
    detached: bool = True,
) -> bytes:
    """DER ContentInfo of a SignedData over ``content`` (bytes, or pieces to be read as their
    concatenation) with one RSA PKCS#1 v1.5 signer.

    Signed attributes carry contentType, signingTime and messageDigest (RFC 5652 section 5.3,
    RFC 8551 section 2.5); certificates hold the signer first, then its intermediates. The few
    fixed-shape structures are written directly (X.690 DER) from cached pieces: building them
    through asn1crypto's object model costs several times the RSA signature itself.
    """
    pieces = [content] if isinstance(content, bytes | memoryview) else list(content)
    template = _signer_template(certificate, tuple(chain), digest)
    hasher = hashlib.new(digest.value)  # the same OpenSSL digest, without the wrapper's checks
    for piece in pieces:
        hasher.update(piece)
    attrs_set = der.set_of(
        _ATTR_CONTENT_TYPE_DATA,
        der.sequence(_OID_SIGNING_TIME, der.set_of(_time(at))),
        der.sequence(_OID_MESSAGE_DIGEST, der.set_of(der.octet_string(hasher.digest()))),
        _CAPABILITIES,
    )
    signature = key.sign(attrs_set, padding.PKCS1v15(), digest_hash(digest))
    signer_info = der.sequence(
        template.signer_prefix,
        b"\xa0" + attrs_set[1:],  # [0] IMPLICIT SET OF Attribute
        _RSA_ENCRYPTION,
        der.octet_string(signature),
    )
    encap = (
        _OID_DATA if detached else _OID_DATA + der.encode(0xA0, der.octet_string(b"".join(pieces)))
    )
    signed_data = der.sequence(
        template.digest_algorithms,
        der.sequence(encap),
        template.certificates,
        der.set_of(signer_info),
    )
    return der.sequence(_OID_SIGNED_DATA, der.encode(0xA0, signed_data))


@dataclass(frozen=True)
class _SignerTemplate:
    """What stays the same across every message one signer signs, encoded once."""

    signer_prefix: bytes  # SignerInfo version, sid and digestAlgorithm
    digest_algorithms: bytes  # SignedData version and digestAlgorithms SET
    certificates: bytes  # [0] IMPLICIT CertificateSet: the signer first, then its chain


@lru_cache(maxsize=256)
def _signer_template(
    certificate: x509.Certificate, chain: tuple[x509.Certificate, ...], digest: Digest
) -> _SignerTemplate:
    digest_algorithm = _digest_algorithm(digest)
    return _SignerTemplate(
        # version 1: issuerAndSerialNumber (RFC 5652 section 5.3)
        signer_prefix=b"\x02\x01\x01" + issuer_and_serial(certificate) + digest_algorithm,
        digest_algorithms=b"\x02\x01\x01" + der.set_of(digest_algorithm),
        certificates=der.encode(0xA0, b"".join(cert_der(c) for c in (certificate, *chain))),
    )


def _time(at: datetime) -> bytes:
    """signingTime: UTCTime through 2049, GeneralizedTime after (RFC 5652 section 11.3)."""
    moment = at.astimezone(UTC)
    rest = b"%02d%02d%02d%02d%02dZ" % (
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
    )
    if 1950 <= moment.year < 2050:
        return der.encode(0x17, b"%02d" % (moment.year % 100) + rest)
    return der.encode(0x18, b"%04d" % moment.year + rest)


@lru_cache(maxsize=8)
def _digest_algorithm(digest: Digest) -> bytes:
    return bytes(algos.DigestAlgorithm({"algorithm": digest.value}).dump())


def verify(
    signed: bytes | memoryview, *, detached: bytes | memoryview | None, policy: AlgorithmPolicy
) -> VerifiedSignature:
    """Verify every SignerInfo of a SignedData ContentInfo over the detached or encapsulated
    content. The digest comes from each SignerInfo (never from micalg, RFC 8551 section 3.5.3.1).

    The outer layers are walked by offset; certificates go straight to the (cached) X.509
    parser and only each SignerInfo goes through asn1crypto.
    """
    buf = signed if isinstance(signed, bytes) else bytes(signed)
    top = der.expect(der.read(buf, 0, len(buf)), der.SEQUENCE, "ContentInfo")
    parts = der.children(buf, top)
    if len(parts) != 2 or parts[0].tag != der.OID or parts[1].tag != 0xA0:
        raise AgentError(Code.MALFORMED, "bad ContentInfo")
    if der.raw(buf, parts[0]) != _OID_SIGNED_DATA:
        raise AgentError(Code.NOT_SIGNED, "CMS content is not signed-data")
    inner = der.children(buf, parts[1])
    if len(inner) != 1:
        raise AgentError(Code.MALFORMED, "bad ContentInfo content")
    # SignedData (RFC 5652 section 5.1): version, digestAlgorithms, encapContentInfo,
    # [0] certificates OPTIONAL, [1] crls OPTIONAL, signerInfos.
    fields = der.children(buf, der.expect(inner[0], der.SEQUENCE, "SignedData"))
    if len(fields) < 4:
        raise AgentError(Code.MALFORMED, "truncated SignedData")
    encap = der.children(buf, der.expect(fields[2], der.SEQUENCE, "EncapsulatedContentInfo"))
    if not encap or encap[0].tag != der.OID:
        raise AgentError(Code.MALFORMED, "bad EncapsulatedContentInfo")
    encap_type = der.raw(buf, encap[0])
    if detached is None:
        if len(encap) < 2 or encap[1].tag != 0xA0:
            raise AgentError(Code.MALFORMED, "opaque signed-data without content")
        octets = der.children(buf, encap[1])
        if len(octets) != 1 or octets[0].tag & 0x1F != der.OCTET_STRING:
            raise AgentError(Code.MALFORMED, "bad eContent")
        # A constructed (BER) OCTET STRING is the concatenation of its pieces (X.690 8.7.3).
        content: bytes | memoryview = b"".join(der.octets(buf, octets[0]))
    else:
        content = detached
    # Other CertificateChoices are [n]-tagged (RFC 5652 10.2.2).
    choices = [
        choice
        for field in fields[3:-1]
        if field.tag == 0xA0
        for choice in der.children(buf, field)
        if choice.tag == der.SEQUENCE
    ]
    if len(choices) > MAX_CERTIFICATES:
        raise AgentError(Code.MALFORMED, f"more than {MAX_CERTIFICATES} certificates")
    certs = [load_der(der.raw(buf, choice)) for choice in choices]
    infos = der.children(buf, der.expect(fields[-1], der.SET, "SignerInfos"))
    if not infos:
        raise AgentError(Code.NOT_SIGNED, "SignedData without signers")
    if len(infos) > MAX_SIGNER_INFOS:
        raise AgentError(Code.MALFORMED, f"more than {MAX_SIGNER_INFOS} SignerInfos")
    signer: x509.Certificate | None = None
    digest_name = ""
    digests = _ContentDigests(content)
    for node in infos:
        cert, name = _verify_signer_info(buf, node, digests, encap_type, certs, policy)
        if signer is None:
            signer, digest_name = cert, name
    assert signer is not None  # infos is non-empty
    others = tuple(c for c in certs if c is not signer)
    return VerifiedSignature(signer, others, digest_name, content)


def _oid_names(table: dict[str, str]) -> dict[bytes, str]:
    return {bytes(core.ObjectIdentifier(oid).dump()): name for oid, name in table.items()}


_DIGEST_NAMES = _oid_names(algos.DigestAlgorithmId._map)
_SIGNATURE_NAMES = _oid_names(algos.SignedDigestAlgorithmId._map)
_OID_CONTENT_TYPE = der.encode(der.OID, bytes.fromhex("2a864886f70d010903"))


def _algorithm_name(buf: bytes, node: der.Node, names: dict[bytes, str]) -> str:
    fields = der.children(buf, der.expect(node, der.SEQUENCE, "AlgorithmIdentifier"))
    if not fields or fields[0].tag != der.OID:
        raise AgentError(Code.MALFORMED, "bad AlgorithmIdentifier")
    oid = der.raw(buf, fields[0])
    if oid in names:
        return names[oid]
    try:
        return str(core.ObjectIdentifier.load(oid).dotted)
    except ValueError as exc:
        raise AgentError(Code.MALFORMED, "bad algorithm OID") from exc


class _ContentDigests:
    """The content's digest per algorithm, each computed once: SignerInfos repeating one
    algorithm must not hash a large content once each."""

    def __init__(self, content: bytes | memoryview) -> None:
        self._content = content
        self._done: dict[str, bytes] = {}

    def of(self, algorithm: hashes.HashAlgorithm) -> bytes:
        if algorithm.name not in self._done:
            hasher = hashes.Hash(algorithm)
            hasher.update(self._content)
            self._done[algorithm.name] = hasher.finalize()
        return self._done[algorithm.name]


def _find_signer(buf: bytes, sid: der.Node, certs: Sequence[x509.Certificate]) -> x509.Certificate:
    if sid.tag == der.SEQUENCE:
        wanted = der.raw(buf, sid)
        for cert in certs:
            if issuer_and_serial(cert) == wanted:
                return cert
        try:
            ias = cms.IssuerAndSerialNumber.load(wanted)
            issuer, serial = ias["issuer"], ias["serial_number"].native
        except (ValueError, TypeError, KeyError) as exc:
            raise AgentError(Code.MALFORMED, "bad IssuerAndSerialNumber") from exc
        for cert in certs:
            if matches_issuer_serial(cert, issuer, serial):
                return cert
    elif sid.tag == 0x80:
        ski = buf[sid.content_start : sid.content_end]
        for cert in certs:
            if subject_key_identifier(cert) == ski:
                return cert
    else:
        raise AgentError(Code.MALFORMED, "bad SignerIdentifier")
    # Without the signer's certificate the signature cannot be checked at all.
    raise AgentError(Code.BAD_SIGNATURE, "signer certificate is not in the message")


def _verify_signer_info(
    buf: bytes,
    node: der.Node,
    digests: _ContentDigests,
    encap_type: bytes,
    certs: Sequence[x509.Certificate],
    policy: AlgorithmPolicy,
) -> tuple[x509.Certificate, str]:
    """SignerInfo (RFC 5652 section 5.3): version, sid, digestAlgorithm, [0] signedAttrs
    OPTIONAL, signatureAlgorithm, signature, [1] unsignedAttrs OPTIONAL."""
    fields = der.children(buf, der.expect(node, der.SEQUENCE, "SignerInfo"))
    if len(fields) < 5:
        raise AgentError(Code.MALFORMED, "truncated SignerInfo")
    attrs = fields[3] if fields[3].tag == 0xA0 else None
    rest = fields[4:] if attrs is not None else fields[3:]
    if len(rest) < 2 or rest[1].tag != der.OCTET_STRING:
        raise AgentError(Code.MALFORMED, "bad SignerInfo")
    digest_name = _algorithm_name(buf, fields[2], _DIGEST_NAMES)
    sig_name = _algorithm_name(buf, rest[0], _SIGNATURE_NAMES)
    hash_alg = hash_for(digest_name, policy)
    if sig_name in SIGNATURE_DIGEST:
        hash_for(SIGNATURE_DIGEST[sig_name], policy)  # a named MD5/SHA-1 signature is refused too
    cert = _find_signer(buf, fields[1], certs)
    digest = digests.of(hash_alg)
    if attrs is None:
        to_verify: bytes = digest
    else:
        _check_signed_attributes(buf, attrs, digest, encap_type)
        # The signature covers the DER SET OF, not the [0] IMPLICIT form (RFC 5652 section 5.4).
        to_verify = b"\x31" + der.raw(buf, attrs)[1:]
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise AgentError(Code.BAD_SIGNATURE, "signer public key is unusable") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise AgentError(Code.BAD_SIGNATURE, "signer key is not RSA")
    pad = _signature_padding(der.raw(buf, rest[0]), sig_name, policy)
    signature = buf[rest[1].content_start : rest[1].content_end]
    try:
        if attrs is None:
            key.verify(signature, to_verify, pad, Prehashed(hash_alg))
        else:
            key.verify(signature, to_verify, pad, hash_alg)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise AgentError(Code.BAD_SIGNATURE, "signature does not verify") from exc
    return cert, digest_name


def _check_signed_attributes(buf: bytes, attrs: der.Node, digest: bytes, encap_type: bytes) -> None:
    """RFC 5652 sections 5.3 and 11: contentType and messageDigest must each be present once,
    single-valued, and agree with the content."""
    content_types: list[list[der.Node]] = []
    digests: list[list[der.Node]] = []
    for attr in der.children(buf, attrs):
        parts = der.children(buf, der.expect(attr, der.SEQUENCE, "Attribute"))
        if len(parts) != 2 or parts[0].tag != der.OID or parts[1].tag != der.SET:
            raise AgentError(Code.MALFORMED, "bad signed attribute")
        oid = der.raw(buf, parts[0])
        if oid == _OID_CONTENT_TYPE:
            content_types.append(der.children(buf, parts[1]))
        elif oid == _OID_MESSAGE_DIGEST:
            digests.append(der.children(buf, parts[1]))
    if len(content_types) != 1 or len(digests) != 1:
        raise AgentError(Code.BAD_SIGNATURE, "contentType/messageDigest attribute missing")
    (ct_values,), (md_values,) = content_types, digests
    if len(ct_values) != 1 or len(md_values) != 1:
        raise AgentError(Code.BAD_SIGNATURE, "multi-valued contentType/messageDigest")
    if der.raw(buf, ct_values[0]) != encap_type:
        raise AgentError(Code.BAD_SIGNATURE, "contentType attribute does not match content")
    received = md_values[0]
    if received.tag != der.OCTET_STRING or not hmac.compare_digest(
        buf[received.content_start : received.content_end], digest
    ):
        raise AgentError(Code.BAD_SIGNATURE, "messageDigest does not match the content")


def _signature_padding(
    encoded: bytes, sig_name: str, policy: AlgorithmPolicy
) -> padding.AsymmetricPadding:
    if sig_name == "rsassa_pss":
        try:
            params = algos.SignedDigestAlgorithm.load(encoded)["parameters"]
            mgf_hash = hash_for(
                params["mask_gen_algorithm"]["parameters"]["algorithm"].native, policy
            )
            salt = int(params["salt_length"].native)
        except (ValueError, TypeError, KeyError) as exc:
            raise AgentError(Code.MALFORMED, "bad RSASSA-PSS parameters") from exc
        return padding.PSS(mgf=padding.MGF1(mgf_hash), salt_length=salt)
    if sig_name == "rsassa_pkcs1v15" or sig_name in SIGNATURE_DIGEST:
        return padding.PKCS1v15()
    raise AgentError(Code.BAD_SIGNATURE, f"unsupported signature algorithm {sig_name}")
