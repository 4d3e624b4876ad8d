"""A patient opens the invitation link, chooses a password, is signed in and goes on to set up
the second factor (``otp_enrol``), which every mail page requires anyway.

As Django's password-reset view does, the link's token is only ever in one request: a usable
one is swapped for its hash in the session and the browser is sent to ``invitation/set-up/``,
so the form, its posts, a CSRF refusal or a Referer never carry the token. The one response
that can be an error with the token in its path is logged with the token cut out.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.utils.log import log_response
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods

from hisp.durations import describe
from hisp.services.audit import record
from webmail import invitations

SESSION_KEY = "_invitation_hash"
REDACTED_PATH = "/mail/invitation/<token>/"


def _page(request: HttpRequest, context: dict[str, object], *, status: int = 200) -> HttpResponse:
    response = render(request, "webmail/invitation.html", context, status=status)
    add_never_cache_headers(response)
    response["Referrer-Policy"] = "no-referrer"
    return response


def _neutral(request: HttpRequest, *, throttled: bool = False, path: str = "") -> HttpResponse:
    """The one page for every unusable link: it never says which way the link failed."""
    request.session.pop(SESSION_KEY, None)
    response = _page(
        request,
        {
            "state": "throttled" if throttled else "invalid",
            "cooloff": describe(settings.AXES_COOLOFF_TIME),
        },
        status=429 if throttled else 404,
    )
    # Logged here, with the token cut out of the path, so Django does not log it whole.
    log_response("%s: %s", response.reason_phrase, path or REDACTED_PATH, response=response,
                 request=request)
    return response


def invitation_link(request: HttpRequest, token: str) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        # Not @require_GET: it logs the refused path whole, token and all, and mail scanners
        # that check a link before the patient clicks it send HEAD (or worse) to exactly it.
        refused = HttpResponseNotAllowed(["GET", "HEAD"])
        log_response("Method Not Allowed (%s): %s", request.method, REDACTED_PATH,
                     response=refused, request=request)
        return refused
    if invitations.throttled(request):
        return _neutral(request, throttled=True)
    try:
        invitation = invitations.find(token=token)
    except invitations.Invalid as failure:
        invitations.record_failure(request=request, failure=failure)
        return _neutral(request)
    request.session[SESSION_KEY] = invitation.token_hash
    record(action="invitation.open", obj=invitation, actor="anonymous", request=request)
    response = redirect("webmail:invitation-set-up")
    response["Referrer-Policy"] = "no-referrer"
    return response


@require_http_methods(["GET", "POST"])
@sensitive_post_parameters("new_password1", "new_password2")
def set_up(request: HttpRequest) -> HttpResponse:
    if invitations.throttled(request):
        return _neutral(request, throttled=True, path=request.path)
    try:
        invitation = invitations.find(token_hash=request.session.get(SESSION_KEY, ""))
        account = invitations.account_for(invitation)
    except invitations.Invalid as failure:
        invitations.record_failure(request=request, failure=failure)
        return _neutral(request, path=request.path)
    form = invitations.InvitationPasswordForm(account, request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = invitations.accept(
                invitation=invitation, password=form.cleaned_data["new_password1"], request=request
            )
        except invitations.Invalid as failure:
            invitations.record_failure(request=request, failure=failure)
            return _neutral(request, path=request.path)
        request.session.pop(SESSION_KEY, None)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        # Password only so far: the second factor comes next (enrolment, or the code of an
        # authenticator the account already has), then the inbox.
        query = urlencode({"next": reverse("webmail:inbox")})
        return redirect(f"{reverse('webmail:otp-enrol')}?{query}")
    return _page(
        request,
        {"state": "form", "form": form, "address": invitation.address, "invitation": invitation,
         "signed_in_as": _someone_else(request, account)},
        status=400 if form.errors else 200,
    )


def _someone_else(request: HttpRequest, account: object) -> str:
    """Who else this browser is signed in as (a clinic's shared computer, a family laptop):
    the page says that setting up signs them out, since login() then ends their session."""
    user = request.user
    if user.is_authenticated and user.pk != getattr(account, "pk", None):
        return user.get_username()
    return ""
