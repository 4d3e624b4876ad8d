"""Start-up checks (Django system checks run by every management command and the dev server)."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, register

from hisp.keystore import KeystoreError, verify_configured_kek

# Where the operator finds how the KEK is set and rotated (the README has no such section).
KEK_HINT = "see docs/pki.md, section 'Private keys'"


@register("security")
def key_encryption_key_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    try:
        verify_configured_kek()
    except KeystoreError as exc:
        return [Error(str(exc), id="hisp.E001", hint=KEK_HINT)]
    return []
