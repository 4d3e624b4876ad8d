"""LDAP discovery: SRV ``_ldap._tcp.<domain>``, root DSE naming contexts, anonymous search.

Direct Applicability Statement 5.2 / the Certificate Discovery implementation guide: the
directory is found through SRV (RFC 2782), searched anonymously for ``mail=<address>`` (then
``mail=<domain>``) and the certificate is read from ``userSMIMECertificate`` (RFC 2798, a
PKCS#7 bundle or DER) or ``userCertificate;binary`` (RFC 4523, DER).
"""

from __future__ import annotations

import random
import time
from typing import Any

import dns.name
import dns.rdatatype
from cryptography import x509
from dns.rdtypes.IN.SRV import SRV
from ldap3 import BASE, NONE, SUBTREE, Connection, Server
from ldap3.core.exceptions import LDAPException, LDAPOperationResult
from ldap3.utils.conv import escape_filter_chars

from agent.discovery.certparse import parse_blob, unique
from agent.discovery.dnsclient import DnsClient, DnsLookupError, Status
from agent.discovery.found import Found, Outcome
from agent.discovery.srv import SrvTarget, order_targets

CERTIFICATE_ATTRIBUTES = ("userSMIMECertificate", "userCertificate;binary")
_WANTED = frozenset({"usersmimecertificate", "usercertificate"})

# Bounds on what one directory can make us read (a huge answer must cost bounded work).
MAX_ENTRIES = 16
MAX_VALUES = 16
MAX_VALUE_BYTES = 64 * 1024
MAX_TARGETS = 8
MAX_NAMING_CONTEXTS = 8
_SIZE_LIMIT_EXCEEDED = 4  # RFC 4511 4.1.9 resultCode sizeLimitExceeded


class LdapCertLookup:
    """Finds a domain's directory and searches it; one ``LdapSession`` per recipient."""

    def __init__(
        self,
        *,
        client: DnsClient,
        connect_timeout: float = 3.0,
        timeout: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        # Injectable so tests can make the RFC 2782 weighted choice deterministic.
        self.rng = rng or random.SystemRandom()

    def session(self, domain: str) -> LdapSession:
        return LdapSession(self, domain)


class LdapSession:
    """A connection to the first reachable directory of ``domain``, opened on first search.

    The address-bound and domain-bound searches share it, so the SRV lookup, the fail-over and
    the root DSE read happen at most once per recipient; a failure to connect is remembered so
    the second search does not spend the time limit again.
    """

    def __init__(self, lookup: LdapCertLookup, domain: str) -> None:
        self._lookup = lookup
        self.domain = domain
        self._connection: Any = None
        self._bases: tuple[str, ...] = ()
        self._server = ""
        self._opened: Found | None = None  # NOTHING/FAILED when there is nothing to search

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.unbind()
            except LDAPException:
                pass
            self._connection = None

    def search(self, mail: str) -> Found:
        """Certificates on entries whose ``mail`` equals ``mail``."""
        deadline = time.monotonic() + self._lookup.timeout
        if self._opened is None:
            self._opened = self._open(deadline)
        if self._opened.outcome is not Outcome.FOUND:
            return self._opened
        connection = self._connection
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return Found.failed(f"LDAP {self._server}: time limit reached before the search")
        # RFC 4515 section 3: the value must be escaped, or an address containing '*' or ')'
        # would change the filter.
        search_filter = f"(mail={escape_filter_chars(mail)})"
        certificates: list[x509.Certificate] = []
        notes: list[str] = list(self._opened.notes)
        entries = 0
        refused: list[str] = []
        try:
            for base in self._bases:
                try:
                    connection.search(
                        base,
                        search_filter,
                        search_scope=SUBTREE,
                        attributes=list(CERTIFICATE_ATTRIBUTES),
                        size_limit=MAX_ENTRIES,
                        time_limit=max(1, int(remaining)),
                    )
                except LDAPOperationResult as exc:
                    # The server answered, with an error for this naming context only (an empty
                    # database gives noSuchObject, a private one insufficientAccessRights): the
                    # others may still hold the entry.
                    refused.append(f"LDAP {self._server} {base}: search refused ({_describe(exc)})")
                    continue
                for entry in connection.response or ():
                    if entry.get("type") != "searchResEntry":
                        continue
                    entries += 1
                    found, more_notes = _certificates_of(entry, server=self._server)
                    certificates.extend(found)
                    notes.extend(more_notes)
                if (connection.result or {}).get("result") == _SIZE_LIMIT_EXCEEDED:
                    notes.append(
                        f"LDAP {self._server} {base}: more than {MAX_ENTRIES} entries with"
                        f" mail={mail}, only the first {MAX_ENTRIES} read"
                    )
        except LDAPException as exc:
            self.close()
            self._opened = Found.failed(f"LDAP {self._server}: search failed ({_describe(exc)})")
            return self._opened
        if not entries and len(refused) == len(self._bases):
            # No context could be searched: that the entry is absent is not known.
            return Found.failed("; ".join(refused), notes=tuple(notes))
        notes.extend(refused)
        if not entries:
            notes.append(f"LDAP {self._server}: no entry with mail={mail}")
            return Found(Outcome.NOTHING, notes=tuple(notes))
        # No TTL: LDAP has none, the cache keeps LDAP results for its configured time.
        return Found(Outcome.FOUND, unique(certificates), notes=tuple(notes))

    def _open(self, deadline: float) -> Found:
        name = dns.name.from_text(f"_ldap._tcp.{self.domain}")
        try:
            answer = self._lookup.client.query(name, dns.rdatatype.SRV, deadline=deadline)
        except DnsLookupError as exc:
            return Found.failed(f"LDAP SRV lookup failed: {exc}")
        records = [rdata for rdata in answer.records if isinstance(rdata, SRV)]
        if answer.status is not Status.ANSWER or not records:
            return Found(Outcome.NOTHING, notes=(f"{name}: no SRV records",), ttl=answer.ttl)
        if len(records) == 1 and records[0].target == dns.name.root:
            # RFC 2782: a target of "." means the service is decidedly not available.
            return Found(Outcome.NOTHING, notes=(f"{name}: service not offered",), ttl=answer.ttl)
        targets = order_targets(
            [
                SrvTarget(
                    host=record.target.to_text(omit_final_dot=True),
                    port=int(record.port),
                    priority=int(record.priority),
                    weight=int(record.weight),
                )
                for record in records
                if record.target != dns.name.root
            ],
            rng=self._lookup.rng,
        )
        failures: list[str] = []
        for target in targets[:MAX_TARGETS]:
            if deadline - time.monotonic() <= 0:
                failures.append(f"{target}: not tried, time limit reached")
                continue
            problem = self._connect(target, deadline)
            if problem is None:
                return Found(Outcome.FOUND, notes=tuple(failures), ttl=answer.ttl)
            failures.append(problem)
        return Found.failed("LDAP unreachable: " + "; ".join(failures))

    def _connect(self, target: SrvTarget, deadline: float) -> str | None:
        """Connect, bind anonymously and read the naming contexts; the problem, or None."""
        try:
            addresses = self._addresses(target.host, deadline)
        except DnsLookupError as exc:
            return f"{target}: address lookup failed ({exc})"
        if not addresses:
            return f"{target}: the name has no address"
        problems: list[str] = []
        for address in addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                problems.append(f"{target}: time limit reached")
                break
            wait = min(self._lookup.connect_timeout, remaining)
            server = Server(address, port=target.port, connect_timeout=wait, get_info=NONE)
            connection = Connection(
                server,
                read_only=True,
                receive_timeout=max(1, int(wait)),
                raise_exceptions=True,
                auto_referrals=False,
            )
            try:
                connection.open()
                connection.bind()  # anonymous: no user, no password (RFC 4513 5.1.1)
                bases = _naming_contexts(connection)
            except LDAPException as exc:
                try:
                    connection.unbind()
                except LDAPException:
                    pass
                problems.append(f"{target} ({address}): {_describe(exc)}")
                continue
            if not bases:
                connection.unbind()
                problems.append(f"{target}: root DSE lists no naming contexts")
                continue
            self._connection = connection
            self._bases = bases
            self._server = str(target)
            return None
        return "; ".join(problems)

    def _addresses(self, host: str, deadline: float) -> list[str]:
        # Resolved through our own DNS client so the configured servers (HISP_DNS_SERVERS)
        # apply to SRV targets as well, not only to the SRV lookup.
        name = dns.name.from_text(host)
        addresses: list[str] = []
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            answer = self._lookup.client.query(name, rdtype, deadline=deadline)
            addresses.extend(rdata.to_text() for rdata in answer.records)
            if addresses:
                break
        return addresses


def _naming_contexts(connection: Any) -> tuple[str, ...]:
    connection.search(
        "", "(objectClass=*)", search_scope=BASE, attributes=["namingContexts"], size_limit=1
    )
    values: list[str] = []
    for entry in connection.response or ():
        if entry.get("type") != "searchResEntry":
            continue
        for key, raw in entry.get("raw_attributes", {}).items():
            if key.lower() == "namingcontexts":
                values.extend(_text(value) for value in raw)
    return tuple(value for value in values if value)[:MAX_NAMING_CONTEXTS]


def _certificates_of(
    entry: dict[str, Any], *, server: str
) -> tuple[list[x509.Certificate], list[str]]:
    certificates: list[x509.Certificate] = []
    notes: list[str] = []
    dn = entry.get("dn", "")
    for key, values in entry.get("raw_attributes", {}).items():
        base = key.split(";", 1)[0].lower()
        if base not in _WANTED:
            continue
        for index, value in enumerate(values[:MAX_VALUES], start=1):
            origin = f"LDAP {server} {dn} {key} #{index}"
            if len(value) > MAX_VALUE_BYTES:
                notes.append(f"{origin}: {len(value)} bytes, too large, skipped")
                continue
            parsed = parse_blob(bytes(value), origin=origin)
            certificates.extend(parsed.certificates)
            notes.extend(parsed.notes)
        if len(values) > MAX_VALUES:
            notes.append(f"LDAP {server} {dn} {key}: only the first {MAX_VALUES} values read")
    return certificates, notes


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
