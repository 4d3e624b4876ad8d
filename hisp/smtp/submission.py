"""The submission (edge) port: desktop mail clients of hosted users (RFC 6409).

STARTTLS comes first (``530`` otherwise, RFC 3207 section 4), then AUTH PLAIN or LOGIN
(RFC 4616, RFC 4954) with the webmail credentials or an app password; failures answer ``535`` and
are rate-limited, and credentials that cannot be checked (the database or the cache away) answer
``454 4.7.0`` (RFC 4954 section 6) with the session kept. The envelope sender must be an
address the user may send from (``550 5.7.1``; ``451 4.3.0`` with the session kept when that
cannot be checked). Accepted plain messages enter the outbound
pipeline, where the HISP signs and encrypts them (the full-service model).

A message that would exceed HISP_MAX_MESSAGE_BYTES once protected is refused with ``552 5.3.4``
(RFC 3463: too big for the system), and EHLO advertises as SIZE (RFC 1870) the largest plain
message that fits, not the listener's own limit on what it reads.
"""

from __future__ import annotations

import base64
import binascii
import logging
from datetime import UTC, datetime

from aiosmtpd.smtp import SMTP, Envelope, LoginPassword, Session

from hisp.mailtext import printable
from hisp.smtp import trace
from hisp.smtp.backbone import TEMPORARY_FAILURE, peer_label
from hisp.smtp.protocol import (
    AUTH_UNDECODABLE,
    BARE_LINE_ENDING,
    MAX_PATH,
    PATH_TOO_LONG,
    TOO_MANY_RECIPIENTS,
    bare_line_ending,
    max_recipients,
)
from hisp.smtp.threads import in_thread

log = logging.getLogger(__name__)

AUTH_OK = "235 2.7.0 Authentication successful"
AUTH_INVALID = "535 5.7.8 Authentication credentials invalid"
AUTH_NOT_AUTHORIZED = "535 5.7.8 Authentication credentials invalid: may not act as another user"
AUTH_THROTTLED = "454 4.7.0 Too many failed authentication attempts; try again later"
# RFC 4954 section 6: the credentials could not be checked (the database or the cache away).
AUTH_TEMPORARY = "454 4.7.0 Temporary authentication failure; try again later"
NOT_YOURS = "550 5.7.1 You may not send from this address"


def _reply_text(error: Exception) -> str:
    """One line of ASCII for an SMTP reply. The text may quote what the client sent (a
    Message-ID, an address): aiosmtpd writes replies as ASCII, so anything else ended the
    session with 421 (which the client retries), and a line end would forge a reply line."""
    text = printable(" ".join(str(error).split()))
    return text.encode("ascii", "replace").decode("ascii")


async def _challenge(server: SMTP, prompt: str) -> bytes | None:
    """The client's answer to ``prompt``, or None when the listener has already replied (the
    client cancelled with ``*``, or sent no base64): a second reply would answer its next
    command."""
    reply = await server.challenge_auth(prompt)
    return reply if isinstance(reply, bytes) else None


async def _first_response(server: SMTP, args: list[str], prompt: str) -> bytes | str | None:
    """The initial response given with AUTH, else the answer to ``prompt``; a str is the reply
    to send instead, None means one was sent (see :func:`_challenge`)."""
    if len(args) < 2:
        return await _challenge(server, prompt)
    if args[1] == "=":  # RFC 4954 section 4: an empty initial response is sent as "="
        return b""
    try:
        return base64.b64decode(args[1].encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return AUTH_UNDECODABLE


def _allowance() -> int:
    """The largest plain message to one recipient that fits once protected."""
    from hisp.services.compose import CERTIFICATES_PER_RECIPIENT, largest_plaintext

    # Less our Received stamp, which is signed and encrypted with the message.
    return max(largest_plaintext(certificates=CERTIFICATES_PER_RECIPIENT) - trace.MAX_BYTES, 0)


def _too_big(allowance: int) -> str:
    from django.conf import settings

    from hisp.services.compose import size_text

    return (
        f"552 5.3.4 Message too big: signed and encrypted it would exceed the "
        f"{size_text(settings.HISP_MAX_MESSAGE_BYTES)} limit; messages up to about "
        f"{size_text(allowance)} fit"
    )


class SubmissionHandler:
    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        # aiosmtpd advertises data_size_limit (what the listener reads: HISP_MAX_MESSAGE_BYTES)
        # but protection grows a message by about 37%, so the honest SIZE is the plain message
        # that still fits. The listener keeps reading up to the limit, so a message a little
        # over the allowance gets the clear 552 5.3.4 from handle_DATA. With this hook
        # aiosmtpd leaves recording the client's name to it.
        session.host_name = hostname
        allowance = _allowance()
        if allowance < 1:  # "SIZE 0" would mean no limit at all (RFC 1870 section 4)
            return responses
        return [
            f"250-SIZE {allowance}" if line.startswith("250-SIZE ") else line for line in responses
        ]

    async def handle_AUTH(
        self, server: SMTP, session: Session, envelope: Envelope, args: list[str]
    ) -> str | None:
        mechanism = args[0].upper()
        if mechanism not in ("PLAIN", "LOGIN"):
            return "504 5.5.4 Unrecognized authentication type"
        first = await _first_response(server, args, "" if mechanism == "PLAIN" else "Username:")
        if not isinstance(first, bytes):
            return first
        if mechanism == "PLAIN":
            parts = first.split(b"\x00")
            if len(parts) != 3:
                return "501 5.5.2 Malformed PLAIN response (RFC 4616)"
            authzid, login, password = parts
            if authzid and authzid.strip().lower() != login.strip().lower():
                # RFC 4616 section 2: the server MUST check that the credentials may act as
                # the authzid. An account here acts only as itself, and accepting it as
                # another would leave the client believing it sends as someone it does not.
                # Refused before the password is checked, so it counts as no guess.
                return AUTH_NOT_AUTHORIZED
        else:
            secret = await _challenge(server, "Password:")
            if secret is None:
                return None
            login, password = first, secret
        try:
            login_text = login.decode("utf-8")
            password_text = password.decode("utf-8")
        except UnicodeDecodeError:
            return AUTH_INVALID
        from hisp.smtp import credentials

        client = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        try:
            outcome = await in_thread(credentials.check, login_text, password_text, client=client)
        except Exception:
            # Our failure, not the client's: 454 is the reply a mail client retries (RFC 4954
            # section 6), where the session error's 421 dropped the connection and 535 would
            # tell the user the password is wrong. The trace carries no credential: they are
            # compared in Python, never put in a query or an error message.
            log.exception("submission AUTH from %s could not be checked", client)
            return AUTH_TEMPORARY
        if outcome.throttled:
            log.warning("submission AUTH throttled for %s", client)
            return AUTH_THROTTLED
        if outcome.user is None:
            log.info("submission AUTH failed from %s", client)
            return AUTH_INVALID
        session.authenticated = True
        # Never keep the password around. (aiosmtpd annotates auth_data as None.)
        session.auth_data = LoginPassword(login, b"")  # type: ignore[assignment]
        session.hisp_user = outcome.user  # type: ignore[attr-defined]
        # Who signed in from where, for the operator's audit (the account by its id, as the
        # mail flow logs messages; never the password or the login as typed).
        log.info("submission AUTH succeeded for user %s from %s", outcome.user.pk, client)
        return AUTH_OK

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        from hisp.smtp import credentials

        if len(address) > MAX_PATH:
            return PATH_TOO_LONG
        user = getattr(session, "hisp_user", None)
        if user is None:
            return NOT_YOURS
        try:
            allowed = await in_thread(credentials.may_send_from, user, address)
        except Exception:
            # Our failure (the database away or hanging): 451 is retried and keeps the session,
            # as the backbone answers a failed RCPT lookup, where the session error's 421
            # closed it. The query and its error hold no credential, so neither does the trace.
            log.exception("submission MAIL from %s could not check the sender", peer_label(session))
            return TEMPORARY_FAILURE
        if not allowed:
            return NOT_YOURS
        declared = next((o[5:] for o in options if o.upper().startswith("SIZE=")), "")
        if declared.isdigit() and int(declared) > (allowance := _allowance()):
            # RFC 1870 section 6.1: refused before the client sends the data.
            return _too_big(allowance)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if len(address) > MAX_PATH:
            return PATH_TOO_LONG
        if len(envelope.rcpt_tos) >= max_recipients(server):
            return TOO_MANY_RECIPIENTS
        if "@" not in address:
            return "553 5.1.3 A recipient must be a full Direct address"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        from hisp.services.compose import (
            MessageTooLarge,
            SendingLimited,
            SubmissionError,
            submit,
        )

        raw = envelope.original_content or b""
        if bare_line_ending(raw):
            return BARE_LINE_ENDING
        received = trace.stamp_for(
            session,
            by=server.hostname,
            authenticated=session.authenticated,
            recipients=envelope.rcpt_tos,
            at=datetime.now(UTC),
        )
        try:
            message = await in_thread(
                submit,
                address=envelope.mail_from or "",
                raw=raw,
                actor=getattr(session, "hisp_user", None),
                peer=peer_label(session),
                recipients=list(envelope.rcpt_tos),
                client=session.peer[0] if isinstance(session.peer, tuple) else None,
                trace=received,
            )
        except MessageTooLarge as exc:
            return f"552 5.3.4 {_reply_text(exc)}"
        except SendingLimited as exc:
            # Temporary (RFC 3463 X.7.1, delivery not authorized for now): the client keeps the
            # message in its outbox and tries again, and it leaves once the hour allows it.
            return f"451 4.7.1 {_reply_text(exc)}"
        except SubmissionError as exc:
            return f"550 5.7.1 {_reply_text(exc)}"
        except Exception:
            log.exception("storing a submitted message failed")
            return TEMPORARY_FAILURE
        log.info("submitted message %s from %s", message.pk, peer_label(session))
        return f"250 2.0.0 OK queued as {message.pk}"

    async def handle_exception(self, error: Exception) -> str:
        log.exception("SMTP session error", exc_info=error)
        return "421 4.3.0 Local error; closing connection"
