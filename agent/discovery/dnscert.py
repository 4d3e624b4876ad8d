"""DNS CERT discovery (RFC 4398) for one owner name: PKIX inline and IPKIX by URL."""

from __future__ import annotations

import time
from collections.abc import Callable

import dns.name
import dns.rdatatype
from cryptography import x509
from dns.rdtypes.ANY.CERT import CERT

from agent.discovery.certparse import parse_blob, unique
from agent.discovery.dnsclient import DnsClient, DnsLookupError, Status
from agent.discovery.fetch import DEFAULT_MAX_BYTES, FetchError, fetch
from agent.discovery.found import Found, Outcome

# RFC 4398 section 2.1 certificate types.
PKIX = 1  # an X.509 certificate, DER, inline
IPKIX = 4  # the URL of an X.509 data object

# A publisher may put any number of records at a name; beyond these we stop reading so that a
# huge answer costs bounded work (a rollover needs two or three, never dozens).
MAX_RECORDS = 16
MAX_URL_FETCHES = 4

Fetcher = Callable[..., bytes]


class DnsCertLookup:
    def __init__(
        self,
        *,
        client: DnsClient,
        timeout: float = 10.0,
        fetch_timeout: float = 5.0,
        max_fetch_bytes: int = DEFAULT_MAX_BYTES,
        allow_private_networks: bool = False,
        fetcher: Fetcher = fetch,
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.fetch_timeout = fetch_timeout
        self.max_fetch_bytes = max_fetch_bytes
        self.allow_private_networks = allow_private_networks
        self._fetch = fetcher

    def lookup(self, name: dns.name.Name) -> Found:
        """The certificates published at ``name``, within ``timeout`` seconds in all."""
        deadline = time.monotonic() + self.timeout
        try:
            answer = self.client.query(name, dns.rdatatype.CERT, deadline=deadline)
        except DnsLookupError as exc:
            return Found.failed(f"DNS CERT lookup failed: {exc}")
        if answer.status is not Status.ANSWER:
            why = "no such name" if answer.status is Status.NXDOMAIN else "no CERT records"
            return Found(Outcome.NOTHING, notes=(f"{name}: {why}",), ttl=answer.ttl)
        certificates: list[x509.Certificate] = []
        notes: list[str] = []
        fetch_failures: list[str] = []
        fetches = 0
        records = sorted(
            (rdata for rdata in answer.records if isinstance(rdata, CERT)),
            key=lambda rdata: rdata.to_text(),  # a stable order whatever the server sent
        )
        if len(records) > MAX_RECORDS:
            notes.append(f"{name}: {len(records)} CERT records, only the first {MAX_RECORDS} read")
            records = records[:MAX_RECORDS]
        for index, rdata in enumerate(records, start=1):
            origin = f"{name} CERT #{index}"
            kind = int(rdata.certificate_type)
            if kind == PKIX:
                parsed = parse_blob(bytes(rdata.certificate), origin=origin)
            elif kind == IPKIX:
                if fetches >= MAX_URL_FETCHES:
                    notes.append(f"{origin}: more than {MAX_URL_FETCHES} IPKIX URLs, skipped")
                    continue
                fetches += 1
                data, problem = self._fetch_url(bytes(rdata.certificate), deadline, origin)
                if problem is not None:
                    fetch_failures.append(problem)
                    continue
                parsed = parse_blob(data, origin=origin)
            else:
                notes.append(f"{origin}: certificate type {kind} is not X.509, skipped")
                continue
            certificates.extend(parsed.certificates)
            notes.extend(parsed.notes)
        found = unique(certificates)
        if fetch_failures:
            # A record we could not read may hold the one usable certificate: the lookup is
            # incomplete, so it is kept only as briefly as a failure (a fetch may work a minute
            # later, the DNS TTL can be a day) while still offering what was read.
            return Found(
                Outcome.FAILED,
                found,
                error="; ".join(fetch_failures),
                notes=tuple(notes),
                ttl=answer.ttl,
            )
        return Found(Outcome.FOUND, found, notes=tuple(notes), ttl=answer.ttl)

    def _fetch_url(self, raw: bytes, deadline: float, origin: str) -> tuple[bytes, str | None]:
        try:
            url = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            return b"", f"{origin}: IPKIX URL is not ASCII, skipped"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b"", f"{origin}: IPKIX fetch not tried, time limit reached"
        try:
            data = self._fetch(
                url,
                timeout=min(self.fetch_timeout, remaining),
                max_bytes=self.max_fetch_bytes,
                allow_private_networks=self.allow_private_networks,
            )
        except FetchError as exc:
            return b"", f"{origin}: IPKIX fetch failed: {exc}"
        return data, None
