"""A software authenticator with a real P-256 key (``cryptography``): it answers WebAuthn
registration and sign-in options as a browser would post them (W3C WebAuthn L2 §6.1 data layout,
"none" attestation), so the server's verification runs on genuine signatures.

Built as py_webauthn's own test suite builds its responses; every field can be bent to test a
refusal (another origin, another RP ID, a counter that goes back).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn.helpers import bytes_to_base64url

FLAG_USER_PRESENT = 0x01
FLAG_ATTESTED_DATA = 0x40


def _b64(data: bytes) -> str:
    return bytes_to_base64url(data)


@dataclass
class SoftAuthenticator:
    rp_id: str
    origin: str
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    credential_id: bytes = field(default_factory=lambda: os.urandom(32))
    sign_count: int = 0

    def cose_public_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        # RFC 9053 §7.1.1: kty EC2 (2), alg ES256 (-7), crv P-256 (1), x, y.
        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                            -3: numbers.y.to_bytes(32, "big")})

    def _client_data(self, kind: str, options: dict[str, Any], origin: str | None) -> bytes:
        return json.dumps({"type": kind, "challenge": options["challenge"],
                           "origin": origin or self.origin, "crossOrigin": False}).encode()

    def _rp_hash(self, rp_id: str | None) -> bytes:
        return hashlib.sha256((rp_id or self.rp_id).encode()).digest()

    def create(self, options: dict[str, Any], *, origin: str | None = None,
               rp_id: str | None = None) -> str:
        """What webauthn.js posts after navigator.credentials.create()."""
        client_data = self._client_data("webauthn.create", options, origin)
        auth_data = (
            self._rp_hash(rp_id) + bytes([FLAG_USER_PRESENT | FLAG_ATTESTED_DATA])
            + struct.pack(">I", self.sign_count)
            + bytes(16)  # AAGUID: none
            + struct.pack(">H", len(self.credential_id)) + self.credential_id
            + self.cose_public_key()
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return json.dumps({
            "id": _b64(self.credential_id), "rawId": _b64(self.credential_id),
            "type": "public-key", "clientExtensionResults": {},
            "response": {"clientDataJSON": _b64(client_data),
                         "attestationObject": _b64(attestation), "transports": ["usb"]},
        })

    def get(self, options: dict[str, Any], *, origin: str | None = None,
            rp_id: str | None = None, sign_count: int | None = None) -> str:
        """What webauthn.js posts after navigator.credentials.get(); each answer counts up."""
        if sign_count is None:
            self.sign_count += 1
            sign_count = self.sign_count
        client_data = self._client_data("webauthn.get", options, origin)
        auth_data = self._rp_hash(rp_id) + bytes([FLAG_USER_PRESENT]) + struct.pack(">I", sign_count)
        signature = self.key.sign(auth_data + hashlib.sha256(client_data).digest(),
                                  ec.ECDSA(hashes.SHA256()))
        return json.dumps({
            "id": _b64(self.credential_id), "rawId": _b64(self.credential_id),
            "type": "public-key", "clientExtensionResults": {},
            "response": {"clientDataJSON": _b64(client_data),
                         "authenticatorData": _b64(auth_data), "signature": _b64(signature)},
        })
