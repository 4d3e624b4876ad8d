"""Automatic logoff (HIPAA 164.312(a)(2)(iii)): how long a signed-in page may sit without
talking to the server. The server ends the session after this (SESSION_COOKIE_AGE, slid forward
by every request); static/webmail/idle.js clears the screen and signs out at the same moment, so
an unattended page does not keep showing a message until someone clicks."""

from __future__ import annotations

from django.http import HttpRequest


def timeout_seconds(request: HttpRequest) -> int:
    """The session's own expiry age, not HISP_SESSION_IDLE_TIMEOUT read again: it is what the
    session middleware will enforce (SESSION_COOKIE_AGE, derived from that setting), so the page
    and the server cannot disagree."""
    return int(request.session.get_expiry_age())


def describe(seconds: int) -> str:
    """'15 minutes', '1 minute', '8 seconds': whole minutes once there are any."""
    if seconds >= 60:
        minutes = round(seconds / 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
