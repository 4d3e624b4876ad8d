"""A small stub resolver: ask the configured servers, retry truncated answers over TCP, follow
CNAMEs, and never take longer than one overall deadline.

dnspython provides the wire format and transports; the policy (which server next, what counts as
an answer, how long a negative answer may be cached) is ours, so that every failure turns into a
clear reason instead of an exception from deep inside a library.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset

# RFC 9715 / DNS flag day 2020: a payload that avoids IP fragmentation on every common path.
# Anything larger comes back truncated and is fetched again over TCP (RFC 7766).
DEFAULT_UDP_PAYLOAD = 1232
MAX_CNAME_HOPS = 8


@dataclass(frozen=True)
class Nameserver:
    host: str
    port: int = 53

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_nameservers(spec: str | Sequence[str]) -> tuple[Nameserver, ...]:
    """``"127.0.0.1:5353, [::1]:53, 10.0.0.2"`` (or a list of such items) as nameservers."""
    items = spec.replace(",", " ").split() if isinstance(spec, str) else list(spec)
    servers: list[Nameserver] = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        host, port = item, "53"
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else "53"
        elif item.count(":") == 1:
            host, port = item.split(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"not a host:port nameserver: {item!r}")
        servers.append(Nameserver(host, int(port)))
    if not servers:
        raise ValueError("no nameservers given")
    return tuple(servers)


def system_nameservers() -> tuple[Nameserver, ...]:
    """The servers in the system resolver configuration (/etc/resolv.conf)."""
    try:
        configured = dns.resolver.Resolver(configure=True).nameservers
    except dns.exception.DNSException as exc:
        raise ValueError(f"no system resolver: {exc}") from None
    return tuple(Nameserver(str(server)) for server in configured)


class Status(StrEnum):
    ANSWER = "answer"
    NXDOMAIN = "nxdomain"  # RFC 8020: the name does not exist
    NODATA = "nodata"  # the name exists, without records of this type


@dataclass(frozen=True)
class DnsAnswer:
    status: Status
    name: dns.name.Name  # the final owner name after CNAMEs
    records: tuple[dns.rdata.Rdata, ...]
    ttl: int  # the smallest TTL along the chain, or the negative TTL (RFC 2308 section 5)
    used_tcp: bool = False
    cnames: tuple[dns.name.Name, ...] = field(default=())


class DnsLookupError(Exception):
    """No server gave a usable answer in time; ``str()`` says why for each server tried."""


class DnsClient:
    """Queries ``servers`` in order (the next one only when one fails), within ``timeout``."""

    def __init__(
        self,
        *,
        servers: Sequence[Nameserver] | None = None,
        timeout: float = 5.0,
        attempt_timeout: float = 2.0,
        udp_payload: int = DEFAULT_UDP_PAYLOAD,
    ) -> None:
        self.servers = tuple(servers) if servers else system_nameservers()
        if not self.servers:
            raise ValueError("no nameservers")
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.udp_payload = udp_payload

    def query(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType, *, deadline: float | None = None
    ) -> DnsAnswer:
        own = time.monotonic() + self.timeout
        deadline = own if deadline is None else min(deadline, own)
        chain_ttls: list[int] = []
        cnames: list[dns.name.Name] = []
        used_tcp = False
        current = name
        for _ in range(MAX_CNAME_HOPS + 1):
            response, tcp = self._exchange(current, rdtype, deadline)
            used_tcp = used_tcp or tcp
            final, hops = _follow(response, current, rdtype)
            cnames.extend(target for target, _ in hops)
            chain_ttls.extend(hop_ttl for _, hop_ttl in hops)
            if len(cnames) > MAX_CNAME_HOPS:
                break
            found = response.get_rrset(response.answer, final, dns.rdataclass.IN, rdtype)
            if found is not None:
                return DnsAnswer(
                    Status.ANSWER,
                    final,
                    tuple(found),
                    min([found.ttl, *chain_ttls]),
                    used_tcp,
                    tuple(cnames),
                )
            if response.rcode() == dns.rcode.NXDOMAIN:
                return DnsAnswer(
                    Status.NXDOMAIN, final, (), _negative_ttl(response), used_tcp, tuple(cnames)
                )
            if final != current and not _has_soa(response):
                # The server gave the CNAME but not its target's records (it is not
                # authoritative for the target): ask for the target itself.
                current = final
                continue
            return DnsAnswer(
                Status.NODATA, final, (), _negative_ttl(response), used_tcp, tuple(cnames)
            )
        raise DnsLookupError(f"{name}: more than {MAX_CNAME_HOPS} CNAMEs (a loop?)")

    def _exchange(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType, deadline: float
    ) -> tuple[dns.message.Message, bool]:
        """One answer with rcode NOERROR or NXDOMAIN, and whether it needed TCP."""
        failures: list[str] = []
        for server in self.servers:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                failures.append(f"{server}: not tried, time limit reached")
                continue
            attempt = min(remaining, self.attempt_timeout)
            try:
                response, tcp = self._ask(server, name, rdtype, attempt)
            except dns.exception.Timeout:
                failures.append(f"{server}: timed out after {attempt:.1f}s")
                continue
            except (dns.exception.DNSException, ValueError, EOFError) as exc:
                failures.append(f"{server}: malformed answer ({_describe(exc)})")
                continue
            except OSError as exc:
                failures.append(f"{server}: unreachable ({exc.strerror or exc})")
                continue
            rcode = response.rcode()
            if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                return response, tcp
            failures.append(f"{server}: {dns.rcode.to_text(rcode)}")
        raise DnsLookupError(f"{name} {dns.rdatatype.to_text(rdtype)}: " + "; ".join(failures))

    def _ask(
        self,
        server: Nameserver,
        name: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        timeout: float,
    ) -> tuple[dns.message.Message, bool]:
        query = dns.message.make_query(name, rdtype, use_edns=0, payload=self.udp_payload)
        started = time.monotonic()
        try:
            response = dns.query.udp(
                query,
                server.host,
                timeout=timeout,
                port=server.port,
                ignore_unexpected=True,
                raise_on_truncation=True,
            )
            return response, False
        except dns.message.Truncated:
            pass
        # RFC 7766 section 5: a truncated UDP answer is retried over TCP, same server.
        left = timeout - (time.monotonic() - started)
        if left <= 0:
            raise dns.exception.Timeout
        try:
            return dns.query.tcp(query, server.host, timeout=left, port=server.port), True
        except TimeoutError:
            raise dns.exception.Timeout from None


def _follow(
    response: dns.message.Message, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> tuple[dns.name.Name, list[tuple[dns.name.Name, int]]]:
    """Walk the CNAME chain in the answer section (RFC 1034 3.6.2): final name and each hop."""
    current = name
    hops: list[tuple[dns.name.Name, int]] = []
    if rdtype == dns.rdatatype.CNAME:
        return current, hops
    for _ in range(MAX_CNAME_HOPS + 1):
        rrset = response.get_rrset(response.answer, current, dns.rdataclass.IN, dns.rdatatype.CNAME)
        if rrset is None:
            break
        current = rrset[0].target
        hops.append((current, rrset.ttl))
    return current, hops


def _has_soa(response: dns.message.Message) -> bool:
    return any(rrset.rdtype == dns.rdatatype.SOA for rrset in response.authority)


def _negative_ttl(response: dns.message.Message) -> int:
    # RFC 2308 section 5: a negative answer is cached for min(SOA TTL, SOA MINIMUM).
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return int(min(rrset.ttl, rrset[0].minimum))
    return 0


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
