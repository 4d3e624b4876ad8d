"""One family of agent errors, each with a stable ``code`` and a ``permanent`` flag.

Callers (tasks, the UI, the CLI, the audit log) branch on ``code`` and ``permanent``, never on the
class. ``detail`` is for staff and logs: it names the step that failed but never carries key
material or message content. What goes back to a remote sender is only ever the opaque
``public_text`` (Applicability Statement: do not tell an attacker whether padding, signature or
trust failed).
"""

from __future__ import annotations

from enum import StrEnum


class Code(StrEnum):
    NOT_ENCRYPTED = "not-encrypted"
    NOT_SIGNED = "not-signed"
    MALFORMED = "malformed"
    NO_DECRYPTION_KEY = "no-decryption-key"
    DECRYPTION_FAILED = "decryption-failed"
    BAD_SIGNATURE = "bad-signature"
    WEAK_ALGORITHM = "weak-algorithm"
    WEAK_KEY = "weak-key"
    UNTRUSTED_SIGNER = "untrusted-signer"
    SIGNER_EXPIRED = "signer-expired"
    SIGNER_NOT_YET_VALID = "signer-not-yet-valid"
    SIGNER_REVOKED = "signer-revoked"
    REVOCATION_UNAVAILABLE = "revocation-unavailable"
    SENDER_MISMATCH = "sender-mismatch"
    KEY_USAGE = "key-usage"
    HEADER_TAMPER = "header-tamper"
    NO_RECIPIENT_CERTIFICATE = "no-recipient-certificate"
    UNTRUSTED_RECIPIENT = "untrusted-recipient"
    NO_SENDER_KEY = "no-sender-key"


# Failures that retrying cannot fix. Revocation sources being unreachable and discovery
# time-outs are the transient ones.
_TRANSIENT = frozenset({Code.REVOCATION_UNAVAILABLE})

PUBLIC_TEXT = "The message could not be accepted: security and trust processing failed."


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""

    def __init__(self, code: Code, detail: str = "", *, permanent: bool | None = None) -> None:
        self.code = Code(code)
        self.detail = detail
        self.permanent = (self.code not in _TRANSIENT) if permanent is None else permanent
        super().__init__(f"{self.code}: {detail}" if detail else str(self.code))

    @property
    def public_text(self) -> str:
        return PUBLIC_TEXT

    def __reduce__(self) -> tuple[object, ...]:  # picklable across Celery/process boundaries
        return (_rebuild, (str(self.code), self.detail, self.permanent))


def _rebuild(code: str, detail: str, permanent: bool) -> AgentError:
    return AgentError(Code(code), detail, permanent=permanent)
