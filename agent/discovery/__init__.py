"""Certificate discovery for remote Direct addresses: DNS CERT (RFC 4398) and LDAP via SRV.

``DiscoveryResolver`` implements ``agent.types.CertificateResolver``; ``DiscoveryCache`` keeps
its results in any store with get/set/delete and a TTL (Redis on the Django side).
"""

from __future__ import annotations

from agent.discovery.cache import Cache, CachePolicy, DiscoveryCache, MemoryCache
from agent.discovery.dnscert import DnsCertLookup
from agent.discovery.dnsclient import DnsClient, Nameserver, parse_nameservers
from agent.discovery.ldapcert import LdapCertLookup
from agent.discovery.resolver import DiscoveryResolver

__all__ = [
    "Cache",
    "CachePolicy",
    "DiscoveryCache",
    "DiscoveryResolver",
    "DnsCertLookup",
    "DnsClient",
    "LdapCertLookup",
    "MemoryCache",
    "Nameserver",
    "parse_nameservers",
]
