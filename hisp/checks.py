"""Start-up checks (Django system checks run by every management command and the dev server)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
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


@register()
def crl_timing_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    # A CRL due for renewal as soon as it is signed would be signed and stored again on every
    # anonymous fetch of the distribution point.
    if settings.HISP_CRL_REFRESH_BEFORE >= settings.HISP_CRL_VALIDITY:
        return [Error(
            f"HISP_CRL_REFRESH_BEFORE ({settings.HISP_CRL_REFRESH_BEFORE}) must be shorter than "
            f"HISP_CRL_VALIDITY ({settings.HISP_CRL_VALIDITY})",
            id="hisp.E002",
            hint="the defaults are 7d and 2d: a CRL lasts a week and is renewed two days early",
        )]
    return []
