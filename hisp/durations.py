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


_NAMES = (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def describe(duration: timedelta) -> str:
    """``3 days``, ``1 day 12 hours``, ``90 seconds``: for people reading a notice, where
    ``str(timedelta)`` would give them ``3 days, 0:00:00``. At most two units; the rest is
    rounded away (a retry period is never that precise)."""
    seconds = max(0, round(duration.total_seconds()))
    if seconds == 0:
        return "0 seconds"
    parts: list[str] = []
    for name, size in _NAMES:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {name}{'' if count == 1 else 's'}")
        if len(parts) == 2 or (parts and not count):
            break
    return " ".join(parts)
