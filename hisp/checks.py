"""Start-up checks (Django system checks run by every management command and the dev server)."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, register

from hisp.keystore import KeystoreError, verify_configured_kek


@register("security")
def key_encryption_key_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    try:
        verify_configured_kek()
    except KeystoreError as exc:
        return [Error(str(exc), id="hisp.E001", hint="see README: key custody")]
    return []
