"""Durations written the way operators write them: ``30s``, ``15m``, ``1h``, ``3d``, ``2w``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PART = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str) -> timedelta:
    """Parse ``1h30m``-style durations; a bare number means seconds."""
    value = text.strip().lower()
    if value.isdigit():
        return timedelta(seconds=int(value))
    parts = _PART.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not a duration: {text!r} (use forms like 30s, 15m, 1h, 3d)")
    return sum((timedelta(**{_UNITS[u]: int(n)}) for n, u in parts), timedelta())
