"""Turning a Direct address into the names discovery asks for."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import dns.exception
import dns.name


class AddressError(ValueError):
    """The address cannot be looked up (no ``@``, empty parts, a name DNS cannot hold)."""


@dataclass(frozen=True)
class Target:
    """One recipient, split into what each discovery level queries."""

    address: str  # local@domain, domain lower-cased
    domain: str
    address_name: dns.name.Name  # owner name of the address-bound CERT
    domain_name: dns.name.Name  # owner name of the domain-bound CERT
    # When the local part has dots, the mailbox encoding of RFC 1035 section 8 (as in an SOA
    # RNAME): the whole local part one label, ``john\.smith.example.org.``; None otherwise.
    # Publishers that follow it rather than the Direct reference implementation put the
    # address-bound CERT there.
    escaped_address_name: dns.name.Name | None
    address_owner: str  # the same names as text, for cache keys
    domain_owner: str


def canonical_domain(domain: str) -> str:
    """``domain`` as discovery names it everywhere (cache keys, flushes, LDAP filters): lower
    case, no final dot, internationalised labels in their ASCII ``xn--`` form (IDNA).

    One spelling per domain: ``bücher.example`` and ``xn--bcher-kva.example`` are the same DNS
    name, so they must share cache entries and a flush of either must drop both. The LDAP
    ``mail`` attribute is an IA5String (RFC 4524 2.16), so the ASCII form is also the only one a
    directory can hold.
    """
    try:
        # Case folded by dnspython's UTS 46 mapping (IDNA 2008, as identity stores hosted names
        # and browsers write them), not str.lower() first: that keeps a capital final sigma as
        # "ς" where UTS 46 maps it to "σ", another name. Then the ASCII that is left.
        name = dns.name.from_text(domain.strip().rstrip("."))
    except dns.exception.DNSException as exc:
        raise AddressError(f"domain does not fit in a DNS name: {exc}") from None
    return name.to_text(omit_final_dot=True).lower()


def target_for(address: str) -> Target:
    """Split ``address`` and build its DNS owner names (memoised: cached lookups are hot).

    The address-bound owner name is the address with its ``@`` replaced by a dot (Direct
    Applicability Statement 5.1 and the reference implementation), so a local part
    ``john.smith`` gives the two labels ``john`` and ``smith``. The mailbox encoding of RFC 1035
    section 8 keeps such a local part in one label instead (``john\\.smith``):
    ``escaped_address_name``, asked only when the first name has no CERT records.
    """
    return _target(address)


@lru_cache(maxsize=4096)
def _target(address: str) -> Target:
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        raise AddressError(f"not an address: {address!r}")
    domain = canonical_domain(domain)
    try:
        domain_name = dns.name.from_text(domain)
        local_labels = [label.encode("utf-8") for label in local.split(".")]
        if any(not label for label in local_labels):
            raise AddressError(f"local part has an empty label: {address!r}")
        # Built label by label so characters DNS zone syntax treats specially ('\', '"', ' ')
        # stay literal instead of being parsed as escapes.
        address_name = dns.name.Name([*local_labels, *domain_name.labels])
    except dns.exception.DNSException as exc:
        raise AddressError(f"address does not fit in a DNS name: {exc}") from None
    escaped_address_name: dns.name.Name | None = None
    if len(local_labels) > 1:
        try:
            escaped_address_name = dns.name.Name([local.encode("utf-8"), *domain_name.labels])
        except dns.exception.DNSException:
            pass  # a local part over 63 characters cannot be one label: the first form only
    if len(domain_name.labels) < 3:  # at least two labels plus the root: no bare "localhost"
        raise AddressError(f"domain is not a DNS name: {domain!r}")
    return Target(
        address=f"{local}@{domain}",
        domain=domain,
        address_name=address_name,
        domain_name=domain_name,
        escaped_address_name=escaped_address_name,
        address_owner=address_name.to_text(),
        domain_owner=domain_name.to_text(),
    )
