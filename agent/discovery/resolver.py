"""The discovery ``CertificateResolver``: DNS CERT, then LDAP, each level only when asked for."""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Sequence
from contextlib import closing

from agent.discovery.cache import DiscoveryCache
from agent.discovery.dnscert import DnsCertLookup
from agent.discovery.dnsclient import DnsClient, parse_nameservers
from agent.discovery.found import Found
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
    ) -> DiscoveryResolver:
        """A resolver over ``nameservers`` (``host:port`` items; the system's when empty)."""
        servers = parse_nameservers(nameservers) if nameservers else None
        client = DnsClient(servers=servers, timeout=timeout)
        return cls(
            dns=DnsCertLookup(
                client=client, timeout=timeout, allow_private_networks=allow_private_networks
            ),
            ldap=LdapCertLookup(
                client=client, connect_timeout=connect_timeout, timeout=timeout, rng=rng
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
        with closing(self._levels(target)) as levels:
            for level in levels:
                if level.error is not None:
                    failures.append(f"{level.source} {level.binding.value}: {level.error}")
                yield level
        if failures:
            raise AgentError(
                Code.NO_RECIPIENT_CERTIFICATE,
                "discovery incomplete, to be retried: " + "; ".join(failures),
                permanent=False,
            )

    def _levels(self, target: Target) -> Generator[Candidates, None, None]:
        domain = target.domain
        yield self._level(
            "dns",
            Binding.ADDRESS,
            domain,
            target.address_owner,
            lambda: self.dns.lookup(target.address_name),
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
