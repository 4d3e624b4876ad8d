"""Who may see the admin console, and the one lookup per object type.

Only staff who have passed the second factor reach a console page. An anonymous visitor is sent
to the webmail sign-in; a signed-in user who is not staff gets 404, so the console's existence
is not confirmed to them; staff who signed in with a password only are sent to the OTP step.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.cache import add_never_cache_headers

from hisp.models import (
    Address,
    Certificate,
    Delivery,
    Domain,
    Message,
    Route,
    TrustAnchor,
    TrustBundle,
)

SIGN_IN_URL_NAME = "webmail:login"
# The webmail's second-factor step (webmail/urls.py); staff verified with a password only go here.
OTP_URL_NAME = "webmail:otp-verify"

View = Callable[..., HttpResponseBase]  # a page, or a streamed download


def staff_required(view: View) -> View:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        user = request.user
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path(), reverse(SIGN_IN_URL_NAME))
        if not (user.is_active and user.is_staff):
            raise Http404
        # is_verified() is installed by django_otp's OTPMiddleware: True only when a confirmed
        # device of this user verified a token in this session.
        if not user.is_verified():
            return redirect_to_login(request.get_full_path(), reverse(OTP_URL_NAME))
        response = view(request, *args, **kwargs)
        add_never_cache_headers(response)  # staff pages show PHI metadata: never cached
        return response

    return wrapper


def get_domain(pk: int) -> Domain:
    return get_object_or_404(Domain.objects.select_related("issuing_ca"), pk=pk)


def get_address(pk: int) -> Address:
    return get_object_or_404(Address.objects.select_related("domain"), pk=pk)


def get_certificate(pk: int) -> Certificate:
    return get_object_or_404(
        Certificate.objects.select_related("address", "domain", "issued_by"), pk=pk
    )


def get_anchor(pk: int) -> TrustAnchor:
    return get_object_or_404(
        TrustAnchor.objects.select_related("certificate", "domain", "bundle"), pk=pk
    )


def get_bundle(pk: int) -> TrustBundle:
    return get_object_or_404(TrustBundle.objects.select_related("domain"), pk=pk)


def get_route(pk: int) -> Route:
    return get_object_or_404(Route, pk=pk)


def get_message(pk: int) -> Message:
    # Metadata only: the stored bytes are never loaded for console pages.
    return get_object_or_404(Message.objects.defer("raw", "content"), pk=pk)


def get_delivery(pk: int) -> Delivery:
    return get_object_or_404(
        Delivery.objects.defer("wire").select_related("message").defer(
            "message__raw", "message__content"
        ),
        pk=pk,
    )
