"""Sessions that another request ended while this one ran.

Every request saves its session (``SESSION_SAVE_EVERY_REQUEST``: the idle clock restarts on
each one). When a sign-out in another tab, or in the same tab a moment earlier, deletes the
session while a request is still running, Django's middleware cannot save it and answers
``400 Bad Request``: what a clinician saw when a second tab followed a sign-out to the sign-in
page, or when a list refreshed itself as they signed out.

The session is over either way, so that request is answered as any request without a session
is: the sign-in page, with the dead cookie removed. What the view rendered for the ended
session is not sent; its effects (a message sent, a flag set) were committed before the sign-out
took hold, exactly as if the request had finished a moment sooner.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import resolve_url
from django.utils.cache import add_never_cache_headers, patch_vary_headers

log = logging.getLogger(__name__)


class SessionMiddleware(DjangoSessionMiddleware):
    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        try:
            return super().process_response(request, response)
        except SessionInterrupted:
            log.info("session ended by another request while %s %s ran; sent to sign in",
                     request.method, request.path)
            return _signed_out(request)


def _signed_out(request: HttpRequest) -> HttpResponse:
    sign_in = resolve_url(settings.LOGIN_URL)
    if request.method not in ("GET", "HEAD"):
        # Where a form was sent from is unknown: signing in again lands on the default page.
        response = HttpResponseRedirect(sign_in)
    elif request.path == sign_in:
        response = HttpResponseRedirect(request.get_full_path())  # its ?next= kept
    else:
        response = redirect_to_login(request.get_full_path())  # back here after signing in
    response.delete_cookie(
        settings.SESSION_COOKIE_NAME,
        path=settings.SESSION_COOKIE_PATH,
        domain=settings.SESSION_COOKIE_DOMAIN,
        samesite=settings.SESSION_COOKIE_SAMESITE,
    )
    add_never_cache_headers(response)
    patch_vary_headers(response, ("Cookie",))
    return response
