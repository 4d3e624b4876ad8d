"""The byte cache for fetched revocation data and issuer certificates (``agent.cache``)."""

from __future__ import annotations

from agent.cache import ByteCache, MemoryCache

__all__ = ["ByteCache", "MemoryCache"]
