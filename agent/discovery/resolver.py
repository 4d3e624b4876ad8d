"""The discovery ``CertificateResolver``: DNS CERT, then LDAP, each level only when asked for."""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Sequence
from contextlib import closing

from agent.discovery.cache import DiscoveryCache
from agent.discovery.dnscert import DnsCertLookup
from agent.discovery.dnsclient import DnsClient, parse_nameservers
from agent.discovery.found import Found, Outcome
from agent.discovery.ldapcert import LdapCertLookup, LdapSession
from agent.discovery.names import AddressError, Target, target_for
from agent.errors import AgentError, Code
from agent.types import Binding, Candidates


class DiscoveryResolver:
    """Certificates for a remote address, in the order of the Direct Applicability Statement 5.

    Levels, most preferred first: DNS CERT at ``local.domain``, DNS CERT at ``domain``, LDAP
    ``mail=<address>``, LDAP ``mail=<domain>``. The generator only performs a lookup when the
    caller asks for the next level, so LDAP is never queried when DNS gave a usable certificate.
    """

    def __init__(
        self,
        *,
        dns: DnsCertLookup,
        ldap: LdapCertLookup | None = None,
        cache: DiscoveryCache | None = None,
    ) -> None:
        self.dns = dns
        self.ldap = ldap
        self.cache = cache

    @classmethod
    def build(
        cls,
        *,
        nameservers: str | Sequence[str] | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
        ldap: bool = True,
        cache: DiscoveryCache | None = None,
        rng: random.Random | None = None,
        allow_private_networks: bool = False,
        ldap_allow_private_networks: bool = False,
    ) -> DiscoveryResolver:
        """A resolver over ``nameservers`` (``host:port`` items; the system's when empty).

        ``allow_private_networks`` lets IPKIX URLs, ``ldap_allow_private_networks`` LDAP SRV
        targets reach loopback and private addresses (``LdapCertLookup``); both are outside
        data, so both are refused unless asked for."""
        servers = parse_nameservers(nameservers) if nameservers else None
        client = DnsClient(servers=servers, timeout=timeout)
        return cls(
            dns=DnsCertLookup(
                client=client, timeout=timeout, allow_private_networks=allow_private_networks
            ),
            ldap=LdapCertLookup(
                client=client,
                connect_timeout=connect_timeout,
                timeout=timeout,
                rng=rng,
                allow_private_networks=ldap_allow_private_networks,
            )
            if ldap
            else None,
            cache=cache,
        )

    def candidates(self, address: str) -> Generator[Candidates, None, None]:
        """The levels for ``address``; raises a transient ``AgentError`` once they are all
        used up when any of them failed.

        Every level is pulled only when no earlier one gave a usable certificate, so reaching
        the end means nothing usable was found. After a SERVFAIL, a time-out or an unreachable
        directory that is not an answer: the failed level may hold the certificate, so the
        sender must wait and retry (``permanent=False``) instead of failing the message.
        """
        try:
            target = target_for(address)
        except AddressError as exc:
            yield Candidates(source="dns", binding=Binding.ADDRESS, error=str(exc))
            return
        failures: list[str] = []
        passed_over: list[str] = []
        with closing(self._levels(target)) as levels:
            for level in levels:
                if level.error is not None:
                    failures.append(f"{level.source} {level.binding.value}: {level.error}")
                yield level
                # Reached only when the caller asked for the next level, so none of these
                # certificates was usable: the error below must still name them, since the
                # caller's own per-certificate reasons go no further than its loop when this
                # generator raises.
                if level.certificates:
                    passed_over.append(f"{level.source} {level.binding.value}: {_serials(level)}")
        if failures:
            detail = "discovery incomplete, to be retried: " + "; ".join(failures)
            if passed_over:
                detail += "; certificates found but not usable: " + "; ".join(passed_over)
            raise AgentError(Code.NO_RECIPIENT_CERTIFICATE, detail, permanent=False)

    def _levels(self, target: Target) -> Generator[Candidates, None, None]:
        domain = target.domain
        yield self._level(
            "dns",
            Binding.ADDRESS,
            domain,
            target.address_owner,
            lambda: self._address_cert(target),
        )
        yield self._level(
            "dns",
            Binding.DOMAIN,
            domain,
            target.domain_owner,
            lambda: self.dns.lookup(target.domain_name),
        )
        if self.ldap is None:
            return
        session: LdapSession | None = None
        ldap = self.ldap

        def search(mail: str) -> Found:
            nonlocal session
            if session is None:
                session = ldap.session(domain)
            return session.search(mail)

        try:
            yield self._level(
                "ldap", Binding.ADDRESS, domain, target.address, lambda: search(target.address)
            )
            yield self._level("ldap", Binding.DOMAIN, domain, domain, lambda: search(domain))
        finally:
            if session is not None:
                session.close()

    def _address_cert(self, target: Target) -> Found:
        """The address-bound CERT at ``local.domain``, else at the one-label spelling of a dotted
        local part (``target.escaped_address_name``): publishers use either."""
        found = self.dns.lookup(target.address_name)
        if target.escaped_address_name is None or found.outcome is not Outcome.NOTHING:
            return found
        other = self.dns.lookup(target.escaped_address_name)
        notes = (*found.notes, *other.notes)
        # Kept no longer than the first name's absence may be (its negative TTL): a record
        # published there later must be seen within it, as it would without this fallback.
        ttl = min(found.ttl, other.ttl) if found.ttl > 0 else other.ttl
        if other.outcome is Outcome.NOTHING:
            return Found(Outcome.NOTHING, notes=notes, ttl=ttl)
        return Found(other.outcome, other.certificates, other.error, notes, ttl)

    def flush(self, address_or_domain: str) -> None:
        """Forget cached results for an address or a whole domain (admin console, CLI)."""
        if self.cache is not None:
            self.cache.flush(address_or_domain)

    def _level(
        self,
        source: str,
        binding: Binding,
        domain: str,
        name: str,
        lookup: Callable[[], Found],
    ) -> Candidates:
        found = None
        if self.cache is not None:
            found = self.cache.get(domain=domain, kind=source, name=name)
        if found is None:
            found = lookup()
            if self.cache is not None:
                self.cache.put(domain=domain, kind=source, name=name, found=found)
        return Candidates(
            source=source,
            binding=binding,
            certificates=found.certificates,
            error=found.error,
            notes=found.notes,
        )


def _serials(level: Candidates) -> str:
    return "serial " + ", ".join(f"{cert.serial_number:x}" for cert in level.certificates)
