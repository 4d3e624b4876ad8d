"""Who is calling: HTTP Basic (RFC 7617) with the credentials of the submission and POP3 ports.

A user without a second factor signs in with the account password; one with a second factor
only with an app password made for the program in the webmail's settings, so the account
password alone never opens a mailbox that the webmail guards with a second factor. Guessing is
limited by the same counters as the mail ports (hisp/smtp/credentials.py): an attempt over the
limit is answered 429 before any password is checked.

Nothing here reads or writes a session: a browser's webmail cookie gives no access to the API,
and the API never sets one.

A password hash costs about a third of a second, and every check hashes twice (the mail ports
answer in the same time whatever the login): a program reading fifty messages would spend half a
minute of CPU on it. So an *app password* that was accepted is remembered for REMEMBER_FOR under
a keyed HMAC of login and password, with a digest of its stored hash: while the row is unchanged
and its user active, the next request is answered without hashing, and deleting the app password
or deactivating the user ends it at once. Account passwords are never remembered: they are
chosen by people, and an HMAC is no slow hash should the cache and SECRET_KEY both leak, whereas
an app password is 96 random bits (webmail.services.create_app_password).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.cache import add_never_cache_headers
from django.utils.crypto import salted_hmac
from django.views.decorators.csrf import csrf_exempt

from hisp.models import AppPassword
from hisp.smtp import credentials
from webmail.api.responses import ApiError, error

log = logging.getLogger(__name__)

View = Callable[..., HttpResponse]
REALM = 'Basic realm="HISP mail API", charset="UTF-8"'
JSON = "application/json"
RFC822 = "message/rfc822"
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
MAX_JSON_BYTES = 64 * 1024  # a JSON body that is not a message: flags, folder names
REMEMBER_FOR = 10 * 60  # seconds an accepted app password is answered without hashing
_MEMO_PURPOSE = "webmail.api.auth.accepted-app-password"


def _unauthorised(message: str) -> HttpResponse:
    return error(401, "unauthorised", message, WWW_Authenticate=REALM)


def _basic(request: HttpRequest) -> tuple[str, str] | None:
    scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    login, colon, password = decoded.partition(":")
    if not colon or not login or not password:
        return None
    return login, password


def _memo_key(login: str, password: str) -> str:
    # Normalised as credentials._verify finds the user: " Alice" and "alice" are one account.
    given = f"{login.strip().lower()}\0{password}"
    return "hisp:api:accepted:" + salted_hmac(_MEMO_PURPOSE, given, algorithm="sha256").hexdigest()


def _digest(row: AppPassword) -> str:
    return hashlib.sha256(row.password_hash.encode()).hexdigest()


def _remembered(login: str, password: str) -> AbstractBaseUser | None:
    key = _memo_key(login, password)
    try:
        memo = cache.get(key)
    except Exception:  # the cache away: check the password the slow way
        log.warning("mail API: the cache is unreachable", exc_info=True)
        return None
    if not memo:
        return None
    user_pk, row_pk, digest = memo
    row = (
        AppPassword.objects.filter(pk=row_pk, user_id=user_pk, user__is_active=True)
        .select_related("user").first()
    )
    if row is None or _digest(row) != digest:
        cache.delete(key)
        return None
    return row.user


def _remember(login: str, password: str, user: AbstractBaseUser) -> None:
    row = credentials.app_password_selected(user, password)
    if row is None:
        return  # the account password: never remembered (see the module's text)
    try:
        cache.set(_memo_key(login, password), (user.pk, row.pk, _digest(row)), REMEMBER_FOR)
    except Exception:
        log.warning("mail API: the cache is unreachable", exc_info=True)


def _authenticate(request: HttpRequest, login: str, password: str) -> HttpResponse | None:
    """Set ``request.user``, or the answer that refuses the caller."""
    user = _remembered(login, password)
    if user is not None:
        request.user = user
        return None
    try:
        outcome = credentials.check(login, password, client=request.META.get("REMOTE_ADDR") or "")
    except Exception:
        log.exception("mail API: credentials could not be checked")
        return error(503, "unavailable", "sign-in cannot be checked now; try again shortly",
                     Retry_After="30")
    if outcome.throttled:
        return error(429, "too-many-attempts", "too many failed sign-ins; try again later",
                     Retry_After=str(credentials.FAILURE_WINDOW))
    if outcome.user is None:
        return _unauthorised("the user name or password is wrong")
    _remember(login, password, outcome.user)
    request.user = outcome.user
    return None


def media_type(request: HttpRequest) -> str:
    return request.META.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()


def json_body(request: HttpRequest, *, limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """The request's JSON object, or a 400 that says what is wrong with it."""
    if len(request.body) > limit:
        raise ApiError(413, "too-large", f"the JSON body is larger than {limit} bytes")
    try:
        body = json.loads(request.body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "bad-json", f"the body is not JSON: {exc}") from None
    except RecursionError:  # nested deeper than the parser's stack: no request needs that
        raise ApiError(400, "bad-json", "the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad-json", "the body must be a JSON object")
    return body


def api_view(*methods: str, body_types: tuple[str, ...] = (JSON,)) -> Callable[[View], View]:
    """Authenticate the caller as ``request.user`` and answer every failure as JSON.

    A body must be one of ``body_types``: a cross-site HTML form can only send form or text
    bodies, so a browser holding the user's Basic credentials cannot be made to post here.
    """
    allowed = ", ".join(methods)

    def decorate(view: View) -> View:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            response = _answer(request, view, methods, allowed, body_types, *args, **kwargs)
            add_never_cache_headers(response)  # PHI: no proxy or browser cache keeps it
            return response

        return wrapper

    return decorate


def _answer(
    request: HttpRequest, view: View, methods: tuple[str, ...], allowed: str,
    body_types: tuple[str, ...], *args: Any, **kwargs: Any,
) -> HttpResponse:
    if request.method not in methods:
        return error(405, "method-not-allowed", f"use {allowed}", Allow=allowed)
    if settings.SESSION_COOKIE_SECURE and not request.is_secure():
        # The deployment serves HTTPS (HISP_SECURE_COOKIES): a password sent in the clear has
        # already been exposed, but answering would teach the program that this works.
        return error(403, "https-required", "the mail API answers over HTTPS only")
    if request.method in _WITH_BODY and media_type(request) not in body_types:
        return error(415, "unsupported-media-type",
                     f"send the body as {' or '.join(body_types)}")
    given = _basic(request)
    if given is None:
        return _unauthorised("HTTP Basic authentication with a user name and password is required")
    try:
        refused = _authenticate(request, *given)
        if refused is not None:
            return refused
        return view(request, *args, **kwargs)
    except DatabaseError:
        # The database away or failing: the program is told to retry (a send is one
        # transaction: a failed one took nothing, and its Idempotency-Key stays free).
        log.exception("mail API: database error")
        return error(503, "unavailable", "the mail store cannot be reached now; try again shortly",
                     Retry_After="30")
    except ApiError as exc:
        return error(exc.status, exc.code, exc.message, **exc.headers)
    except Http404:
        return error(404, "not-found", "there is no such object, or it is not yours to see")
    except PermissionDenied as exc:
        return error(403, "forbidden", str(exc) or "you may not do this")
