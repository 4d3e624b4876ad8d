"""Fetching a certificate over HTTP with a hard bound on time and size.

Used for RFC 4398 IPKIX records (type 4: the record holds a URL of the certificate). A remote
publisher controls that URL, so the fetch must never hang a worker or fill its memory, and by
default must not reach loopback, private or link-local addresses (server-side request forgery
into the HISP's own network); tests and closed deployments opt in with
``allow_private_networks``. The check is made on resolution, so DNS rebinding between check and
connect is not covered: deployments that care egress through a proxy enforcing the same rule
(the standard ``http_proxy`` variables are honoured).
"""

from __future__ import annotations

import ipaddress
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException, HTTPResponse

DEFAULT_MAX_BYTES = 256 * 1024  # far above any certificate or small PKCS#7 bundle
_ALLOWED_SCHEMES = frozenset({"http", "https"})


class FetchError(Exception):
    """The URL could not be fetched; ``str()`` says why, for the discovery error."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect could send us to a scheme or host we would not have fetched directly; the
    # publisher controls the URL in the record, so it can put the final one there.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def fetch(
    url: str,
    *,
    timeout: float,
    max_bytes: int = DEFAULT_MAX_BYTES,
    allow_private_networks: bool = False,
) -> bytes:
    """The body at ``url``; raises ``FetchError`` past ``timeout`` seconds or ``max_bytes``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in _ALLOWED_SCHEMES or not parts.hostname:
        raise FetchError(f"unsupported URL {url!r} (only http and https are fetched)")
    if not allow_private_networks:
        _require_public(parts.hostname, parts.port or 80, url=url)
    deadline = time.monotonic() + timeout
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            assert isinstance(response, HTTPResponse)
            declared = response.getheader("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise FetchError(f"{url}: body of {declared} bytes exceeds {max_bytes}")
            return _read_bounded(response, url=url, deadline=deadline, max_bytes=max_bytes)
    except FetchError:
        raise
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{url}: HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise FetchError(f"{url}: {_reason(exc.reason)}") from None
    except TimeoutError:
        raise FetchError(f"{url}: timed out after {timeout:g}s") from None
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


def _require_public(host: str, port: int, *, url: str) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise FetchError(f"{url}: cannot resolve host ({exc})") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not address.is_global:
            raise FetchError(f"{url}: resolves to a non-public address, not fetched")


def _reason(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    return str(reason) or type(reason).__name__
