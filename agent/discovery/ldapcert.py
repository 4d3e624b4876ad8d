"""LDAP discovery: SRV ``_ldap._tcp.<domain>``, root DSE naming contexts, anonymous search.

Direct Applicability Statement 5.2 / the Certificate Discovery implementation guide: the
directory is found through SRV (RFC 2782), searched anonymously for ``mail=<address>`` (then
``mail=<domain>``) and the certificate is read from ``userSMIMECertificate`` (RFC 2798, a
PKCS#7 bundle or DER) or ``userCertificate;binary`` (RFC 4523, DER).
"""

from __future__ import annotations

import random
import socket
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
from agent.http import is_public

CERTIFICATE_ATTRIBUTES = ("userSMIMECertificate", "userCertificate;binary")
_WANTED = frozenset({"usersmimecertificate", "usercertificate"})

# Bounds on what one directory can make us read (a huge answer must cost bounded work).
MAX_ENTRIES = 16
MAX_VALUES = 16
MAX_VALUE_BYTES = 64 * 1024
MAX_TARGETS = 8
MAX_NAMING_CONTEXTS = 8
# Everything one directory may send us over one connection (root DSE and both searches): far
# above any real answer for one address, and small enough that ldap3, which grows its receive
# buffer by concatenation (quadratic in the message size), reads it in well under a second.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
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
        allow_private_networks: bool = False,
    ) -> None:
        self.client = client
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        # Injectable so tests can make the RFC 2782 weighted choice deterministic.
        self.rng = rng or random.SystemRandom()
        # SRV targets and their addresses are the partner's to choose, like IPKIX URLs: unless
        # a caller says otherwise, only global unicast addresses are contacted
        # (agent.http.is_public), so a partner's DNS cannot aim our LDAP connections at our own
        # loopback or private network (SSRF). The safe value is the default, as for
        # agent.http.Fetcher: a caller that forgets the argument gets the safe behaviour.
        self.allow_private_networks = allow_private_networks

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
        self._socket: _BoundedSocket | None = None
        self._bases: tuple[str, ...] = ()
        self._server = ""
        self._opened: Found | None = None  # NOTHING/FAILED when there is nothing to search

    def close(self) -> None:
        if self._connection is not None:
            _unbind(self._connection)
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
        if self._socket is not None:
            self._socket.deadline = deadline
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
        except Exception as exc:  # noqa: BLE001 - see _MALFORMED
            self.close()
            self._opened = Found.failed(f"LDAP {self._server}: {_malformed(exc)}")
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
        if not self._lookup.allow_private_networks:
            refused = [address for address in addresses if not is_public(address)]
            problems.extend(
                f"{target} ({address}): not a public address, not contacted" for address in refused
            )
            addresses = [address for address in addresses if address not in refused]
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
                bounded = _BoundedSocket(connection.socket, deadline=deadline)
                connection.socket = bounded
                connection.bind()  # anonymous: no user, no password (RFC 4513 5.1.1)
                bases = _naming_contexts(connection)
            except LDAPException as exc:
                _unbind(connection)
                problems.append(f"{target} ({address}): {_describe(exc)}")
                continue
            except Exception as exc:  # noqa: BLE001 - see _MALFORMED
                _unbind(connection)
                problems.append(f"{target} ({address}): {_malformed(exc)}")
                continue
            if not bases:
                _unbind(connection)
                problems.append(f"{target}: root DSE lists no naming contexts")
                continue
            self._connection = connection
            self._socket = bounded
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


class _BoundedSocket:
    """A connection's socket whose reads stop at a deadline and after ``MAX_RESPONSE_BYTES``.

    ldap3 only bounds each read (``receive_timeout``): a directory that sends one byte a second,
    or announces a message of gigabytes and streams it, would otherwise keep the worker reading
    (and buffering) forever. The errors raised here are ``OSError``s, which ldap3 turns into an
    ``LDAPSocketReceiveError`` after closing the connection.
    """

    def __init__(self, sock: socket.socket, *, deadline: float) -> None:
        self._sock = sock
        self._read_timeout = sock.gettimeout()
        self.deadline = deadline
        self._left = MAX_RESPONSE_BYTES

    def recv(self, size: int, *args: Any) -> bytes:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("time limit reached while reading the answer")
        if self._left <= 0:
            raise OSError(f"the directory sent more than {MAX_RESPONSE_BYTES} bytes")
        timeout = self._read_timeout
        self._sock.settimeout(remaining if timeout is None else min(timeout, remaining))
        data = self._sock.recv(min(size, self._left), *args)
        self._left -= len(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


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


# ldap3 decodes what the server sends without checking it is a well-formed LDAPMessage: bytes
# that are not one surface as IndexError, KeyError, TypeError or a pyasn1 error rather than an
# LDAPException. The server is outside data (any domain can name one in SRV), so whatever its
# answer makes the decoder raise is a malformed answer from it, never a crash of the lookup.
_MALFORMED = "malformed answer"


def _malformed(exc: BaseException) -> str:
    return f"{_MALFORMED} ({_describe(exc)})"


def _unbind(connection: Any) -> None:
    try:
        connection.unbind()
    except Exception:  # noqa: BLE001, S110 - closing after a failure, which is what we report
        pass


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
