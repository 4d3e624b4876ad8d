"""What a page reports going wrong while a test drives it."""

from __future__ import annotations

from typing import Any


def script_errors(page: Any) -> list[str]:
    """A list that fills with the page's script errors and failed loads as they happen."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    return errors
