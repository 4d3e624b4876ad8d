"""A human sentence for every state and reason code a sender can see on the delivery timeline.

Codes come from the agent (``agent.errors.Code``) and from the mail flow (delivery states and
flow reasons). ``tests/webmail/test_reasons.py`` checks that every agent code has a sentence.
"""

from __future__ import annotations

from agent.errors import Code
from hisp.models import Delivery

AGENT_REASONS: dict[str, str] = {
    Code.NOT_ENCRYPTED: "The message was not encrypted, so it could not be accepted.",
    Code.NOT_SIGNED: "The message was not signed, so its sender could not be verified.",
    Code.MALFORMED: "The message was damaged or not in a format Direct mail understands.",
    Code.NO_DECRYPTION_KEY: "No key was found that could open the message.",
    Code.DECRYPTION_FAILED: "The message could not be decrypted.",
    Code.BAD_SIGNATURE: "The sender's signature did not match the message: it may have been altered.",
    Code.WEAK_ALGORITHM: "The message used an encryption or signing method that is too weak.",
    Code.WEAK_KEY: "A certificate's key is too short to be trusted.",
    Code.UNTRUSTED_SIGNER: "The sender's certificate is not from an organisation we trust.",
    Code.SIGNER_EXPIRED: "The sender's certificate has expired.",
    Code.SIGNER_NOT_YET_VALID: "The sender's certificate is not valid yet.",
    Code.SIGNER_REVOKED: "The sender's certificate has been revoked.",
    Code.REVOCATION_UNAVAILABLE: "Whether a certificate was revoked could not be checked; we will try again.",
    Code.SENDER_MISMATCH: "The signature belongs to a different address than the sender's.",
    Code.KEY_USAGE: "A certificate is not allowed to be used this way.",
    Code.HEADER_TAMPER: "The message's headers were changed in transit.",
    Code.NO_RECIPIENT_CERTIFICATE: "No certificate was found for this recipient, so the message cannot be encrypted to them.",
    Code.UNTRUSTED_RECIPIENT: "The recipient's certificate is not from an organisation we trust.",
    Code.NO_SENDER_KEY: "Your address has no signing key; ask your administrator.",
}

STATE_SENTENCES: dict[str, str] = {
    Delivery.State.QUEUED: "Waiting to be encrypted and sent.",
    Delivery.State.PENDING_CERTIFICATE: "Waiting for the recipient's certificate to be published.",
    Delivery.State.SENT: "Handed to the recipient's mail system.",
    Delivery.State.DEFERRED: "The recipient's mail system could not be reached; we will retry.",
    Delivery.State.FAILED: "Delivery failed.",
    Delivery.State.PROCESSED: "The recipient's mail system confirmed it received the message.",
    Delivery.State.DISPATCHED: "Delivered to the recipient's mailbox.",
    Delivery.State.DELIVERED: "In the mailbox.",
    Delivery.State.REJECTED: "Rejected.",
}

# Details the mail flow writes that are not agent codes (hisp.services.outbound, tracking,
# inbound), matched by their start. SMTP replies ("550 5.1.1 ...") fall back to the state's
# sentence; the page shows the reply itself beside it.
FLOW_REASONS: tuple[tuple[str, str], ...] = (
    ("no processed mdn in time", "The recipient's mail system never confirmed receipt in time."),
    ("no dispatched mdn in time",
     "The recipient's mail system never confirmed delivery to the mailbox in time."),
    ("failed mdn", "The recipient's mail system reported that it could not deliver the message."),
    ("dsn ", "A delivery failure notice came back for this recipient."),
    ("certificate found", "The recipient's certificate was found; sending resumed."),
    ("local", "Delivered within this HISP."),
    ("delivered to this hisp", "Delivered within this HISP."),
    ("mailbox-disabled", "The recipient's mailbox is disabled."),
)


def sentence(state: str, detail: str = "") -> str:
    """The sentence for a timeline step: the reason's, else the state's."""
    code = detail.split(":", 1)[0].strip() if detail else ""
    if code in AGENT_REASONS:
        return AGENT_REASONS[code]
    lowered = detail.strip().lower()
    for start, text in FLOW_REASONS:
        if lowered.startswith(start):
            return text
    return STATE_SENTENCES.get(state, state)
