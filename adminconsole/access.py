"""Who may see the admin console, and the one lookup per object type.

Only staff who have passed the second factor reach a console page. An anonymous visitor is sent
to the webmail sign-in; a signed-in user who is not staff gets 404, so the console's existence
is not confirmed to them; staff who signed in with a password only are sent to the OTP step.

Past that, each view needs one of the roles in adminconsole.roles: ``@needs(Role.X, ...)``
under ``@staff_required``. A view without ``@needs`` is a read-only page open to any role
(``ANY_ROLE``); ``@open_to_all_staff`` marks the one page a staff member with no role sees.
A refusal is a 403 naming the role, and an audit event.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers

from adminconsole.roles import Role, roles_of
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
from hisp.services import audit

SIGN_IN_URL_NAME = "webmail:login"
# The webmail's second-factor step (webmail/urls.py); staff verified with a password only go here.
OTP_URL_NAME = "webmail:otp-verify"

View = Callable[..., HttpResponseBase]  # a page, or a streamed download

ANY_ROLE: tuple[Role, ...] = tuple(Role)
_ROLES_ATTR = "console_roles"
_CHECKED_ATTR = "console_staff_checked"


def needs(*roles: Role) -> Callable[[View], View]:
    """The roles (any one of them) a view needs; goes under ``@staff_required``."""
    if not roles:
        raise TypeError("needs() takes at least one role; use open_to_all_staff for none")

    def mark(view: View) -> View:
        if getattr(view, _CHECKED_ATTR, False):
            # Above staff_required the mark would come too late to be read: refuse to start
            # rather than leave the view open to every role.
            raise TypeError(f"{view.__name__}: put @needs below @staff_required")
        setattr(view, _ROLES_ATTR, tuple(Role(role) for role in roles))
        return view

    return mark


def open_to_all_staff(view: View) -> View:
    """A page any verified staff member sees, even one who holds no role yet."""
    if getattr(view, _CHECKED_ATTR, False):
        raise TypeError(f"{view.__name__}: put @open_to_all_staff below @staff_required")
    setattr(view, _ROLES_ATTR, ())
    return view


def roles_needed(view: View) -> tuple[Role, ...]:
    """The roles (any one) a console view needs; empty for a page open to all staff."""
    return tuple(getattr(view, _ROLES_ATTR, ANY_ROLE))


def refused(request: HttpRequest, roles: tuple[Role, ...]) -> HttpResponseBase:
    """403 naming the role needed, recorded: an attempt beyond one's role is what an auditor
    of separated duties looks for."""
    match = request.resolver_match
    url_name = match.url_name if match is not None else ""
    audit.record(
        action="console.refused",
        obj=("console-url", url_name or request.path),
        request=request,
        url_name=url_name,
        method=request.method,
        # Which object was aimed at: the URL's ids (a pk, a transition), never a query string.
        target={key: str(value) for key, value in (match.kwargs if match else {}).items()},
        roles_needed=[role.value for role in roles],
    )
    return render(
        request,
        "adminconsole/refused.html",
        {"roles_needed": [role.label for role in roles]},
        status=403,
    )


def staff_required(view: View) -> View:
    needed = roles_needed(view)

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
        held = roles_of(user)
        request.staff_roles = held  # type: ignore[attr-defined]  # read by the templates
        if needed and not any(held.holds(role) for role in needed):
            response = refused(request, needed)
        else:
            response = view(request, *args, **kwargs)
        add_never_cache_headers(response)  # staff pages show PHI metadata: never cached
        return response

    setattr(wrapper, _CHECKED_ATTR, True)
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
