"""Every mail page needs a password sign-in *and* a verified second factor, and none is kept
in a browser or proxy cache: pages carry PHI, and clinic computers are shared (the Back button
after sign-out must not show a message)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django_otp import user_has_device

View = Callable[..., HttpResponse]


def mail_login_required(view: View) -> View:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = request.user
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not user.is_verified():  # type: ignore[union-attr]  # set by OTPMiddleware
            # Any confirmed device (TOTP or security key) means "verify", never a fresh enrolment.
            target = "webmail:otp-verify" if user_has_device(user) else "webmail:otp-enrol"
            return redirect(f"{reverse(target)}?{urlencode({'next': request.get_full_path()})}")
        response = view(request, *args, **kwargs)
        add_never_cache_headers(response)
        return response

    return wrapper
