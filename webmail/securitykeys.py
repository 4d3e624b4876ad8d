"""WebAuthn security keys and passkeys as a second factor, on py_webauthn (Duo Labs).

The ceremonies only: options for the browser, and verification of what it sends back. The
relying party is the webmail's public address, ``HISP_WEB_URL``: its origin (scheme, host and any
non-default port) is the origin a browser reports, its host name the RP ID (W3C WebAuthn L2
§5.4.2: an RP ID is a domain, so the webmail must be reached by name, never by IP address).

Each challenge is single-use and kept in the signed-in user's session for CHALLENGE_LIFETIME.
A refusal is a ``Refused`` with a closed ``Reason`` whose text is shown to the user as is.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.sessions.backends.base import SessionBase
from django.utils.crypto import salted_hmac
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    parse_attestation_object,
    parse_authentication_credential_json,
    parse_authenticator_data,
    parse_client_data_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.options_to_json_dict import options_to_json_dict
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticationCredential,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    RegistrationCredential,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from webmail.models import WebAuthnDevice

CHALLENGE_LIFETIME = 300  # seconds; browsers give the user 60 (the options' timeout)
TIMEOUT_MS = 60_000
_REGISTRATION = "webmail.webauthn.registration"
_AUTHENTICATION = "webmail.webauthn.authentication"
_DEFAULT_PORTS = {"http": 80, "https": 443}
# The password is the first factor: asking the key for a PIN or fingerprint as well would only
# make sign-in slower, so user verification is discouraged (the key must still be touched).
_USER_VERIFICATION = UserVerificationRequirement.DISCOURAGED


class Reason(StrEnum):
    EXPIRED = "expired"
    MALFORMED = "malformed"
    WRONG_ORIGIN = "wrong-origin"
    WRONG_RP_ID = "wrong-rp-id"
    UNKNOWN_KEY = "unknown-key"
    ALREADY_REGISTERED = "already-registered"
    SIGN_COUNT = "sign-count"
    INVALID = "invalid"


_MESSAGES = {
    Reason.EXPIRED: "The security key request expired. Try again.",
    Reason.MALFORMED: "The browser's answer from the security key could not be read. Try again.",
    Reason.WRONG_ORIGIN: (
        "The security key was used from another web address ({got}). "
        "Sign in at {expected} and try again."
    ),
    Reason.WRONG_RP_ID: (
        "The security key answered for another site, not {expected}. "
        "Sign in at this site's own address and try again."
    ),
    Reason.UNKNOWN_KEY: "This security key is not registered to your account.",
    Reason.ALREADY_REGISTERED: "This security key is already registered.",
    Reason.SIGN_COUNT: (
        "This security key's use counter went backwards, a sign that the key may have been "
        "copied. It was refused: remove it and ask your administrator to look into it."
    ),
    Reason.INVALID: "The security key's answer did not verify. Try again.",
}


class Refused(Exception):
    def __init__(self, reason: Reason, **details: str) -> None:
        self.reason = reason
        super().__init__(_MESSAGES[reason].format(**details))


@dataclass(frozen=True)
class RelyingParty:
    id: str
    origin: str
    name: str = "Direct mail"


@dataclass(frozen=True)
class NewKey:
    """A verified registration, ready to store."""

    credential_id: str  # base64url, as browsers and the allow list write it
    public_key: bytes  # COSE_Key
    sign_count: int
    transports: list[str]


def relying_party() -> RelyingParty:
    parts = urlsplit(settings.HISP_WEB_URL)
    host = (parts.hostname or "").lower()
    origin = f"{parts.scheme}://{host}"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        origin += f":{parts.port}"  # a browser's origin names the port only when not default
    return RelyingParty(id=host, origin=origin)


def _user_handle(user: AbstractBaseUser) -> bytes:
    # WebAuthn asks for an opaque handle without personal data (§14.6.1); with an allow list it
    # is never used to find the user, so a keyed hash of the primary key does.
    return salted_hmac("webmail.webauthn.user-handle", str(user.pk), algorithm="sha256").digest()


def _descriptor(device: WebAuthnDevice) -> PublicKeyCredentialDescriptor:
    transports = []
    for name in device.transports:
        try:
            transports.append(AuthenticatorTransport(name))
        except ValueError:
            continue  # a transport newer than the library: the browser finds the key without it
    return PublicKeyCredentialDescriptor(id=base64url_to_bytes(device.credential_id),
                                         transports=transports or None)


def _remember(session: SessionBase, key: str, challenge: bytes) -> None:
    session[key] = {"challenge": bytes_to_base64url(challenge), "at": time.time()}


def _take(session: SessionBase, key: str) -> bytes:
    """The pending challenge, which a verification uses up whatever its outcome."""
    pending = session.pop(key, None)
    if not isinstance(pending, dict) or time.time() - pending.get("at", 0) > CHALLENGE_LIFETIME:
        raise Refused(Reason.EXPIRED)
    return base64url_to_bytes(pending["challenge"])


# --- Registration ------------------------------------------------------------------------------
def registration_options(
    *, session: SessionBase, user: AbstractBaseUser, existing: list[WebAuthnDevice]
) -> dict[str, Any]:
    """``navigator.credentials.create()`` options as JSON-ready data (bytes in base64url)."""
    party = relying_party()
    options = generate_registration_options(
        rp_id=party.id,
        rp_name=party.name,
        user_id=_user_handle(user),
        user_name=user.get_username(),
        timeout=TIMEOUT_MS,
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.DISCOURAGED,
            user_verification=_USER_VERIFICATION,
        ),
        # The browser refuses a key already on this account before the user touches it.
        exclude_credentials=[_descriptor(device) for device in existing],
    )
    _remember(session, _REGISTRATION, options.challenge)
    return options_to_json_dict(options)


def verify_registration(
    *, session: SessionBase, credential: str, existing: list[WebAuthnDevice]
) -> NewKey:
    challenge = _take(session, _REGISTRATION)
    party = relying_party()
    try:
        parsed: RegistrationCredential = parse_registration_credential_json(credential)
        client_data = parse_client_data_json(parsed.response.client_data_json)
        auth_data = parse_attestation_object(parsed.response.attestation_object).auth_data
    except (WebAuthnException, ValueError, TypeError, KeyError):
        raise Refused(Reason.MALFORMED)
    _check_party(party, client_data.origin, auth_data.rp_id_hash)
    try:
        verified = verify_registration_response(
            credential=parsed, expected_challenge=challenge, expected_rp_id=party.id,
            expected_origin=party.origin, require_user_verification=False,
        )
    except (WebAuthnException, ValueError):
        raise Refused(Reason.INVALID)
    credential_id = bytes_to_base64url(verified.credential_id)
    if any(device.credential_id == credential_id for device in existing):
        raise Refused(Reason.ALREADY_REGISTERED)
    return NewKey(
        credential_id=credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        transports=[t.value for t in parsed.response.transports or []],
    )


# --- Authentication ----------------------------------------------------------------------------
def authentication_options(
    *, session: SessionBase, devices: list[WebAuthnDevice]
) -> dict[str, Any]:
    """``navigator.credentials.get()`` options for this user's own keys only."""
    options = generate_authentication_options(
        rp_id=relying_party().id,
        timeout=TIMEOUT_MS,
        allow_credentials=[_descriptor(device) for device in devices],
        user_verification=_USER_VERIFICATION,
    )
    _remember(session, _AUTHENTICATION, options.challenge)
    return options_to_json_dict(options)


def verify_authentication(
    *, session: SessionBase, credential: str, devices: list[WebAuthnDevice]
) -> tuple[WebAuthnDevice, int]:
    """The device that signed, and its new signature counter (to store)."""
    challenge = _take(session, _AUTHENTICATION)
    party = relying_party()
    try:
        parsed: AuthenticationCredential = parse_authentication_credential_json(credential)
        client_data = parse_client_data_json(parsed.response.client_data_json)
        auth_data = parse_authenticator_data(parsed.response.authenticator_data)
    except (WebAuthnException, ValueError, TypeError, KeyError):
        raise Refused(Reason.MALFORMED)
    _check_party(party, client_data.origin, auth_data.rp_id_hash)
    device = next((d for d in devices if d.credential_id == parsed.id), None)
    if device is None:
        raise Refused(Reason.UNKNOWN_KEY)
    try:
        # The counter is checked below, after the signature: the library compares it before
        # verifying the signature, and a forged answer must not be reported as a cloned key.
        verified = verify_authentication_response(
            credential=parsed, expected_challenge=challenge, expected_rp_id=party.id,
            expected_origin=party.origin, credential_public_key=bytes(device.public_key),
            credential_current_sign_count=0, require_user_verification=False,
        )
    except (WebAuthnException, ValueError):
        raise Refused(Reason.INVALID)
    if _counter_went_back(stored=device.sign_count, reported=verified.new_sign_count):
        raise Refused(Reason.SIGN_COUNT)
    return device, verified.new_sign_count


def _counter_went_back(*, stored: int, reported: int) -> bool:
    # WebAuthn L2 §6.1.1: a counter that does not grow means two copies of the key exist.
    # Keys without a counter report 0 every time; that is allowed while we have never seen more.
    return (stored > 0 or reported > 0) and reported <= stored


def _check_party(party: RelyingParty, origin: str, rp_id_hash: bytes) -> None:
    """The two checks a phishing site fails, each with its own message (the library would
    refuse both too, with one generic error)."""
    if origin != party.origin:
        raise Refused(Reason.WRONG_ORIGIN, got=str(origin)[:200], expected=party.origin)
    if rp_id_hash != hashlib.sha256(party.id.encode()).digest():
        raise Refused(Reason.WRONG_RP_ID, expected=party.id)
