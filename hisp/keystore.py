"""Key custody: private keys stored only under envelope encryption.

Each private key's PKCS#8 DER is encrypted with its own random 256-bit data key under AES-256-GCM
(NIST SP 800-38D); the data key is wrapped with the key-encryption key (KEK) from settings using
AES Key Wrap (RFC 3394), which carries its own integrity check. Rotating the KEK therefore only
re-wraps the short data keys, never the keys themselves.

A one-row verifier (a known value sealed with the KEK) lets every process fail at start-up with a
clear message when it is given the wrong KEK, instead of failing on the first message it tries to
decrypt. Unwrapped keys are returned to the caller and never cached here, never logged and never
placed in an exception message (``hisp.agent_env`` keeps them for a bounded minute, see there).
Every function here that holds clear key material is ``sensitive_variables``: Django's error
reports (the DEBUG page, mail to ADMINS, any reporter built on its filter) print a traceback's
local variables, and a failure while a data key or a PKCS#8 is in hand would print those.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from hisp.models import KekVerifier, PrivateKey

_FORMAT = b"\x01"  # ciphertext layout version: 0x01 || nonce(12) || AES-GCM(ct || tag)
_NONCE = 12
_KEY_AAD = b"hisp private key pkcs8 v1"
_VERIFIER_AAD = b"hisp kek verifier v1"
_VERIFIER_PLAINTEXT = b"HISP key-encryption key verifier"


class KeystoreError(Exception):
    """Key custody failed. Messages never include key material."""


class KekMismatch(KeystoreError):
    """The configured KEK is not the one the stored keys are wrapped with."""


class InvalidKek(KeystoreError):
    """The configured KEK is not 32 bytes of URL-safe base64."""


@dataclass(frozen=True)
class Kek:
    """A key-encryption key. ``repr`` hides the bytes so a traceback never shows them."""

    key: bytes

    def __repr__(self) -> str:
        return "<Kek (hidden)>"

    __str__ = __repr__


def parse_kek(text: str) -> Kek:
    """Read a KEK as written in ``HISP_KEY_ENCRYPTION_KEY``: 32 bytes, URL-safe base64."""
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise InvalidKek("the key-encryption key is not URL-safe base64") from None
    if len(raw) != 32:
        raise InvalidKek(f"the key-encryption key must be 32 bytes, not {len(raw)}")
    return Kek(raw)


def configured_kek() -> Kek:
    return parse_kek(settings.HISP_KEY_ENCRYPTION_KEY)


# --- Sealing -------------------------------------------------------------------------------


@sensitive_variables()
def _seal(data_key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    return _FORMAT + nonce + AESGCM(data_key).encrypt(nonce, plaintext, aad)


@sensitive_variables()
def _open(data_key: bytes, sealed: bytes, aad: bytes) -> bytes:
    if len(sealed) < 1 + _NONCE + 16 or sealed[:1] != _FORMAT:
        raise KeystoreError("stored key has an unknown format")
    nonce, body = sealed[1 : 1 + _NONCE], sealed[1 + _NONCE :]
    try:
        return AESGCM(data_key).decrypt(nonce, body, aad)
    except InvalidTag:
        raise KeystoreError("stored key failed its integrity check") from None


@sensitive_variables()
def _unwrap_data_key(kek: Kek, wrapped: bytes) -> bytes:
    try:
        return aes_key_unwrap(kek.key, wrapped)
    except (InvalidUnwrap, ValueError):
        raise KekMismatch(
            "a data key does not unwrap with the configured HISP_KEY_ENCRYPTION_KEY"
        ) from None


@sensitive_variables()
def wrap_private_key(key: rsa.RSAPrivateKey, *, kek: Kek | None = None) -> PrivateKey:
    """Store ``key`` wrapped and return the saved row."""
    kek = kek or configured_kek()
    with transaction.atomic():
        # The verifier stays share-locked until the caller's transaction commits: a rotation
        # (which locks it for update) waits for this row and re-wraps it too, and a key wrapped
        # while a rotation commits sees the new verifier and is refused. Without the lock a key
        # issued during a rotation was committed under the retired KEK, and lost with it.
        ensure_verifier(kek)
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        data_key = AESGCM.generate_key(bit_length=256)
        row = PrivateKey.objects.create(
            algorithm="rsa",
            key_bits=key.key_size,
            wrapped_data_key=aes_key_wrap(kek.key, data_key),
            ciphertext=_seal(data_key, der, _KEY_AAD),
        )
    del der, data_key
    return row


@sensitive_variables()
def unwrap_private_key(row: PrivateKey, *, kek: Kek | None = None) -> rsa.RSAPrivateKey:
    """The clear key of ``row``. Callers use it at once and drop it; nothing is cached here."""
    kek = kek or configured_kek()
    data_key = _unwrap_data_key(kek, bytes(row.wrapped_data_key))
    der = _open(data_key, bytes(row.ciphertext), _KEY_AAD)
    # The PKCS#8 passed AES-GCM authentication, so it is exactly what we stored after generating
    # or validating it: the (slow) RSA consistency check would only repeat that work.
    key = serialization.load_der_private_key(der, password=None, unsafe_skip_rsa_key_validation=True)
    del der, data_key
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeystoreError(f"stored key {row.pk} is not an RSA key")
    return key


# --- The KEK verifier -------------------------------------------------------------------------


def _seal_verifier(kek: Kek) -> bytes:
    return _seal(kek.key, _VERIFIER_PLAINTEXT, _VERIFIER_AAD)


def ensure_verifier(kek: Kek) -> None:
    """Create the verifier on first use; afterwards, refuse a KEK that does not match it. In a
    transaction the verifier stays share-locked until it ends (see wrap_private_key)."""
    verifier = _shared_verifier()
    if verifier is None:
        KekVerifier.objects.create(sealed=_seal_verifier(kek))
        return
    _check_verifier(kek, verifier)


def _shared_verifier() -> KekVerifier | None:
    """The verifier, read FOR SHARE so that wrapping keys do not wait for one another, only for
    a rotation. SQLite (the quick start) runs one writing transaction at a time anyway."""
    if connection.vendor != "postgresql":
        return KekVerifier.objects.order_by("pk").first()
    # Django's select_for_update has no FOR SHARE; table and column are our own names.
    quote = connection.ops.quote_name
    table, pk = quote(KekVerifier._meta.db_table), quote(KekVerifier._meta.pk.column)
    sql = f"SELECT * FROM {table} ORDER BY {pk} LIMIT 1 FOR SHARE"  # noqa: S608
    found = KekVerifier.objects.raw(sql)
    return next(iter(found), None)


def _check_verifier(kek: Kek, verifier: KekVerifier) -> None:
    try:
        plaintext = _open(kek.key, bytes(verifier.sealed), _VERIFIER_AAD)
    except KeystoreError:
        plaintext = b""
    if plaintext != _VERIFIER_PLAINTEXT:
        raise KekMismatch(
            "HISP_KEY_ENCRYPTION_KEY does not match the key-encryption key the stored private "
            "keys are wrapped with (checked against the stored verifier). Start with the KEK in "
            "use, or finish a rotation with `manage.py keys rotate-kek`."
        )


def verify_configured_kek() -> None:
    """Start-up check: the configured KEK parses and matches the stored verifier.

    Does nothing on a database that has not been migrated yet (``migrate`` on an empty database
    must work) or that holds no keys yet.
    """
    kek = configured_kek()
    try:
        if KekVerifier._meta.db_table not in connection.introspection.table_names():
            return
        verifier = KekVerifier.objects.order_by("pk").first()
    except DatabaseError:
        return
    if verifier is not None:
        _check_verifier(kek, verifier)


# --- Rotation -----------------------------------------------------------------------------------


@sensitive_variables()
def rotate_kek(*, new: Kek, old: Kek | None = None) -> int:
    """Re-wrap every data key from ``old`` (default: the configured KEK) to ``new``, and the
    verifier with them, in one transaction: either every key moves or none does. Returns the
    number of keys re-wrapped. The operator then switches ``HISP_KEY_ENCRYPTION_KEY``."""
    old = old or configured_kek()
    if old.key == new.key:
        raise KeystoreError("the new key-encryption key is the same as the current one")
    with transaction.atomic():
        verifier = KekVerifier.objects.select_for_update().order_by("pk").first()
        if verifier is not None:
            _check_verifier(old, verifier)
        count = 0
        rows: Iterable[PrivateKey] = PrivateKey.objects.select_for_update().order_by("pk")
        for row in rows:
            data_key = _unwrap_data_key(old, bytes(row.wrapped_data_key))
            PrivateKey.objects.filter(pk=row.pk).update(
                wrapped_data_key=aes_key_wrap(new.key, data_key)
            )
            del data_key
            count += 1
        # Updated in place, not replaced: a wrap_private_key waiting on the locked row then reads
        # the new verifier and refuses its old KEK, where a deleted row would read as "no
        # verifier yet" and let it store a key under the old KEK after all.
        if verifier is None:
            KekVerifier.objects.create(sealed=_seal_verifier(new), rotated_at=timezone.now())
        else:
            KekVerifier.objects.exclude(pk=verifier.pk).delete()
            KekVerifier.objects.filter(pk=verifier.pk).update(
                sealed=_seal_verifier(new), rotated_at=timezone.now()
            )
    return count
