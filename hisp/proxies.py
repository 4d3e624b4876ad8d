"""The client's address behind the reverse proxies the operator trusts (HISP_TRUSTED_PROXIES).

Everything that names or counts a web client reads ``REMOTE_ADDR``: the audit log
(``services.audit.client_address``), django-axes' sign-in lockout, the OCSP responder's signing
budget, the invitation throttle. Behind a reverse proxy that is the proxy's address, so every
audit event named the proxy and all clients shared one lockout and one budget.
``TrustedProxyMiddleware``, first in MIDDLEWARE, writes the client's address there instead, but
only on the word of a peer the operator named: X-Forwarded-For and X-Forwarded-Proto are anyone's
to send, so from any other peer they change nothing.

Not django-ipware: it is not installed (django-axes has it as an optional extra), and its
trusted-proxy list is matched against the last entries of the header, never against the peer that
actually connected, and where that fails it falls back to other headers any client can send.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, TypeAlias

from django.conf import settings

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

# The trusted proxy's own address, kept beside the client's for logs that want both.
PROXY_ADDR = "HISP_PROXY_ADDR"
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def parse_networks(text: str) -> tuple[Network, ...]:
    """``HISP_TRUSTED_PROXIES``: comma-separated IP addresses and CIDR networks. Raises
    ValueError naming the first entry that is neither."""
    networks: list[Network] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        try:
            # strict: "10.0.0.5/24" is refused rather than read as the whole /24, which the
            # operator may not have meant to trust.
            network = ipaddress.ip_network(entry)
        except ValueError as error:
            raise ValueError(f"{entry!r} is not an IP address or CIDR network: {error}") from None
        if network.prefixlen == 0:
            raise ValueError(
                f"{entry!r} would trust every client to name its own address (X-Forwarded-For)"
            )
        networks.append(_unmapped_network(network))
    return tuple(networks)


def _unmapped_network(network: Network) -> Network:
    # Addresses are compared in their IPv4 form (a dual-stack listener reports ::ffff:a.b.c.d).
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        low = int(network.network_address) & 0xFFFFFFFF
        return ipaddress.IPv4Network((low, network.prefixlen - 96))
    return network


def _unmapped(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, networks: Iterable[Network]) -> bool:
    return any(address.version == network.version and address in network for network in networks)


def forwarded_address(entry: str) -> Address | None:
    """One X-Forwarded-For entry as proxies write it: ``192.0.2.1``, ``192.0.2.1:4711``,
    ``2001:db8::1``, ``[2001:db8::1]`` or ``[2001:db8::1]:4711``. None for anything else
    (``unknown``, a host name, a zone index, which means something only where it was written)."""
    text = entry.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not _port(rest)):
            return None
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not _port(f":{port}"):
            return None
    else:
        host = text
    if "%" in host:
        return None
    try:
        return _unmapped(ipaddress.ip_address(host))
    except ValueError:
        return None


def _port(text: str) -> bool:
    digits = text[1:]
    return text[:1] == ":" and 0 < len(digits) <= 5 and digits.isascii() and digits.isdigit()


def forwarded_client(forwarded_for: str, networks: Iterable[Network]) -> Address | None:
    """The client X-Forwarded-For names, read from the right: each trusted proxy appended the
    address it was connected from, so the first address that is no trusted proxy is the client,
    and whatever stands further left the client wrote itself. None when the header names none.

    An entry that is no address ends the walk: the trusted proxy that wrote it could not say who
    it was talking to (Squid writes ``unknown``), and passing over it would take the next entry
    on the left, the client's own claim. The answer is then the farthest trusted hop reached, as
    it is for a chain of trusted proxies only (an internal client)."""
    networks = tuple(networks)
    reached: Address | None = None
    for entry in reversed(forwarded_for.split(",")):
        if not entry.strip():
            continue  # "a,,b" or a leading comma: an empty list element (RFC 9110 5.6.1)
        address = forwarded_address(entry)
        if address is None:
            break
        if not _trusted(address, networks):
            return address
        reached = address
    return reached


def _peer(remote_addr: str) -> Address | None:
    # The socket's own address: a zone index here is this host's, so it is dropped, not refused.
    try:
        return _unmapped(ipaddress.ip_address(remote_addr.partition("%")[0]))
    except ValueError:
        return None


def apply_forwarded(meta: MutableMapping[str, Any], networks: tuple[Network, ...]) -> None:
    """Rewrite a WSGI environ as its trusted proxy describes the client: ``REMOTE_ADDR`` from
    X-Forwarded-For (the proxy's address kept as ``HISP_PROXY_ADDR``), and the scheme https
    when X-Forwarded-Proto says so. Nothing changes unless the peer itself is trusted."""
    peer = _peer(str(meta.get("REMOTE_ADDR") or ""))
    if peer is None or not _trusted(peer, networks):
        return
    client = forwarded_client(str(meta.get("HTTP_X_FORWARDED_FOR") or ""), networks)
    if client is not None:
        meta[PROXY_ADDR] = meta["REMOTE_ADDR"]
        meta["REMOTE_ADDR"] = str(client)
    # A proxy that appends rather than replaces leaves the client's own value on the left; the
    # last one is our peer's. Django's SECURE_PROXY_SSL_HEADER would believe it from anyone.
    proto = str(meta.get("HTTP_X_FORWARDED_PROTO") or "").rsplit(",", 1)[-1]
    if proto.strip().lower() == "https":
        meta["wsgi.url_scheme"] = "https"


class TrustedProxyMiddleware:
    """First in MIDDLEWARE, so SecurityMiddleware, CSRF, axes and every view see the client."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # Read per request (a short tuple), so a changed setting needs no new handler.
        networks = settings.HISP_TRUSTED_PROXIES
        if networks:
            apply_forwarded(request.META, networks)
        return self.get_response(request)
