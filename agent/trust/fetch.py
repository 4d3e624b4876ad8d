"""Bounded HTTP fetches for CRLs, OCSP and AIA caIssuers (``agent.http``: redirects followed,
each target re-checked)."""

from __future__ import annotations

from agent.http import DEFAULT_TIMEOUT, Fetcher, FetchError

__all__ = ["DEFAULT_TIMEOUT", "FetchError", "Fetcher"]
