"""A key-custody failure must not carry key material into an error report: Django's reporters
(the DEBUG page, mail to ADMINS) print every traceback frame's local variables."""

from __future__ import annotations

import sys

import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from django.views.debug import ExceptionReporter

from hisp import keystore
from hisp.models import Address, Certificate, PrivateKey

CLEANSED = "********************"


def _frames_of_a_failed_unwrap(row: PrivateKey) -> list[dict[str, object]]:
    with pytest.raises(keystore.KeystoreError, match="failed its integrity check"):
        try:
            keystore.unwrap_private_key(row)
        except keystore.KeystoreError:
            frames = ExceptionReporter(None, *sys.exc_info()).get_traceback_frames()
            raise
    return [frame for frame in frames if frame["filename"].endswith("hisp/keystore.py")]


def test_a_failed_unwrap_reports_no_data_key_in_its_traceback(alice: Address) -> None:
    row = Certificate.objects.get(address=alice).private_key
    sealed = bytearray(row.ciphertext)
    sealed[-1] ^= 1  # the GCM tag no longer matches: raised while the data key is in hand
    row.ciphertext = bytes(sealed)
    data_key = aes_key_unwrap(keystore.configured_kek().key, bytes(row.wrapped_data_key))
    frames = _frames_of_a_failed_unwrap(row)
    shown = {name: value for frame in frames for name, value in frame["vars"]}
    assert "data_key" in shown  # the frames that hold it are the ones reported
    assert all(value == CLEANSED for name, value in shown.items()), shown
    text = repr(frames)
    assert data_key.hex() not in text and repr(data_key)[2:20] not in text


def test_a_refused_import_reports_neither_its_password_nor_its_key_file(
    alice: Address, provider: object
) -> None:
    from hisp.services import pki

    row = Certificate.objects.get(address=alice)
    exported = pki.export_pkcs12(row, passphrase="the right passphrase", actor="staff")
    password = "a password that opens nothing"
    with pytest.raises(pki.PkiError, match="PKCS#12 file this password opens"):
        try:
            pki.import_certificate(exported, password=password)
        except pki.PkiError:
            frames = ExceptionReporter(None, *sys.exc_info()).get_traceback_frames()
            raise
    ours = [frame for frame in frames if frame["filename"].endswith("hisp/services/pki.py")]
    assert {frame["function"] for frame in ours} >= {"import_certificate", "_open_pkcs12"}
    assert all(value == CLEANSED for frame in ours for _name, value in frame["vars"])
    assert password not in repr([frame["vars"] for frame in frames
                                 if "/tests/" not in frame["filename"]])
