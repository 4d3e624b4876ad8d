"""The records we publish for every hosted domain, built from the database.

Per hosted domain (one zone each): SOA and NS (this HISP's host), MX (this HISP's host), A/AAAA
for ``HISP_HOSTNAME`` when it lies in the zone, ``_ldap._tcp`` SRV when ``HISP_LDAP_SERVER`` is
set, and RFC 4398 CERT records (PKIX, DER inline) for the current certificates: address-bound at
``local.domain`` (the ``@`` becomes a dot, Direct Applicability Statement 5.1; built by
``agent.discovery.names`` so publisher and resolver agree, and for a dotted local part also at
its one-label spelling), domain-bound at the apex.

"Current" means: issued or imported here with its key, usable for encryption (discovery serves
senders that encrypt to us), not revoked, not superseded by a renewal, inside its validity
period, for an active address of a hosted domain; and, when one of our CAs issued it, that CA
neither revoked it (by serial, as its CRL and OCSP responder say) nor itself revoked, expired
or not yet valid.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from django.conf import settings
from django.db.models import Count, Exists, F, Max, Min, OuterRef, Q, QuerySet, Sum
from django.utils import timezone
from dns.rdtypes.ANY.CERT import CERT

from agent.discovery.names import AddressError, target_for
from hisp.models import Address, Certificate, Domain

# RFC 1035 3.3.13 / RFC 1912 2.2 values; short record TTLs so issue, renewal and revocation
# reach resolvers within minutes rather than hours.
RECORD_TTL = 300
SOA_REFRESH = 3600
SOA_RETRY = 600
SOA_EXPIRE = 1_209_600
NEGATIVE_TTL = 300  # SOA MINIMUM: how long resolvers keep NXDOMAIN/NODATA (RFC 2308 4)
MX_PREFERENCE = 10
LDAP_PORT = 389
CERT_PKIX = 1  # RFC 4398 2.1: X.509 as in PKIX, DER in the certificate field

_ENCRYPTION = (Certificate.Usage.DUAL, Certificate.Usage.ENCRYPTION)
_WITH_KEY = (Certificate.Source.HOSTED, Certificate.Source.IMPORTED)


class PublicationError(ValueError):
    """The zone cannot be built as configured (e.g. a bad HISP_LDAP_SERVER)."""


@dataclass(frozen=True)
class Zone:
    """One hosted domain's records, by owner then type."""

    origin: dns.name.Name
    rrsets: dict[dns.name.Name, dict[dns.rdatatype.RdataType, dns.rrset.RRset]]
    # Every owner name and every name between an owner and the apex (empty non-terminals such
    # as _tcp.<domain>): these answer NODATA, everything else under the apex NXDOMAIN
    # (RFC 8020, RFC 4592 2.2.2).
    names: frozenset[dns.name.Name]

    @property
    def soa(self) -> dns.rrset.RRset:
        return self.rrsets[self.origin][dns.rdatatype.SOA]

    def at(self, name: dns.name.Name) -> list[dns.rrset.RRset]:
        return list(self.rrsets.get(name, {}).values())

    def ordered(self) -> list[dns.rrset.RRset]:
        """Apex first (SOA, NS, then by type), then the other owners in DNSSEC order."""
        first = {dns.rdatatype.SOA: 0, dns.rdatatype.NS: 1}
        return [
            rrset
            for owner in sorted(self.rrsets, key=lambda n: (n != self.origin, n))
            for rrset in sorted(
                self.rrsets[owner].values(), key=lambda r: (first.get(r.rdtype, 2), r.rdtype)
            )
        ]


@dataclass(frozen=True)
class Snapshot:
    """Every hosted zone at one moment."""

    zones: dict[dns.name.Name, Zone]
    version: tuple[object, ...] = ()
    # Earliest not_after among published certificates: the snapshot must be rebuilt by then.
    expires: datetime | None = None
    built: datetime = field(default_factory=timezone.now)

    def zone_for(self, name: dns.name.Name) -> Zone | None:
        """The hosted zone that holds ``name`` (the deepest apex at or above it)."""
        candidate = name
        while True:
            zone = self.zones.get(candidate)
            if zone is not None:
                return zone
            if candidate == dns.name.root or len(candidate.labels) <= 1:
                return None
            candidate = candidate.parent()


def version() -> tuple[object, ...]:
    """A cheap fingerprint of everything the zones depend on: any issue, renewal, revocation,
    deletion, new domain or address status change gives a different value."""
    certs = Certificate.objects.aggregate(
        count=Count("pk"),
        last=Max("pk"),
        revoked=Count("revoked_at"),
        superseded=Count("superseded_by"),
    )
    domains = Domain.objects.aggregate(count=Count("pk"), last=Max("pk"))
    addresses = Address.objects.aggregate(
        count=Count("pk"),
        last=Max("pk"),
        active=Count("pk", filter=Q(status=Address.Status.ACTIVE)),
        # Which addresses are active, not only how many: one suspended and another activated
        # between two checks leave the count as it was, and the suspended one's CERT must go.
        active_ids=Sum("pk", filter=Q(status=Address.Status.ACTIVE)),
        # The sum alone misses two suspended as two others are activated (2 and 6 for 3 and 5);
        # with the sum of squares as well, only contrived sets of three or more collide.
        active_squares=Sum(F("pk") * F("pk"), filter=Q(status=Address.Status.ACTIVE)),
    )
    return (*certs.values(), *domains.values(), *addresses.values())


def published_certificates(
    domains: Iterable[str], *, at: datetime | None = None
) -> QuerySet[Certificate]:
    """Current hosted encryption certificates bound to these domains or their active addresses."""
    now = at or timezone.now()
    names = list(domains)
    active = Address.objects.filter(domain__name__in=names, status=Address.Status.ACTIVE)
    # Our CA's record of what it revoked is by serial (hisp.ca.crl lists, hisp.ca.ocsp answers
    # every row it issued under that serial), not only this row's own revoked_at.
    revoked_by_issuer = Certificate.objects.filter(
        issued_by=OuterRef("issued_by"), serial=OuterRef("serial"), revoked_at__isnull=False
    )
    # RFC 5280 6.1.3 (a)(2) and 6.1.4: a certificate is valid only while every certificate on
    # its path is, so a revoked, expired or not yet valid issuer takes its certificates with it.
    # Partners would refuse them; publishing them only turns a sender's send into a failure.
    # Certificates imported from someone else's CA (no issued_by) have no record here.
    issuer_current = Q(issued_by__isnull=True) | Q(
        issued_by__revoked_at__isnull=True,
        issued_by__not_before__lte=now,
        issued_by__not_after__gt=now,
    )
    return Certificate.objects.filter(
        Q(binding=Certificate.Binding.DOMAIN, bound_name__in=names)
        | Q(binding=Certificate.Binding.ADDRESS, bound_name__in=active.values("address")),
        issuer_current,
        ~Exists(revoked_by_issuer),
        source__in=_WITH_KEY,
        private_key__isnull=False,
        usage__in=_ENCRYPTION,
        revoked_at__isnull=True,
        superseded_by__isnull=True,
        not_before__lte=now,
        not_after__gt=now,
    ).order_by("bound_name", "-not_before", "pk")


def owner_name(certificate: Certificate) -> dns.name.Name:
    """Where a certificate is published: ``local.domain`` or the domain itself."""
    return owner_names(certificate)[0]


def owner_names(certificate: Certificate) -> tuple[dns.name.Name, ...]:
    """Every name a certificate is published at: ``owner_name``, and for a local part with dots
    also its one-label spelling (``john\\.smith.domain``, the RFC 1035 section 8 mailbox
    encoding) that partners who follow it rather than the Direct reference implementation ask
    for."""
    if certificate.binding == Certificate.Binding.ADDRESS:
        target = target_for(certificate.bound_name)
        if target.escaped_address_name is None:
            return (target.address_name,)
        return (target.address_name, target.escaped_address_name)
    return (dns.name.from_text(certificate.bound_name),)


def build_snapshot(
    *, domains: Iterable[str] | None = None, at: datetime | None = None, serial: int = 1
) -> Snapshot:
    """Zones for ``domains`` (every hosted domain when None) from the database as it is now."""
    now = at or timezone.now()
    stamp = version()
    names = sorted(
        Domain.objects.values_list("name", flat=True)
        if domains is None
        else Domain.objects.filter(name__in=list(domains)).values_list("name", flat=True)
    )
    certs: dict[str, list[tuple[dns.name.Name, bytes]]] = defaultdict(list)
    published = published_certificates(names, at=now)
    # What is published goes when its CA expires too (published_certificates). Our CA never
    # issues past its own end (hisp.ca.authority), so this only matters for a record that says
    # otherwise; the snapshot must not outlive it either way.
    issuers = Certificate.objects.filter(pk__in=published.values("issued_by"))
    issuers_end = issuers.aggregate(end=Min("not_after"))["end"]
    ends: list[datetime] = [] if issuers_end is None else [issuers_end]
    for row in published:
        try:
            owners = owner_names(row)
        except (AddressError, dns.name.NameTooLong, dns.name.LabelTooLong):
            continue  # an address DNS cannot name is found through LDAP instead
        domain = row.bound_name.rsplit("@", 1)[-1]
        certs[domain].extend((owner, bytes(row.der)) for owner in owners)
        ends.append(row.not_after)
    expires = min(ends, default=None)
    zones = {}
    for name in names:
        zone = build_zone(name, certificates=certs.get(name, []), serial=serial)
        zones[zone.origin] = zone
    return Snapshot(zones=zones, version=stamp, expires=expires, built=now)


def build_zone(
    domain: str, *, certificates: Iterable[tuple[dns.name.Name, bytes]], serial: int = 1
) -> Zone:
    """One zone from settings and the (owner, DER) pairs to publish."""
    origin = dns.name.from_text(domain)
    host = _host_name()
    rrsets: dict[dns.name.Name, dict[dns.rdatatype.RdataType, dns.rrset.RRset]]
    rrsets = defaultdict(dict)

    def add(
        owner: dns.name.Name, rdtype: dns.rdatatype.RdataType, text: str | dns.rdata.Rdata
    ) -> None:
        rrset = rrsets[owner].get(rdtype)
        if rrset is None:
            rrset = rrsets[owner][rdtype] = dns.rrset.RRset(owner, dns.rdataclass.IN, rdtype)
        rdata = (
            text
            if isinstance(text, dns.rdata.Rdata)
            else dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)
        )
        rrset.add(rdata, RECORD_TTL)

    hostmaster = dns.name.Name((b"hostmaster", *origin.labels))
    add(
        origin,
        dns.rdatatype.SOA,
        f"{host} {hostmaster} {serial} {SOA_REFRESH} {SOA_RETRY} {SOA_EXPIRE} {NEGATIVE_TTL}",
    )
    add(origin, dns.rdatatype.NS, host.to_text())
    add(origin, dns.rdatatype.MX, f"{MX_PREFERENCE} {host}")
    if host.is_subdomain(origin):
        for setting, rdtype in (
            ("HISP_PUBLIC_IPV4", dns.rdatatype.A),
            ("HISP_PUBLIC_IPV6", dns.rdatatype.AAAA),
        ):
            value = getattr(settings, setting).strip()
            if not value:
                continue
            try:
                add(host, rdtype, value)
            except dns.exception.DNSException:
                raise PublicationError(f"{setting} is not an address: {value!r}") from None
    ldap = _ldap_server()
    if ldap is not None:
        target, port = ldap
        srv = dns.name.Name((b"_ldap", b"_tcp", *origin.labels))
        add(srv, dns.rdatatype.SRV, f"0 0 {port} {target}")
    for owner, der in certificates:
        add(owner, dns.rdatatype.CERT, cert_rdata(der))
    names: set[dns.name.Name] = set()
    for owner in rrsets:
        if not owner.is_subdomain(origin):
            continue
        while owner != origin:
            names.add(owner)
            owner = owner.parent()
        names.add(origin)
    return Zone(origin=origin, rrsets=dict(rrsets), names=frozenset(names))


def cert_rdata(der: bytes) -> dns.rdata.Rdata:
    """An RFC 4398 CERT record: type PKIX, key tag and algorithm 0 (2.1: not used for X.509)."""
    return CERT(  # type: ignore[no-untyped-call]
        dns.rdataclass.IN, dns.rdatatype.CERT, CERT_PKIX, 0, 0, der
    )


def _host_name() -> dns.name.Name:
    try:
        return dns.name.from_text(settings.HISP_HOSTNAME)
    except dns.exception.DNSException as exc:
        raise PublicationError(f"HISP_HOSTNAME is not a DNS name: {exc}") from None


def _ldap_server() -> tuple[dns.name.Name, int] | None:
    value = settings.HISP_LDAP_SERVER.strip()
    if not value:
        return None
    host, _, port = value.rpartition(":") if ":" in value else (value, "", str(LDAP_PORT))
    try:
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError(port)
        return dns.name.from_text(host), number
    except (ValueError, dns.exception.DNSException):
        raise PublicationError(f"HISP_LDAP_SERVER must be host[:port], not {value!r}") from None
