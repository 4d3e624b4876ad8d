"""Bounded HTTP fetches for CRLs, OCSP and AIA caIssuers (standard library only).

The URLs come from certificates that may be hostile (a signer's certificate is read before it is
trusted), so: only http and https; a hard time-out and size cap; redirects re-checked; and by
default no loopback, private, link-local or otherwise internal addresses, so a certificate cannot
point us at services inside the HISP (server-side request forgery). Tests and closed deployments
opt in with ``allow_private_networks=True``. The address check is made on resolution, so DNS
rebinding between check and connect is not covered; deployments that care should also egress
through a proxy that enforces the same rule.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPMessage
from typing import IO
from urllib.parse import urlsplit

DEFAULT_TIMEOUT = 5.0


class FetchError(Exception):
    """The resource could not be read; the message says why (no response body in it)."""


@dataclass(frozen=True)
class Fetcher:
    timeout: float = DEFAULT_TIMEOUT
    max_bytes: int = 1 << 20
    allow_private_networks: bool = False

    def check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(f"unsupported URL scheme {parts.scheme!r}")
        if self.allow_private_networks:
            return
        try:
            infos = socket.getaddrinfo(parts.hostname, parts.port or 80, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise FetchError(f"cannot resolve host ({exc})")
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if not address.is_global:
                raise FetchError("URL resolves to a non-public address")

    def get(self, url: str) -> bytes:
        # Scheme checked in _open before anything is opened (only http/https).
        return self._open(urllib.request.Request(url, method="GET"))  # noqa: S310

    def post(self, url: str, body: bytes, content_type: str) -> bytes:
        request = urllib.request.Request(  # noqa: S310 (scheme checked in _open)
            url, data=body, method="POST", headers={"Content-Type": content_type}
        )
        return self._open(request)

    def _open(self, request: urllib.request.Request) -> bytes:
        self.check_url(request.full_url)
        opener = urllib.request.build_opener(_CheckedRedirects(self))
        try:
            with opener.open(request, timeout=self.timeout) as response:
                return _read_bounded(response, self.max_bytes)
        except FetchError:
            raise
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise FetchError(f"{type(exc).__name__}: {exc}")


def _read_bounded(response: IO[bytes], max_bytes: int) -> bytes:
    data = response.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FetchError(f"response larger than {max_bytes} bytes")
    return data


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
