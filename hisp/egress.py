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
    """Deliver ``wire`` to one recipient. Tries each hop in order while they fail temporarily;
    a 5xx from any hop is final."""
    domain = recipient.rpartition("@")[2]
    try:
        destinations = hops(domain)
    except NoSuchDomain:
        return Outcome(Result.PERMANENT, f"no mail servers for {domain}", "5.1.2")
    except dns.exception.DNSException as exc:
        return Outcome(Result.TEMPORARY, f"MX lookup for {domain} failed: {exc}", "4.4.3")
    last = Outcome(Result.TEMPORARY, "no destination", "4.4.1")
    for hop in destinations:
        last = _attempt(hop, wire=wire, mail_from=mail_from, recipient=recipient, timeout=timeout)
        if last.result is not Result.TEMPORARY:
            return last
    return last


def _client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # opportunistic TLS (see the module docstring)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _attempt(hop: Hop, *, wire: bytes, mail_from: str, recipient: str, timeout: float) -> Outcome:
    where = f"{hop.host}:{hop.port}"
    try:
        with smtplib.SMTP(
            hop.host, hop.port, local_hostname=settings.HISP_HOSTNAME, timeout=timeout
        ) as client:
            client.ehlo()
            if client.has_extn("starttls"):
                code, reply = client.starttls(context=_client_context())
                if code != 220:
                    return Outcome.from_reply(code, reply)
                client.ehlo()
            elif hop.require_tls:
                return Outcome(
                    Result.TEMPORARY, f"{where} does not offer STARTTLS (required)", "4.7.10"
                )
            code, reply = client.mail(mail_from)
            if code != 250:
                return Outcome.from_reply(code, reply)
            code, reply = client.rcpt(recipient)
            if code not in (250, 251):
                return Outcome.from_reply(code, reply)
            code, reply = client.data(wire)
            return Outcome.from_reply(code, reply)
    except smtplib.SMTPResponseException as exc:
        return Outcome.from_reply(exc.smtp_code, exc.smtp_error)
    except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
        log.info("delivery attempt to %s failed: %s", where, type(exc).__name__)
        return Outcome(Result.TEMPORARY, f"{where}: {type(exc).__name__}: {exc}"[:400], "4.4.1")
