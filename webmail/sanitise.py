"""HTML from mail and from C-CDA narrative blocks, made safe to show (nh3, i.e. ammonia).

Images and every other remote-content carrier are dropped, not proxied: opening a message must
not tell a third party that it was read. The CSP (img-src 'self' data:) is the second wall.

The HTML parser under nh3 (html5ever) spends time proportional to the depth of open elements
for each block-level tag, so deeply nested markup costs quadratic time: 40,000 nested ``<div>``
(200 KB) take seconds, a few MB take hours. ``renderable`` refuses such HTML cheaply first.
"""

from __future__ import annotations

import re

import nh3
from django.utils.safestring import SafeString, mark_safe

_TAGS = set(nh3.ALLOWED_TAGS) - {"img", "map", "area"}
_ATTRIBUTES = {
    tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items() if tag in _TAGS
}
_URL_SCHEMES = {"http", "https", "mailto"}

MAX_HTML_CHARS = 2 * 1024 * 1024
MAX_HTML_DEPTH = 500
# A start or end tag. [^<>]* never crosses another "<", and the quantifiers are possessive: with
# plain ones a "<" that is never closed had its run split between the name and the rest every
# way before failing, quadratic in the run (a 32 KB run took seconds; found by fuzzing).
_TAG = re.compile(r"<(/?)([A-Za-z][^\s/<>]*+)[^<>]*+>")
# A lone surrogate (from a charset such as utf-7 or unicode_escape that can decode to one)
# cannot be encoded as UTF-8, which nh3 and the page response need.
_SURROGATE = re.compile("[\ud800-\udfff]")
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "param", "source", "track", "wbr"})


def renderable(html: str) -> bool:
    """Small and shallow enough to sanitise in bounded time. The depth is an over-estimate
    (implicitly closed elements count as open), which only errs towards not rendering."""
    if len(html) > MAX_HTML_CHARS:
        return False
    depth = 0
    for match in _TAG.finditer(html):
        if match.group(1):
            depth = max(depth - 1, 0)
        elif match.group(2).lower() not in _VOID:
            depth += 1
            if depth > MAX_HTML_DEPTH:
                return False
    return True


def clean_html(html: str) -> SafeString:
    """The one place mail HTML becomes markup: sanitised by nh3, then marked safe."""
    cleaned = nh3.clean(
        _SURROGATE.sub("\ufffd", html),
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes=_URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
    return mark_safe(cleaned)  # noqa: S308 - nh3 output, sanitised above
