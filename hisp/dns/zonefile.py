"""Our records for one hosted domain as zone-file text (RFC 1035 5), for operators who serve
the domain from their own DNS: the same records ``rundns`` answers."""

from __future__ import annotations

import dns.rdatatype
from django.utils import timezone

from hisp.dns.records import PublicationError, build_snapshot
from hisp.models import Domain
from hisp.services.identity import IdentityError, normalise_domain


def hosted_domain(name: str) -> str:
    """``name`` normalised, if we host it; ``PublicationError`` otherwise."""
    try:
        value = normalise_domain(name)
    except IdentityError as exc:
        raise PublicationError(str(exc)) from None
    if not Domain.objects.filter(name=value).exists():
        raise PublicationError(f"domain {value} is not hosted here")
    return value


def zone_text(domain: str, *, full: bool = False) -> str:
    """A zone-file fragment: one record per line, absolute owner names, CERT in presentation
    format (RFC 4398 2.2). Without ``full`` the SOA and NS records are left out: they belong to
    whoever serves the zone. With it, a complete zone file (``$ORIGIN``, SOA, NS)."""
    value = hosted_domain(domain)
    now = timezone.now()
    snapshot = build_snapshot(domains=[value], at=now, serial=int(now.timestamp()))
    zone = next(iter(snapshot.zones.values()))
    lines = [
        f"; Direct certificates and mail records for {value}, generated {now:%Y-%m-%dT%H:%M:%SZ}",
        "; (manage.py dnszone). Re-run after every issue, renewal or revocation.",
    ]
    if full:
        lines.append(f"$ORIGIN {zone.origin}")
    for rrset in zone.ordered():
        if not full and rrset.name == zone.origin and rrset.rdtype in (
            dns.rdatatype.SOA,
            dns.rdatatype.NS,
        ):
            continue
        # One line per record: absolute names, so the fragment fits under any $ORIGIN.
        lines.extend(rrset.to_text(origin=None, relativize=False).splitlines())
    return "\n".join(lines) + "\n"
