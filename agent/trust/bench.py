"""Path-validation engines measured on one S/MIME path: ``python -m agent.trust.bench``.

The path is root -> intermediate -> leaf (RSA-2048, SHA-256, SAN rfc822Name, emailProtection),
the intermediate carried in the message, no revocation sources (revocation is cached in steady
state, so it is not what separates the engines). Each engine does a full validation per
iteration with its long-lived parts (trust store, verifier, root list) built once:

* ``agent.trust``: ``validate_signer`` itself, i.e. our builder plus binding, key usage, EKU,
  algorithm policy, CA checks and a revocation call per certificate; measured warm (verified
  certificate links memoised, the steady state for a regular sender) and cold;
* ``x509.verification``: cryptography's Rust verifier (client verifier, Web PKI CA policy,
  permissive end-entity policy since it has no S/MIME profile);
* ``pyhanko-certvalidator``: only if importable (it is not a project dependency).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.trust.algorithms import issued_by
from agent.trust.revocation import HttpRevocationChecker
from agent.trust.store import StaticTrustStore
from agent.trust.validate import validate_signer
from agent.types import Binding, Candidates, Environment, Identity

SENDER = "alice@sender.example"
DOMAIN = "receiver.example"


def _certificate(
    cn: str,
    key: rsa.RSAPrivateKey,
    issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None,
    *,
    ca: bool,
    now: datetime,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    signer_key = issuer[1] if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca, None), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), False
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=not ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(SENDER)]), False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
    return builder.sign(signer_key, hashes.SHA256())


class _NoKeys:
    def signing_identities(self, address: str) -> Sequence[Identity]:
        return ()

    def decryption_identities(self, addresses: Sequence[str]) -> Sequence[Identity]:
        return ()


class _NoCertificates:
    def candidates(self, address: str) -> Any:
        return iter([Candidates(source="none", binding=Binding.ADDRESS)])


class _NoIssuers:
    def issuers(self, certificate: x509.Certificate) -> Sequence[x509.Certificate]:
        return ()


def _rate(run: Callable[[], object], seconds: float) -> float:
    run()  # warm up, and fail loudly before timing if the engine rejects the path
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        run()
        count += 1
    return count / elapsed


def measure(seconds: float = 2.0, *, rounds: int = 3) -> dict[str, float | str]:
    """Validations per second per engine: the best of ``rounds`` interleaved rounds, so a burst
    of load from other processes on a shared machine skews one round, not the result."""
    now = datetime.now(UTC).replace(microsecond=0)
    keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)]
    root = _certificate("Bench Root", keys[0], None, ca=True, now=now)
    inter = _certificate("Bench Intermediate", keys[1], (root, keys[0]), ca=True, now=now)
    leaf = _certificate("Alice", keys[2], (inter, keys[1]), ca=False, now=now)
    engines: dict[str, Callable[[], object]] = {}
    results: dict[str, float | str] = {}

    env = Environment(
        keys=_NoKeys(),
        certificates=_NoCertificates(),
        anchors=StaticTrustStore(incoming={DOMAIN: [root]}),
        revocation=HttpRevocationChecker(),
        issuers=_NoIssuers(),
    )

    def warm() -> object:
        return validate_signer(
            leaf, [inter], sender=SENDER, recipient_domain=DOMAIN, env=env, at=now
        )

    def cold() -> object:
        issued_by.cache_clear()  # every signature verified again, as on a signer's first message
        return warm()

    engines["agent.trust"] = warm
    engines["agent.trust (cold, no link memo)"] = cold

    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([root]))
        .time(now)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=verification.ExtensionPolicy.permit_all(),
        )
        .build_client_verifier()
    )
    engines["x509.verification"] = lambda: verifier.verify(leaf, [inter])

    loop = asyncio.new_event_loop()
    try:
        from pyhanko_certvalidator import (  # type: ignore[import-not-found,unused-ignore]
            CertificateValidator,
            ValidationContext,
        )
    except ImportError:
        results["pyhanko-certvalidator"] = "not installed"
    else:
        from asn1crypto import x509 as asn1_x509

        def der(c: x509.Certificate) -> Any:
            return asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER))

        a_root, a_inter, a_leaf = der(root), der(inter), der(leaf)

        def pyhanko() -> object:
            context = ValidationContext(trust_roots=[a_root], moment=now)
            validator = CertificateValidator(
                a_leaf, intermediate_certs=[a_inter], validation_context=context
            )
            return loop.run_until_complete(
                validator.async_validate_usage({"digital_signature"}, {"email_protection"})
            )

        engines["pyhanko-certvalidator"] = pyhanko
    try:
        best: dict[str, float] = dict.fromkeys(engines, 0.0)
        for _ in range(rounds):
            for engine, run in engines.items():
                best[engine] = max(best[engine], _rate(run, seconds / rounds))
    finally:
        loop.close()
    return {**best, **results}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per engine")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    results = measure(args.seconds)
    if args.json:
        print(json.dumps(results))
        return
    for engine, rate in results.items():
        shown = f"{rate:10.0f} validations/s" if isinstance(rate, float) else f"{rate:>10}"
        print(f"{engine:34} {shown}")


if __name__ == "__main__":
    main()
