"""Fetching a certificate for an RFC 4398 IPKIX record (type 4: the record holds its URL).

The bounds and address checks are ``agent.http``'s. Redirects are refused rather than followed:
the publisher controls the URL in the record, so it can put the final one there.
"""

from __future__ import annotations

from agent.http import Fetcher, FetchError

DEFAULT_MAX_BYTES = 256 * 1024  # far above any certificate or small PKCS#7 bundle

__all__ = ["DEFAULT_MAX_BYTES", "FetchError", "fetch"]


def fetch(
    url: str,
    *,
    timeout: float,
    max_bytes: int = DEFAULT_MAX_BYTES,
    allow_private_networks: bool = False,
) -> bytes:
    """The body at ``url``; raises ``FetchError`` past ``timeout`` seconds or ``max_bytes``."""
    return Fetcher(
        timeout=timeout,
        max_bytes=max_bytes,
        allow_private_networks=allow_private_networks,
        follow_redirects=False,
    ).get(url)
