"""Bounded HTTP fetches of URLs a remote party chose (standard library only).

Used for CRLs, OCSP and AIA caIssuers (RFC 5280 4.2.1.13, 4.2.2.1; RFC 6960) and for RFC 4398
IPKIX records (a DNS CERT record holding the URL of a certificate). The URLs come from
certificates or DNS records that may be hostile, so: only http and https; a total time limit
(a server that trickles bytes is cut off, not only one that stays silent); a size cap; redirects
either refused or re-checked like the first URL; and by default no loopback, private,
link-local or otherwise internal addresses, so a remote party cannot point us at services inside
the HISP (server-side request forgery). Tests and closed deployments opt in with
``allow_private_networks=True``. The address check is made on resolution, so DNS rebinding
between check and connect is not covered; deployments that care should also egress through a
proxy that enforces the same rule (the standard ``http_proxy`` variables are honoured).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException, HTTPMessage, HTTPResponse
from typing import IO
from urllib.parse import urlsplit

DEFAULT_TIMEOUT = 5.0
_ALLOWED_SCHEMES = frozenset({"http", "https"})


# Every control character, line ends included (see FetchError).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def is_public(address: str) -> bool:
    """Whether data from outside (a certificate's URL, a partner's MX) may aim our connections
    at ``address``: global unicast only, never loopback (ourselves), private, link-local (cloud
    metadata services) or multicast; an IPv4-mapped IPv6 address is judged by its IPv4 one."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class FetchError(Exception):
    """The resource could not be read; the message says why (never the response body).

    The message names a URL a stranger chose (from a certificate or a DNS record) and may
    quote the server's words (a status line that is not HTTP): it is logged and stored, so it
    is one line without control characters (a line end would forge a log line, and PostgreSQL
    refuses a NUL in text)."""

    def __init__(self, message: str) -> None:
        super().__init__(_CONTROL.sub("\ufffd", message))


@dataclass(frozen=True)
class Fetcher:
    """Fetches one URL at a time within ``timeout`` seconds in all and ``max_bytes`` of body.

    With ``follow_redirects`` (at most three) every target is checked as the first URL was;
    without, a redirect is an error (``HTTP 302``): the publisher can put the final URL in.
    """

    timeout: float = DEFAULT_TIMEOUT
    max_bytes: int = 1 << 20
    allow_private_networks: bool = False
    follow_redirects: bool = True

    def check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in _ALLOWED_SCHEMES or not parts.hostname:
            raise FetchError(
                f"unsupported URL scheme {parts.scheme!r} in {url!r} (only http and https)"
            )
        if self.allow_private_networks:
            return
        try:
            infos = socket.getaddrinfo(parts.hostname, parts.port or 80, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise FetchError(f"{url}: cannot resolve host ({exc})") from None
        for info in infos:
            if not is_public(str(info[4][0])):
                raise FetchError(f"{url}: resolves to a non-public address, not fetched")

    def get(self, url: str) -> bytes:
        # The scheme is checked in _open before anything is opened (only http/https).
        return self._open(urllib.request.Request(url, method="GET"))  # noqa: S310

    def post(self, url: str, body: bytes, content_type: str) -> bytes:
        request = urllib.request.Request(  # noqa: S310 (scheme checked in _open)
            url, data=body, method="POST", headers={"Content-Type": content_type}
        )
        return self._open(request)

    def _open(self, request: urllib.request.Request) -> bytes:
        url = request.full_url
        self.check_url(url)
        deadline = time.monotonic() + self.timeout
        redirects = _CheckedRedirects(self) if self.follow_redirects else _NoRedirects()
        opener = urllib.request.build_opener(redirects)
        try:
            with opener.open(request, timeout=self.timeout) as response:
                if not isinstance(response, HTTPResponse):
                    raise FetchError(f"{url}: not an HTTP response")
                declared = response.getheader("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                    raise FetchError(f"{url}: body of {declared} bytes exceeds {self.max_bytes}")
                return _read_bounded(response, url=url, deadline=deadline, max_bytes=self.max_bytes)
        except FetchError:
            raise
        except urllib.error.HTTPError as exc:
            raise FetchError(f"{url}: HTTP {exc.code}") from None
        except urllib.error.URLError as exc:
            raise FetchError(f"{url}: {_reason(exc.reason)}") from None
        except TimeoutError:
            raise FetchError(f"{url}: timed out after {self.timeout:g}s") from None
        except (OSError, HTTPException, ValueError) as exc:
            raise FetchError(f"{url}: {_reason(exc)}") from None


def _read_bounded(response: HTTPResponse, *, url: str, deadline: float, max_bytes: int) -> bytes:
    # read1 returns after at most one receive (each bounded by the socket timeout), so a server
    # that trickles bytes is cut off at the deadline instead of holding us indefinitely.
    body = bytearray()
    while True:
        if time.monotonic() > deadline:
            raise FetchError(f"{url}: too slow, gave up at the time limit")
        chunk = response.read1(16384)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > max_bytes:
            raise FetchError(f"{url}: body exceeds {max_bytes} bytes")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    max_redirections = 3

    def __init__(self, fetcher: Fetcher) -> None:
        self._fetcher = fetcher

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        self._fetcher.check_url(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _reason(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    return str(reason) or type(reason).__name__
