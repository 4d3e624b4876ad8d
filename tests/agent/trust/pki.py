"""Test PKI for the trust tests: a few session-wide keys, a certificate factory, and a real
loopback HTTP server that serves CRLs, OCSP answers and AIA caIssuers certificates."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from asn1crypto import algos as asn1_algos
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from agent.types import Candidates, Identity

NOW = datetime.now(UTC).replace(microsecond=0)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Authority:
    certificate: x509.Certificate
    key: rsa.RSAPrivateKey


def issue(
    cn: str,
    *,
    key: rsa.RSAPrivateKey,
    issuer: Authority | None = None,
    ca: bool = False,
    path_length: int | None = None,
    emails: Sequence[str] = (),
    dns: Sequence[str] = (),
    key_usage: str | None = "both",
    eku: Sequence[x509.ObjectIdentifier] | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    digest: hashes.HashAlgorithm | None = None,
    ocsp_url: str | None = None,
    ca_issuers_url: str | None = None,
    crl_url: str | None = None,
    name_constraints: x509.NameConstraints | None = None,
    extra_extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    serial: int | None = None,
    subject_emails: Sequence[str] = (),
) -> x509.Certificate:
    """Issue a certificate; ``issuer`` None makes it self-signed. ``subject_emails`` go into the
    subject DN as emailAddress attributes (the pre-Direct-AS binding)."""
    signer_key = issuer.key if issuer else key
    subject = x509.Name(
        [
            *name(cn),
            *(x509.NameAttribute(NameOID.EMAIL_ADDRESS, value) for value in subject_emails),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else name(cn))
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before or NOW - timedelta(days=1))
        .not_valid_after(not_after or NOW + timedelta(days=365))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), False
        )
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(True, path_length), True)
        usage = dict(key_cert_sign=True, crl_sign=True, digital_signature=False)
        key_enc = False
    else:
        builder = builder.add_extension(x509.BasicConstraints(False, None), True)
        usage = dict(
            key_cert_sign=False,
            crl_sign=False,
            digital_signature=key_usage in ("both", "sign"),
        )
        key_enc = key_usage in ("both", "encrypt")
    if key_usage is not None:
        builder = builder.add_extension(
            x509.KeyUsage(
                content_commitment=False,
                key_encipherment=key_enc,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
                **usage,
            ),
            True,
        )
    names: list[x509.GeneralName] = [x509.RFC822Name(e) for e in emails]
    names += [x509.DNSName(d) for d in dns]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), False)
    access = []
    if ocsp_url:
        access.append(
            x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
            )
        )
    if ca_issuers_url:
        access.append(
            x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS,
                x509.UniformResourceIdentifier(ca_issuers_url),
            )
        )
    if access:
        builder = builder.add_extension(x509.AuthorityInformationAccess(access), False)
    if crl_url:
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier(crl_url)], None, None, None
                    )
                ]
            ),
            False,
        )
    if name_constraints is not None:
        builder = builder.add_extension(name_constraints, True)
    for extension, critical in extra_extensions:
        builder = builder.add_extension(extension, critical)
    if digest is None or isinstance(digest, hashes.SHA256):
        return builder.sign(signer_key, hashes.SHA256())
    return _resign(builder.sign(signer_key, hashes.SHA256()), signer_key, digest)


_LEGACY_ALGORITHMS = {"sha1": "sha1_rsa", "md5": "md5_rsa", "sha384": "sha384_rsa"}


def _resign(
    certificate: x509.Certificate, key: rsa.RSAPrivateKey, digest: hashes.HashAlgorithm
) -> x509.Certificate:
    """cryptography no longer signs certificates with SHA-1 or MD5, but old Direct CAs did: sign
    the TBSCertificate ourselves with asn1crypto so the legacy and weak paths can be tested."""
    loaded = asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))
    algorithm = asn1_algos.SignedDigestAlgorithm({"algorithm": _LEGACY_ALGORITHMS[digest.name]})
    tbs = loaded["tbs_certificate"]
    tbs["signature"] = algorithm
    signature = key.sign(tbs.dump(force=True), padding.PKCS1v15(), digest)
    rebuilt = asn1_x509.Certificate(
        {"tbs_certificate": tbs, "signature_algorithm": algorithm, "signature_value": signature}
    )
    return x509.load_der_x509_certificate(rebuilt.dump())


def with_duplicate_extension(
    certificate: x509.Certificate, key: rsa.RSAPrivateKey
) -> x509.Certificate:
    """A certificate carrying its first extension twice (RFC 5280 4.2 forbids it): the kind of
    input cryptography only rejects when the extensions are first read."""
    loaded = asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))
    tbs = loaded["tbs_certificate"]
    extensions = list(tbs["extensions"])
    tbs["extensions"] = asn1_x509.Extensions([*extensions, extensions[0]])
    algorithm = loaded["signature_algorithm"]
    signature = key.sign(tbs.dump(force=True), padding.PKCS1v15(), hashes.SHA256())
    rebuilt = asn1_x509.Certificate(
        {"tbs_certificate": tbs, "signature_algorithm": algorithm, "signature_value": signature}
    )
    return x509.load_der_x509_certificate(rebuilt.dump())


def authority(
    cn: str, *, key: rsa.RSAPrivateKey, issuer: Authority | None = None, **kw: object
) -> Authority:
    return Authority(issue(cn, key=key, issuer=issuer, ca=True, **kw), key)  # type: ignore[arg-type]


def crl(
    issuer: Authority,
    *,
    revoked: Sequence[x509.Certificate] = (),
    next_update: datetime | None = None,
    last_update: datetime | None = None,
    signer_key: rsa.RSAPrivateKey | None = None,
) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.certificate.subject)
        .last_update(last_update or NOW - timedelta(hours=1))
        .next_update(next_update or NOW + timedelta(days=1))
    )
    for certificate in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(certificate.serial_number)
            .revocation_date(NOW - timedelta(minutes=30))
            .build()
        )
    return builder.sign(signer_key or issuer.key, hashes.SHA256()).public_bytes(
        serialization.Encoding.DER
    )


@dataclass
class Responder:
    """How the OCSP route answers: statuses by serial, signed by ``signer`` (default: issuer)."""

    issuer: Authority
    revoked: set[int] = field(default_factory=set)
    unknown: set[int] = field(default_factory=set)
    signer: Authority | None = None
    include_signer: bool = False
    reasons: dict[int, x509.ReasonFlags] = field(default_factory=dict)

    def answer(self, body: bytes) -> bytes:
        request = ocsp.load_der_ocsp_request(body)
        serial = request.serial_number
        if serial in self.revoked:
            status, when = ocsp.OCSPCertStatus.REVOKED, NOW - timedelta(minutes=30)
        elif serial in self.unknown:
            status, when = ocsp.OCSPCertStatus.UNKNOWN, None
        else:
            status, when = ocsp.OCSPCertStatus.GOOD, None
        signer = self.signer or self.issuer
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                request.issuer_name_hash,
                request.issuer_key_hash,
                serial,
                request.hash_algorithm,
                status,
                NOW - timedelta(minutes=5),
                NOW + timedelta(hours=12),
                when,
                self.reasons.get(serial) if when is not None else None,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, signer.certificate)
        )
        if self.include_signer:
            builder = builder.certificates([signer.certificate])
        response = builder.sign(signer.key, hashes.SHA256())
        return response.public_bytes(serialization.Encoding.DER)


Route = Callable[[bytes], tuple]  # (status, body) or (status, body, headers)


class Server:
    """A real HTTP server on a free loopback port; tests register routes by path."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, body: bytes) -> None:
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                route = server.routes.get(self.path)
                answer = route(body) if route else (404, b"")
                status, payload = answer[0], answer[1]
                self.send_response(status)
                for header, value in (answer[2] if len(answer) > 2 else {}).items():
                    self.send_header(header, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._serve(b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self._serve(self.rfile.read(length))

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def serve(self, path: str, payload: bytes, status: int = 200) -> str:
        self.routes[path] = lambda _body: (status, payload)
        return self.url(path)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def closed_port_url(path: str) -> str:
    """A loopback URL nobody listens on (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


class NoKeys:
    def signing_identities(self, address: str) -> Sequence[Identity]:
        return ()

    def decryption_identities(self, addresses: Sequence[str]) -> Sequence[Identity]:
        return ()


class StaticResolver:
    def __init__(self, levels: dict[str, list[Candidates]] | None = None) -> None:
        self.levels = levels or {}
        self.asked: list[str] = []

    def candidates(self, address: str) -> Iterator[Candidates]:
        for level in self.levels.get(address, []):
            self.asked.append(level.source)
            yield level


EMAIL = ExtendedKeyUsageOID.EMAIL_PROTECTION
