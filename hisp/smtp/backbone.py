"""Backbone ingress: mail from other HISPs (RFC 5321, port 25 in production).

The handler never parses or decrypts anything: RCPT is a database lookup, DATA stores the bytes
exactly as received together with the envelope, and ``250`` is sent only after that commit.
Database work runs on a thread pool so the event loop keeps serving other sessions.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from aiosmtpd.smtp import SMTP, Envelope, Session

from hisp.smtp import trace
from hisp.smtp.protocol import (
    BARE_LINE_ENDING,
    MAX_PATH,
    PATH_TOO_LONG,
    TOO_MANY_RECIPIENTS,
    bare_line_ending,
    max_recipients,
)
from hisp.smtp.threads import in_thread

log = logging.getLogger(__name__)

TEMPORARY_FAILURE = "451 4.3.0 Temporary local problem; please try again later"
NULL_RECIPIENT = "501 5.1.3 The null path is not a recipient"

# aiosmtpd hands the null reverse-path on as the literal "<>" (its address parser returns the
# empty angle-addr as written), and keeps it in the envelope that way: an empty mail_from would
# make it answer every later RCPT with "503 need MAIL command".
NULL_PATH = "<>"


def reverse_path(mail_from: str | None) -> str:
    """The envelope sender as stored: ``""`` for the null reverse-path ``MAIL FROM:<>``.

    RFC 5321 section 4.5.5: DSNs (and, per RFC 3798 section 3, MDNs) are sent with the null
    reverse-path, and a server must accept it. Stored empty, everything downstream treats the
    message as auto-generated, so it is never answered (no MDN, DSN or courtesy notice).
    """
    if not mail_from or mail_from == NULL_PATH:
        return ""
    return mail_from


def peer_label(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "")


class BackboneHandler:
    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
        responses: list[str],
    ) -> list[str]:
        # Other HISPs have no accounts here: AUTH is not offered (the listener also disables
        # every mechanism, so an AUTH command gets 504), and it could never widen RCPT.
        session.host_name = hostname
        return [line for line in responses if not line[4:].upper().startswith("AUTH")]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if len(address) > MAX_PATH:
            return PATH_TOO_LONG
        envelope.mail_from = address  # "<>" for the null reverse-path, see reverse_path()
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        from hisp.services.mail import (
            Verdict,
            postmaster_address,
            recipient_verdict,
            remembered_verdict,
        )

        if len(address) > MAX_PATH:
            return PATH_TOO_LONG
        if address == NULL_PATH:
            return NULL_RECIPIENT
        if len(envelope.rcpt_tos) >= max_recipients(server):
            return TOO_MANY_RECIPIENTS
        try:
            if address.lower() == "postmaster":
                # RFC 5321 section 4.5.1: "RCPT TO:<Postmaster>" without a domain MUST work.
                address = await in_thread(postmaster_address) or address
            verdict = remembered_verdict(address) or await in_thread(recipient_verdict, address)
        except Exception:
            log.exception("recipient lookup failed")
            return TEMPORARY_FAILURE
        if verdict is Verdict.ACCEPT:
            # Stored as received, repeats included: inbound delivers once per mailbox.
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        return verdict.value

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        from hisp.services.mail import accept_incoming

        raw = envelope.original_content or b""
        if bare_line_ending(raw):
            return BARE_LINE_ENDING
        received = trace.stamp_for(
            session,
            by=server.hostname,
            authenticated=False,
            recipients=envelope.rcpt_tos,
            at=datetime.now(UTC),
        )
        try:
            message = await in_thread(
                accept_incoming,
                raw=raw,
                mail_from=reverse_path(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                peer=peer_label(session),
                trace=received,
            )
        except Exception:
            # Nothing was committed: a 4xx makes the sending HISP retry (RFC 5321 4.2.5).
            log.exception("storing an incoming message failed")
            return TEMPORARY_FAILURE
        log.info("accepted message %s from %s", message.pk, peer_label(session))
        return f"250 2.0.0 OK queued as {message.pk}"

    async def handle_exception(self, error: Exception) -> str:
        log.exception("SMTP session error", exc_info=error)
        return "421 4.3.0 Local error; closing connection"
