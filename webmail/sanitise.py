"""HTML from mail and from C-CDA narrative blocks, made safe to show (nh3, i.e. ammonia).

Images and every other remote-content carrier are dropped, not proxied: opening a message must
not tell a third party that it was read. The CSP (img-src 'self' data:) is the second wall.
"""

from __future__ import annotations

import nh3
from django.utils.safestring import SafeString, mark_safe

_TAGS = set(nh3.ALLOWED_TAGS) - {"img", "map", "area"}
_ATTRIBUTES = {
    tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items() if tag in _TAGS
}
_URL_SCHEMES = {"http", "https", "mailto"}


def clean_html(html: str) -> SafeString:
    """The one place mail HTML becomes markup: sanitised by nh3, then marked safe."""
    cleaned = nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes=_URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
    return mark_safe(cleaned)  # noqa: S308 - nh3 output, sanitised above
