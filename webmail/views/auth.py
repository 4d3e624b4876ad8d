"""Sign-in (password, then a TOTP code or a security key), second-factor enrolment, sign-out,
app passwords."""

from __future__ import annotations

import math
from base64 import b32encode
from urllib.parse import urlencode

import segno
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.contrib.auth.signals import user_login_failed
from django.contrib.auth.views import LoginView, PasswordChangeView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST
from django_otp import login as otp_login
from django_otp import user_has_device
from django_otp.plugins.otp_totp.models import TOTPDevice

from hisp.models import AppPassword
from hisp.services.audit import record
from webmail import access, idle, securitykeys, services
from webmail.decorators import mail_login_required
from webmail.forms import AppPasswordForm, SecurityKeyAssertionForm, SignInForm, TokenForm
from webmail.models import WebAuthnDevice


class SignInView(LoginView):
    """Step one: the password (authenticate() runs through django-axes, which counts failures
    and locks out). Step two is ``otp_verify`` (a TOTP code, or ``key_sign_in`` with a security
    key) or, on first sign-in, ``otp_enrol``."""

    template_name = "webmail/login.html"
    authentication_form = SignInForm


def _next_url(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                       require_https=request.is_secure()):
        return target
    return reverse("webmail:inbox")


@login_required
@require_http_methods(["GET", "POST"])
@sensitive_post_parameters("token")
def otp_verify(request: HttpRequest) -> HttpResponse:
    devices = list(TOTPDevice.objects.filter(user_id=request.user.pk, confirmed=True))
    keys = _security_keys(request)
    if not devices and not keys:
        return redirect("webmail:otp-enrol")
    form = TokenForm(request.POST or None)
    if request.method == "POST" and devices and form.is_valid():
        tried = False
        waits: list[float] = []
        for device in devices:
            allowed, why = device.verify_is_allowed()
            tried = tried or allowed
            if not allowed and why and why.get("locked_until"):
                waits.append((why["locked_until"] - timezone.now()).total_seconds())
            # verify_token throttles itself: each failure doubles the wait before the next try.
            if allowed and device.verify_token(form.cleaned_data["token"]):
                otp_login(request, device)
                record(action="auth.sign-in", obj=request.user, request=request)
                return redirect(_next_url(request))
        if not tried:
            form.add_error("token", _throttled(min(waits, default=60.0)))
        else:
            form.add_error("token", "That code is not right. Check your authenticator app.")
            _count_failure(request)
        record(action="auth.otp-failed", obj=request.user, request=request)
    return render(request, "webmail/otp_verify.html", {
        "form": form if devices else None,
        "next": _next_url(request),
        "key_form": SecurityKeyAssertionForm() if keys else None,
        "key_options": (securitykeys.authentication_options(session=request.session, devices=keys)
                        if keys else None),
    })


def _throttled(seconds: float) -> str:
    """The wait after wrong codes, as long as it really is: it doubles with each wrong code
    (1 s after the first), and a flat "wait a minute" after one typo sent people away."""
    wait = max(1, math.ceil(seconds))
    if wait < 60:
        return (f"Too many wrong codes in a row. Wait {wait} second{'s' if wait > 1 else ''}, "
                "then enter the code your app shows now.")
    return (f"Too many wrong codes in a row. Wait {math.ceil(wait / 60)} minutes, then enter "
            "the code your app shows now.")


def _security_keys(request: HttpRequest) -> list[WebAuthnDevice]:
    return list(WebAuthnDevice.objects.filter(user_id=request.user.pk, confirmed=True))


def _count_failure(request: HttpRequest) -> None:
    """A wrong second factor counts as a failed sign-in for django-axes too, so someone holding
    the password is locked out after HISP_LOGIN_FAILURE_LIMIT wrong codes or key answers."""
    user_login_failed.send(
        sender=__name__, credentials={"username": request.user.get_username()}, request=request,
    )


def _asserted(request: HttpRequest, form: SecurityKeyAssertionForm,
              keys: list[WebAuthnDevice]) -> tuple[WebAuthnDevice, int]:
    if not form.is_valid():
        raise securitykeys.Refused(securitykeys.Reason.MALFORMED)
    try:
        return securitykeys.verify_authentication(
            session=request.session, credential=form.cleaned_data["credential"], devices=keys)
    except RecursionError:
        # JSON nested thousands deep (in the credential or its clientDataJSON) exhausts the
        # parser's stack: refused as malformed, and counted, like any other bad answer.
        raise securitykeys.Refused(securitykeys.Reason.MALFORMED) from None


@login_required
@require_POST
def key_sign_in(request: HttpRequest) -> HttpResponse:
    """The second step with a security key: webauthn.js posts the signed assertion here."""
    keys = _security_keys(request)
    next_url = _next_url(request)
    retry = f"{reverse('webmail:otp-verify')}?{urlencode({'next': next_url})}"
    if not keys:
        return redirect(retry)
    try:
        device, sign_count = _asserted(request, SecurityKeyAssertionForm(request.POST), keys)
    except securitykeys.Refused as refusal:
        record(action="auth.webauthn-failed", obj=request.user, request=request,
               reason=refusal.reason.value)
        _count_failure(request)
        messages.error(request, str(refusal))
        return redirect(retry)
    services.security_key_used(device=device, sign_count=sign_count)
    otp_login(request, device)
    record(action="auth.sign-in", obj=request.user, request=request, factor="webauthn",
           device=device.pk)
    return redirect(next_url)


@login_required
@require_http_methods(["GET", "POST"])
@sensitive_post_parameters("token")
def otp_enrol(request: HttpRequest) -> HttpResponse:
    user = request.user
    if user_has_device(user):
        # Adding a device needs the existing second factor (a code or a key) first.
        return redirect("webmail:otp-verify")
    device = services.pending_totp_device(user=user)
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if device.verify_token(form.cleaned_data["token"]):
            services.confirm_totp_device(device=device, request=request)
            otp_login(request, device)
            messages.success(request, "Your authenticator app is set up.")
            return redirect(_next_url(request))
        form.add_error("token", "That code is not right. Scan the code again and retry.")
    qr_svg = segno.make(device.config_url, error="m").svg_inline(scale=5, dark="#111", light="#fff")
    return render(request, "webmail/otp_enrol.html", {
        "form": form,
        "next": _next_url(request),
        "qr_svg": mark_safe(qr_svg),  # noqa: S308 - segno output from our own otpauth URL
        "secret": b32encode(device.bin_key).decode(),
    })


@require_POST
def sign_out(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        record(action="auth.sign-out", obj=request.user, request=request)
    logout(request)
    return redirect("webmail:login")


@require_POST
def idle_sign_out(request: HttpRequest) -> HttpResponse:
    """Automatic logoff: idle.js posts here when the page sat unused for the idle timeout (it has
    already cleared the screen). Audited as a sign-out with the reason. The session may have
    ended on the server a moment earlier (a laptop woken from sleep): then there is no one to
    audit, and the person still learns why they are at the sign-in page."""
    seconds = idle.timeout_seconds(request)
    if request.user.is_authenticated:
        record(action="auth.sign-out", obj=request.user, request=request, reason="idle")
    logout(request)
    messages.warning(request, f"You were signed out after {idle.describe(seconds)} without "
                              "activity. Sign in again to continue.")
    return redirect("webmail:login")


@mail_login_required
@require_POST
def keep_alive(request: HttpRequest) -> HttpResponse:
    """The idle warning's "Stay signed in": the request itself slides the session's expiry
    forward (SESSION_SAVE_EVERY_REQUEST); there is nothing to answer. Never cached
    (mail_login_required), so every click reaches the server."""
    return HttpResponse(status=204)


@mail_login_required
@require_http_methods(["GET", "POST"])
def app_passwords(request: HttpRequest) -> HttpResponse:
    form = AppPasswordForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        created = services.create_app_password(
            user=request.user, name=form.cleaned_data["name"], request=request
        )
        form = AppPasswordForm()
    rows = AppPassword.objects.filter(user_id=request.user.pk).order_by("-created_at")
    return render(request, "webmail/app_passwords.html", {
        "form": form,
        "app_passwords": rows,
        # What to give an EHR vendor: HISP_WEB_URL is the address the HISP is reached at.
        "api_url": f"{settings.HISP_WEB_URL}/api/v1/",
        "created": created[0] if created else None,
        "created_password": created[1] if created else None,
    })


@mail_login_required
@require_POST
def app_password_delete(request: HttpRequest, app_password_id: int) -> HttpResponse:
    row = access.app_password_for(request.user, app_password_id)
    services.delete_app_password(app_password=row, request=request)
    messages.success(request, f"App password “{row.name}” removed.")
    return redirect("webmail:app-passwords")


class ChangePasswordView(PasswordChangeView):
    template_name = "webmail/password_change.html"
    success_url = reverse_lazy("webmail:account")

    def form_valid(self, form):  # type: ignore[no-untyped-def]
        record(action="auth.password-change", obj=self.request.user, request=self.request)
        messages.success(self.request, "Your password was changed.")
        return super().form_valid(form)


password_change = mail_login_required(ChangePasswordView.as_view())
