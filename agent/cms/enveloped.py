"""CMS EnvelopedData (RFC 5652 section 6) and AuthEnvelopedData (RFC 5083) with AES-CBC
(RFC 3565) and AES-GCM (RFC 5084), RSA PKCS#1 v1.5 or RSAES-OAEP key transport (RFC 3560).

The fixed-shape structures are written and walked with :mod:`agent.cms.der`, so the (large)
encrypted content is never copied level by level and a message costs little beyond its one
private-key operation; asn1crypto parses only the less common pieces (OAEP and GCM parameters,
issuer names encoded differently from our copy).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import algos, cms, core
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from agent.cms import der
from agent.cms.algorithms import CBC_READ, CIPHERS, GCM_READ, WEAK_CIPHERS
from agent.cms.certs import issuer_and_serial, matches_issuer_serial, subject_key_identifier
from agent.errors import AgentError, Code
from agent.types import ContentCipher, Identity, KeyTransport

_OID_DATA = core.ObjectIdentifier("1.2.840.113549.1.7.1").dump()
_OID_ENVELOPED = core.ObjectIdentifier("1.2.840.113549.1.7.3").dump()
_OID_AUTH_ENVELOPED = core.ObjectIdentifier("1.2.840.113549.1.9.16.1.23").dump()
ENVELOPED = "1.2.840.113549.1.7.3"
AUTH_ENVELOPED = "1.2.840.113549.1.9.16.1.23"
SIGNED = "1.2.840.113549.1.7.2"
_CIPHER_OIDS = {
    name: bytes(core.ObjectIdentifier(oid).dump())
    for oid, name in algos.EncryptionAlgorithmId._map.items()
}
_CIPHER_NAMES = {oid: name for name, oid in _CIPHER_OIDS.items()}
_GCM_NONCE = 12
_GCM_TAG = 16


class GCMParameters(core.Sequence):  # type: ignore[misc]  # asn1crypto is untyped
    """RFC 5084 section 3.2."""

    _fields = [
        ("aes_nonce", core.OctetString),
        ("aes_icvlen", core.Integer, {"default": 12}),
    ]


def _oaep_sha256() -> algos.RSAESOAEPParams:
    sha256 = {"algorithm": "sha256"}
    return algos.RSAESOAEPParams(
        {
            "hash_algorithm": sha256,
            "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": sha256},
        }
    )


_OAEP_ALGORITHM = bytes(
    cms.KeyEncryptionAlgorithm({"algorithm": "rsaes_oaep", "parameters": _oaep_sha256()}).dump()
)
# rsaEncryption with NULL parameters (RFC 3370 section 4.2.1), or, as some peers write it, none.
_RSA_ENCRYPTION_OID = der.encode(der.OID, bytes.fromhex("2a864886f70d010101"))
_V15_ALGORITHM = der.sequence(_RSA_ENCRYPTION_OID, b"\x05\x00")
_V15_ENCODINGS = frozenset({_V15_ALGORITHM, der.sequence(_RSA_ENCRYPTION_OID)})


def encrypt(
    content: bytes | memoryview | Sequence[bytes | memoryview],
    *,
    recipients: Sequence[x509.Certificate],
    cipher: ContentCipher,
    transport: KeyTransport,
) -> bytes:
    """DER ContentInfo: EnvelopedData (CBC) or AuthEnvelopedData (GCM) for ``recipients``.

    ``content`` may be given as pieces (read as their concatenation), so a large message is
    never joined into one plaintext buffer.
    """
    pieces = [content] if isinstance(content, bytes | memoryview) else list(content)
    if not recipients:
        raise ValueError("at least one recipient certificate is needed")
    name, key_len = CIPHERS[cipher]
    cek = os.urandom(key_len)
    infos = der.set_of(*(_recipient_info(c, cek, transport) for c in recipients))
    version = b"\x02\x01\x00"  # RFC 5652 section 6.1 / RFC 5083 section 2.1: ktri v0 only
    if cipher in (ContentCipher.AES128_CBC, ContentCipher.AES256_CBC):
        iv = os.urandom(16)
        encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
        pad = 16 - sum(map(len, pieces)) % 16
        body = [encryptor.update(p) for p in pieces]
        body += [encryptor.update(bytes([pad]) * pad), encryptor.finalize()]
        algorithm = der.sequence(_CIPHER_OIDS[name], der.octet_string(iv))
        eci = der.tlv(der.SEQUENCE, [_OID_DATA, algorithm, *der.tlv(0x80, body)])
        envelope = der.tlv(der.SEQUENCE, [version, infos, *eci])
        outer = _OID_ENVELOPED
    else:
        nonce = os.urandom(_GCM_NONCE)
        encryptor = Cipher(algorithms.AES(cek), modes.GCM(nonce)).encryptor()
        body = [encryptor.update(p) for p in pieces]
        body.append(encryptor.finalize())
        # GCMParameters (RFC 5084 section 3.2): nonce, and the 16-byte ICV length.
        params = der.sequence(der.octet_string(nonce), der.integer(_GCM_TAG))
        algorithm = der.sequence(_CIPHER_OIDS[name], params)
        eci = der.tlv(der.SEQUENCE, [_OID_DATA, algorithm, *der.tlv(0x80, body)])
        mac = b"".join(der.tlv(der.OCTET_STRING, [encryptor.tag]))
        envelope = der.tlv(der.SEQUENCE, [version, infos, *eci, mac])
        outer = _OID_AUTH_ENVELOPED
    return b"".join(der.tlv(der.SEQUENCE, [outer, *der.tlv(0xA0, envelope)]))


def _recipient_info(certificate: x509.Certificate, cek: bytes, transport: KeyTransport) -> bytes:
    """DER KeyTransRecipientInfo v0 with an issuerAndSerialNumber rid (RFC 5652 6.2.1)."""
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise AgentError(Code.WEAK_KEY, "recipient key is not RSA")
    if transport is KeyTransport.RSA_OAEP_SHA256:
        pad: padding.AsymmetricPadding = padding.OAEP(
            mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
        )
        algorithm = _OAEP_ALGORITHM
    else:
        pad, algorithm = padding.PKCS1v15(), _V15_ALGORITHM
    return der.sequence(
        b"\x02\x01\x00",
        issuer_and_serial(certificate),
        algorithm,
        der.octet_string(key.encrypt(cek, pad)),
    )


@dataclass(frozen=True)
class Envelope:
    """The walked outer layers of an (Auth)EnvelopedData."""

    kind: str  # ENVELOPED or AUTH_ENVELOPED
    recipient_infos: bytes
    algorithm: bytes
    pieces: list[memoryview]
    mac: bytes | None
    auth_attrs: bytes | None


def _as_bytes(data: bytes | memoryview) -> bytes:
    return data if isinstance(data, bytes) else bytes(data)


def content_type(data: bytes | memoryview) -> str:
    """The dotted OID of a ContentInfo's contentType (RFC 5652 section 3)."""
    buf = _as_bytes(data)
    top = der.expect(der.read(buf, 0, len(buf)), der.SEQUENCE, "ContentInfo")
    oid = der.expect(der.read(buf, top.content_start, top.content_end), der.OID, "contentType")
    try:
        return str(core.ObjectIdentifier.load(der.raw(buf, oid)).dotted)
    except ValueError as exc:
        raise AgentError(Code.MALFORMED, "bad contentType") from exc


def parse(data: bytes | memoryview) -> Envelope:
    buf = _as_bytes(data)
    top = der.expect(der.read(buf, 0, len(buf)), der.SEQUENCE, "ContentInfo")
    parts = der.children(buf, top)
    if len(parts) != 2 or parts[1].tag != 0xA0:
        raise AgentError(Code.MALFORMED, "ContentInfo without content")
    kind = content_type(buf)
    inner = der.children(buf, parts[1])
    if len(inner) != 1:
        raise AgentError(Code.MALFORMED, "ContentInfo content is not one value")
    body = inner[0]
    fields = der.children(buf, der.expect(body, der.SEQUENCE, "EnvelopedData"))
    if len(fields) < 3:
        raise AgentError(Code.MALFORMED, "truncated EnvelopedData")
    index = 1
    if fields[index].tag == 0xA0:  # originatorInfo
        index += 1
    infos = der.expect(fields[index], der.SET, "RecipientInfos")
    eci_node = der.expect(fields[index + 1], der.SEQUENCE, "EncryptedContentInfo")
    rest = fields[index + 2 :]
    eci = der.children(buf, eci_node)
    if len(eci) < 2:
        raise AgentError(Code.MALFORMED, "truncated EncryptedContentInfo")
    pieces: list[memoryview] = []
    if len(eci) > 2:
        if eci[2].tag not in (0x80, 0xA0):
            raise AgentError(Code.MALFORMED, "unexpected field in EncryptedContentInfo")
        pieces = der.octets(buf, eci[2])
    mac = auth_attrs = None
    if kind == AUTH_ENVELOPED:
        for node in rest:
            if node.tag == 0xA1:
                auth_attrs = der.raw(buf, node)
            elif node.tag == der.OCTET_STRING:
                mac = buf[node.content_start : node.content_end]
        if mac is None:
            raise AgentError(Code.MALFORMED, "AuthEnvelopedData without mac")
    return Envelope(kind, der.raw(buf, infos), der.raw(buf, eci[1]), pieces, mac, auth_attrs)


def decrypt(data: bytes | memoryview, *, identities: Sequence[Identity]) -> bytes:
    """Decrypt with whichever identity a RecipientInfo names, in any position (RFC 5652 6.2.1).

    Weak content ciphers and malformed content parameters are refused before any private-key
    operation. Each hosted key is tried once, with the first RecipientInfo that names it: a
    message naming one certificate thousands of times must not cost a private-key operation
    (and a content decryption) each.
    """
    envelope = parse(data)
    alg_name, params = _content_algorithm(envelope.algorithm)
    if alg_name in WEAK_CIPHERS:
        raise AgentError(Code.WEAK_ALGORITHM, f"{alg_name} content encryption is not accepted")
    if envelope.kind == AUTH_ENVELOPED:
        if alg_name not in GCM_READ:
            raise AgentError(Code.MALFORMED, f"unsupported authenticated cipher {alg_name}")
        key_len = GCM_READ[alg_name]
        nonce = _gcm_nonce(envelope, params)
    else:
        if alg_name not in CBC_READ:
            raise AgentError(Code.MALFORMED, f"unsupported content cipher {alg_name}")
        key_len = CBC_READ[alg_name]
        iv = _cbc_iv(envelope, params)
    tried: set[int] = set()
    for info in _key_transports(envelope.recipient_infos):
        for index, identity in enumerate(identities):
            if index in tried or not info.names(identity.certificate):
                continue
            tried.add(index)
            unwrapped_key = _unwrap_key(info, identity)
            unwrapped = unwrapped_key is not None and len(unwrapped_key) == key_len
            if unwrapped_key is not None and unwrapped:
                cek = unwrapped_key
            else:
                # RFC 3218 section 2.3.2: carry on with a random key, so that a key transport
                # that does not unwrap fails where bad content fails, after the same work. An
                # early exit would time the padding check for an attacker (Bleichenbacher).
                cek = os.urandom(key_len)
            try:
                if envelope.kind == AUTH_ENVELOPED:
                    content = _decrypt_gcm(envelope, nonce, cek)
                else:
                    content = _decrypt_cbc(envelope, iv, cek)
            except AgentError:
                continue  # another hosted key may be named further on
            if unwrapped:
                # What a random key gives (CBC padding that happens to check out, one time in
                # 256) is never taken for the message, and another hosted key still gets its turn.
                return content
    if not tried:
        raise AgentError(Code.NO_DECRYPTION_KEY, "no RecipientInfo names a hosted key")
    # One outcome for bad padding and bad key alike (RFC 3218 section 2.3, Bleichenbacher).
    raise AgentError(Code.DECRYPTION_FAILED, "content could not be decrypted")


def _content_algorithm(encoded: bytes) -> tuple[str, bytes | None]:
    """(name, DER of the parameters) of a ContentEncryptionAlgorithmIdentifier."""
    buf = encoded
    fields = der.children(buf, der.expect(der.read(buf, 0, len(buf)), der.SEQUENCE, "AlgorithmId"))
    if not fields or fields[0].tag != der.OID:
        raise AgentError(Code.MALFORMED, "bad content encryption AlgorithmIdentifier")
    oid = der.raw(buf, fields[0])
    name = _CIPHER_NAMES.get(oid)
    if name is None:
        try:
            name = str(core.ObjectIdentifier.load(oid).dotted)
        except ValueError as exc:
            raise AgentError(Code.MALFORMED, "bad content encryption OID") from exc
    return name, der.raw(buf, fields[1]) if len(fields) > 1 else None


@dataclass(frozen=True)
class _KeyTrans:
    """One KeyTransRecipientInfo (RFC 5652 section 6.2.1), walked by offset."""

    rid: bytes  # DER IssuerAndSerialNumber, or the subjectKeyIdentifier octets
    by_ski: bool
    algorithm: bytes  # DER KeyEncryptionAlgorithmIdentifier
    encrypted_key: bytes

    def names(self, certificate: x509.Certificate) -> bool:
        if self.by_ski:
            ski = subject_key_identifier(certificate)
            return ski is not None and ski == self.rid
        if self.rid == issuer_and_serial(certificate):
            return True
        # Same serial but differently encoded issuer: compare as X.509 names (RFC 5280 7.1).
        try:
            ias = cms.IssuerAndSerialNumber.load(self.rid)
            return matches_issuer_serial(certificate, ias["issuer"], ias["serial_number"].native)
        except (ValueError, TypeError, KeyError):
            return False


def _key_transports(encoded: bytes) -> list[_KeyTrans]:
    buf = encoded
    out: list[_KeyTrans] = []
    for info in der.children(buf, der.read(buf, 0, len(buf))):
        if info.tag != der.SEQUENCE:
            continue  # kari, kekri, pwri and ori are [n]-tagged choices (RFC 5652 section 6.2)
        fields = der.children(buf, info)
        if len(fields) != 4:
            raise AgentError(Code.MALFORMED, "bad KeyTransRecipientInfo")
        rid, algorithm, key = fields[1], fields[2], fields[3]
        if rid.tag == der.SEQUENCE:
            rid_bytes, by_ski = der.raw(buf, rid), False
        elif rid.tag == 0x80:
            rid_bytes, by_ski = buf[rid.content_start : rid.content_end], True
        else:
            raise AgentError(Code.MALFORMED, "bad RecipientIdentifier")
        der.expect(algorithm, der.SEQUENCE, "KeyEncryptionAlgorithmIdentifier")
        if key.tag & 0x1F != der.OCTET_STRING:
            raise AgentError(Code.MALFORMED, "bad encryptedKey")
        encrypted_key = b"".join(der.octets(buf, key))
        out.append(_KeyTrans(rid_bytes, by_ski, der.raw(buf, algorithm), encrypted_key))
    return out


def _unwrap_key(info: _KeyTrans, identity: Identity) -> bytes | None:
    if info.algorithm in _V15_ENCODINGS:
        pad: padding.AsymmetricPadding = padding.PKCS1v15()
    else:
        try:
            algorithm = cms.KeyEncryptionAlgorithm.load(info.algorithm)
            name = algorithm["algorithm"].native
            if name != "rsaes_oaep":
                raise AgentError(Code.MALFORMED, f"unsupported key transport {name}")
            params = algorithm["parameters"]
            hash_name = params["hash_algorithm"]["algorithm"].native
            mgf_hash = params["mask_gen_algorithm"]["parameters"]["algorithm"].native
            label = params["p_source_algorithm"]["parameters"].native or None
            pad = padding.OAEP(
                mgf=padding.MGF1(_oaep_hash(mgf_hash)), algorithm=_oaep_hash(hash_name), label=label
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise AgentError(Code.MALFORMED, "unparseable key transport parameters") from exc
    key = identity.private_key()
    try:
        return key.decrypt(info.encrypted_key, pad)
    except ValueError:
        return None


def _oaep_hash(name: str) -> hashes.HashAlgorithm:
    # OAEP's hash protects the key-transport padding, not message integrity: SHA-1 is still
    # sound here (RFC 8017 section 7.1) and is the RFC 3560 default that .NET peers send.
    table: dict[str, hashes.HashAlgorithm] = {
        "sha1": hashes.SHA1(),  # noqa: S303 - see above
        "sha224": hashes.SHA224(),
        "sha256": hashes.SHA256(),
        "sha384": hashes.SHA384(),
        "sha512": hashes.SHA512(),
    }
    if name not in table:
        raise AgentError(Code.MALFORMED, f"unsupported OAEP hash {name}")
    return table[name]


def _cbc_iv(envelope: Envelope, params: bytes | None) -> bytes:
    """RFC 3565 section 4.1: the parameters are the 16-byte IV as an OCTET STRING; the content
    is whole blocks."""
    iv = params[2:] if params and params[0] == der.OCTET_STRING and params[1] == 16 else None
    total = sum(len(p) for p in envelope.pieces)
    if not isinstance(iv, bytes) or len(iv) != 16 or total == 0 or total % 16:
        raise AgentError(Code.DECRYPTION_FAILED, "content could not be decrypted")
    return iv


def _decrypt_cbc(envelope: Envelope, iv: bytes, cek: bytes) -> bytes:
    total = sum(len(p) for p in envelope.pieces)
    decryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor()
    out = bytearray(total + 16)
    view = memoryview(out)
    size = 0
    for piece in envelope.pieces:
        size += decryptor.update_into(piece, view[size:])
    view.release()
    decryptor.finalize()
    pad = out[size - 1]
    # RFC 5652 section 6.3 padding; the check is not constant time but the outcome is the same
    # opaque failure as a wrong key, after the same private-key operation.
    if not 1 <= pad <= 16 or out[size - pad : size] != bytes([pad]) * pad:
        raise AgentError(Code.DECRYPTION_FAILED, "content could not be decrypted")
    del out[size - pad :]
    return bytes(out)


# GCM nonce lengths the cipher accepts (NIST SP 800-38D; RFC 5084 section 3.2 recommends 12).
_GCM_NONCE_SIZES = range(8, 129)


def _gcm_nonce(envelope: Envelope, params: bytes | None) -> bytes:
    """RFC 5084 section 3.2 GCMParameters: the nonce, and an ICV length equal to the mac's."""
    try:
        gcm = GCMParameters.load(params or b"")
        nonce = gcm["aes_nonce"].native
        icvlen = gcm["aes_icvlen"].native
    except (ValueError, TypeError, KeyError) as exc:
        raise AgentError(Code.MALFORMED, "bad GCM parameters") from exc
    mac = envelope.mac or b""
    if (
        not isinstance(nonce, bytes)
        or len(nonce) not in _GCM_NONCE_SIZES
        or icvlen != len(mac)
        or not 12 <= icvlen <= 16
    ):
        raise AgentError(Code.MALFORMED, "bad GCM parameters")
    return nonce


def _decrypt_gcm(envelope: Envelope, nonce: bytes, cek: bytes) -> bytes:
    mac = envelope.mac or b""
    decryptor = Cipher(algorithms.AES(cek), modes.GCM(nonce, mac, min_tag_length=12)).decryptor()
    if envelope.auth_attrs is not None:
        # RFC 5083 section 2.2: authAttrs are authenticated as their DER SET OF encoding.
        decryptor.authenticate_additional_data(b"\x31" + envelope.auth_attrs[1:])
    total = sum(len(p) for p in envelope.pieces)
    out = bytearray(total + 16)
    view = memoryview(out)
    size = 0
    for piece in envelope.pieces:
        size += decryptor.update_into(piece, view[size:])
    view.release()
    try:
        decryptor.finalize()
    except InvalidTag as exc:
        raise AgentError(Code.DECRYPTION_FAILED, "content could not be decrypted") from exc
    del out[size:]
    return bytes(out)
