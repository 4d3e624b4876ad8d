"""``{% idle_timeout_seconds %}``: the idle timeout for the page's logoff timer (a tag, because a
context processor would need hisp/settings.py)."""

from __future__ import annotations

from typing import Any

from django import template

from webmail import idle

register = template.Library()


@register.simple_tag(takes_context=True)
def idle_timeout_seconds(context: dict[str, Any]) -> int:
    return idle.timeout_seconds(context["request"])
