"""Before sending: does each recipient have a trusted certificate, and through which anchor?

The same selection the outbound agent makes (``agent.trust.select_recipient_certificates``),
against the same environment the mail flow builds, so what the page promises is what happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import NameOID

from agent.errors import AgentError
from agent.trust import select_recipient_certificates
from hisp.models import Address
from webmail.reasons import AGENT_REASONS


@dataclass(frozen=True)
class RecipientCheck:
    address: str
    ok: bool
    anchor: str = ""
    code: str = ""
    sentence: str = ""


def _name(certificate: x509.Certificate) -> str:
    for oid in (NameOID.ORGANIZATION_NAME, NameOID.COMMON_NAME):
        values = certificate.subject.get_attributes_for_oid(oid)
        if values:
            return str(values[0].value)
    return certificate.subject.rfc4514_string()


def check_recipients(recipients: list[str], *, sender: Address, at: datetime) -> list[RecipientCheck]:
    if not recipients:
        return []
    from hisp.agent_env import build_environment

    env = build_environment()
    checks = []
    for recipient in recipients:
        try:
            _certificates, anchor = select_recipient_certificates(
                recipient, sender_domain=sender.domain.name, env=env, at=at
            )
        except AgentError as exc:
            checks.append(RecipientCheck(
                address=recipient, ok=False, code=str(exc.code),
                sentence=AGENT_REASONS.get(exc.code, "No usable certificate was found."),
            ))
            continue
        checks.append(RecipientCheck(address=recipient, ok=True, anchor=_name(anchor)))
    return checks
