"""Handing a protected message to the destination's SMTP server.

Destination: the ``Route`` table first, else MX records (RFC 5321 section 5.1) looked up through
``HISP_DNS_SERVERS``, falling back to the domain's own address when it has no MX. STARTTLS is
used whenever offered (RFC 3207) and required when the route says so. The certificate is not
verified: Direct's confidentiality and authenticity come from S/MIME, and many HISPs present
self-signed transport certificates.
"""

from __future__ import annotations

import enum
import logging
import re
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

import dns.exception
import dns.resolver
from django.conf import settings

from hisp.models import Route

log = logging.getLogger(__name__)

# RFC 5321 section 4.5.3.1.8: a server must accept at least 100 recipients per transaction.
MAX_RECIPIENTS = 100
TIMEOUT = 60.0  # seconds per SMTP command; RFC 5321 4.5.3.2 allows longer, workers should not wait
_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\b")


class Result(enum.Enum):
    SENT = "sent"
    TEMPORARY = "temporary"  # 4xx, connection problems: retry later
    PERMANENT = "permanent"  # 5xx: fail now


@dataclass(frozen=True)
class Outcome:
    result: Result
    detail: str  # the server's reply or what went wrong
    status: str  # RFC 3463 status for a DSN

    @classmethod
    def from_reply(cls, code: int, text: bytes | str) -> Outcome:
        message = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        message = " ".join(message.split())[:400]
        match = _ENHANCED.match(message)
        if 200 <= code < 300:
            return cls(Result.SENT, f"{code} {message}", "2.0.0")
        if code >= 500:
            return cls(Result.PERMANENT, f"{code} {message}", match.group(1) if match else "5.0.0")
        return cls(Result.TEMPORARY, f"{code} {message}", match.group(1) if match else "4.0.0")


@dataclass(frozen=True)
class Hop:
    host: str
    port: int
    require_tls: bool = False


class NoSuchDomain(Exception):
    pass


def _resolver() -> dns.resolver.Resolver:
    servers: Sequence[str] = settings.HISP_DNS_SERVERS
    if not servers:
        return dns.resolver.Resolver()
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = []
    for entry in servers:
        host, port = entry, 53
        if entry.count(":") == 1 or entry.startswith("["):
            host, _, port_text = entry.rpartition(":")
            host, port = host.strip("[]"), int(port_text)
        resolver.nameservers.append(host)
        resolver.nameserver_ports[host] = port
    resolver.lifetime = 10.0
    return resolver


def hops(domain: str) -> list[Hop]:
    """Where to deliver mail for ``domain``, most preferred first."""
    domain = domain.lower().rstrip(".")
    route = Route.objects.filter(domain=domain).first()
    if route is not None:
        return [Hop(route.host, route.port, route.require_tls)]
    resolver = _resolver()
    try:
        answer = resolver.resolve(domain, "MX")
    except dns.resolver.NXDOMAIN:
        raise NoSuchDomain(domain) from None
    except dns.resolver.NoAnswer:
        return [Hop(domain, 25)]  # RFC 5321 5.1: the implicit MX
    records = sorted(answer, key=lambda r: (r.preference, str(r.exchange)))
    found = [Hop(str(r.exchange).rstrip("."), 25) for r in records]
    if len(found) == 1 and found[0].host in ("", "."):
        raise NoSuchDomain(domain)  # RFC 7505 null MX: the domain accepts no mail
    return found


def send(*, wire: bytes, mail_from: str, recipient: str, timeout: float = TIMEOUT) -> Outcome:
    """Deliver ``wire`` to one recipient (see :func:`send_batch`)."""
    return send_batch(wire=wire, mail_from=mail_from, recipients=[recipient], timeout=timeout)[
        recipient
    ]


def send_batch(
    *, wire: bytes, mail_from: str, recipients: Sequence[str], timeout: float = TIMEOUT
) -> dict[str, Outcome]:
    """Deliver ``wire`` to several recipients; one outcome per recipient.

    Recipients whose domains resolve to the same destination share one SMTP transaction (one
    MAIL, a RCPT each, one DATA; RFC 5321 section 3.3). Each RCPT reply counts for its own
    recipient only: a 550 fails that one, a 4xx defers that one, and the others still get the
    message. ``recipients`` must all be able to receive the same bytes (one protection).
    """
    unique = list(dict.fromkeys(recipients))
    outcomes: dict[str, Outcome] = {}
    routes: dict[tuple[Hop, ...], list[str]] = {}
    by_domain: dict[str, list[str]] = {}
    for recipient in unique:
        by_domain.setdefault(recipient.rpartition("@")[2].lower().rstrip("."), []).append(recipient)
    for domain, group in by_domain.items():
        try:
            destinations = hops(domain)
        except NoSuchDomain:
            failed = Outcome(Result.PERMANENT, f"no mail servers for {domain}", "5.1.2")
            outcomes.update(dict.fromkeys(group, failed))
            continue
        except dns.exception.DNSException as exc:
            later = Outcome(Result.TEMPORARY, f"MX lookup for {domain} failed: {exc}", "4.4.3")
            outcomes.update(dict.fromkeys(group, later))
            continue
        routes.setdefault(tuple(destinations), []).extend(group)
    for route, group in routes.items():
        outcomes.update(
            send_via(route, wire=wire, mail_from=mail_from, recipients=group, timeout=timeout)
        )
    return {recipient: outcomes[recipient] for recipient in unique}


def send_via(
    destinations: Sequence[Hop],
    *,
    wire: bytes,
    mail_from: str,
    recipients: Sequence[str],
    timeout: float = TIMEOUT,
) -> dict[str, Outcome]:
    """Try each hop in order for the recipients that are still failing temporarily there; a
    5xx from any hop is final for its recipient (RFC 5321 section 5.1)."""
    outcomes = {r: Outcome(Result.TEMPORARY, "no destination", "4.4.1") for r in recipients}
    pending = list(recipients)
    for hop in destinations:
        outcomes.update(
            _attempt(hop, wire=wire, mail_from=mail_from, recipients=pending, timeout=timeout)
        )
        pending = [r for r in pending if outcomes[r].result is Result.TEMPORARY]
        if not pending:
            break
    return outcomes


def _client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # opportunistic TLS (see the module docstring)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _attempt(
    hop: Hop, *, wire: bytes, mail_from: str, recipients: Sequence[str], timeout: float
) -> dict[str, Outcome]:
    where = f"{hop.host}:{hop.port}"
    outcomes: dict[str, Outcome] = {}
    try:
        with smtplib.SMTP(
            hop.host, hop.port, local_hostname=settings.HISP_HOSTNAME, timeout=timeout
        ) as client:
            client.ehlo()
            if client.has_extn("starttls"):
                code, reply = client.starttls(context=_client_context())
                if code != 220:
                    return dict.fromkeys(recipients, Outcome.from_reply(code, reply))
                client.ehlo()
            elif hop.require_tls:
                refused = Outcome(
                    Result.TEMPORARY, f"{where} does not offer STARTTLS (required)", "4.7.10"
                )
                return dict.fromkeys(recipients, refused)
            pending = list(recipients)
            while pending:
                batch, rest = pending[:MAX_RECIPIENTS], pending[MAX_RECIPIENTS:]
                pending = _transaction(client, wire=wire, mail_from=mail_from,
                                       recipients=batch, outcomes=outcomes) + rest
    except smtplib.SMTPResponseException as exc:
        failed = Outcome.from_reply(exc.smtp_code, exc.smtp_error)
        outcomes.update({r: failed for r in recipients if r not in outcomes})
    except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
        log.info("delivery attempt to %s failed: %s", where, type(exc).__name__)
        lost = Outcome(Result.TEMPORARY, f"{where}: {type(exc).__name__}: {exc}"[:400], "4.4.1")
        outcomes.update({r: lost for r in recipients if r not in outcomes})
    return outcomes


def _transaction(
    client: smtplib.SMTP,
    *,
    wire: bytes,
    mail_from: str,
    recipients: Sequence[str],
    outcomes: dict[str, Outcome],
) -> list[str]:
    """One MAIL / RCPT... / DATA transaction. Records an outcome for every recipient it settles
    and returns those to carry into a new transaction: refused with ``452`` (too many
    recipients, RFC 5321 section 4.5.3.1.10) after others were accepted."""
    code, reply = client.mail(mail_from)
    if code != 250:
        outcomes.update(dict.fromkeys(recipients, Outcome.from_reply(code, reply)))
        client.rset()
        return []
    accepted: list[str] = []
    carried: list[str] = []
    for recipient in recipients:
        code, reply = client.rcpt(recipient)
        if code in (250, 251):
            accepted.append(recipient)
        elif code == 452 and accepted:
            carried.append(recipient)
        else:
            outcomes[recipient] = Outcome.from_reply(code, reply)
    if not accepted:
        client.rset()  # RFC 5321 section 3.3: no valid recipient, no DATA
        return []
    try:
        code, reply = client.data(wire)
    except smtplib.SMTPDataError as exc:  # DATA itself refused (not 354)
        outcomes.update(dict.fromkeys(accepted, Outcome.from_reply(exc.smtp_code, exc.smtp_error)))
        client.rset()
        return carried
    outcomes.update(dict.fromkeys(accepted, Outcome.from_reply(code, reply)))
    return carried
