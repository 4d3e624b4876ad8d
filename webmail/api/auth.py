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
and its user active and so named, the next request is answered without hashing, and deleting
the app password or renaming or deactivating the user ends it at once. Account passwords are
never remembered: they are chosen by people, and an HMAC is no slow hash should the cache and
SECRET_KEY both leak, whereas an app password is 96 random bits
(webmail.services.create_app_password).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import time
import traceback
from collections.abc import Callable
from functools import wraps
from typing import Any, NoReturn

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.db import DatabaseError, DataError
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.cache import add_never_cache_headers
from django.utils.crypto import salted_hmac
from django.views.decorators.csrf import csrf_exempt

from hisp.models import AppPassword
from hisp.services import audit
from hisp.smtp import credentials
from webmail.api.responses import ApiError, error
from webmail.uploads import declared_length

log = logging.getLogger(__name__)

View = Callable[..., HttpResponse]
REALM = 'Basic realm="HISP mail API", charset="UTF-8"'
VIA = "api"
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
    # The login must still name the account: a user renamed (or a name given to someone else)
    # is refused at once, not after REMEMBER_FOR. A case folding that Python and PostgreSQL
    # disagree on only costs the slow check.
    if row is None or _digest(row) != digest or not _names(row.user, login):
        cache.delete(key)
        return None
    return row.user


def _names(user: AbstractBaseUser, login: str) -> bool:
    return user.get_username().lower() == login.strip().lower()


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
    except Exception as exc:
        _log_failure("credentials could not be checked", exc)
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


class _Ambiguous(ValueError):
    """JSON that parsers read differently: a repeated key (RFC 8259 section 4 leaves which one
    counts open), or NaN and Infinity, which are not JSON at all."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A proxy or audit tool that keeps the first of {"read": true, "read": false} and Python
    # that keeps the last would disagree about what was asked: such a body is refused.
    body: dict[str, Any] = {}
    for key, value in pairs:
        if key in body:
            raise _Ambiguous(f"the key {json.dumps(key)} is given more than once")
        body[key] = value
    return body


def _not_json(constant: str) -> NoReturn:
    raise _Ambiguous(f"{constant} is not a JSON value")


def _holds_nul(value: Any) -> bool:
    """Whether any key or string holds a NUL: no mail field may, and PostgreSQL stores none
    (a NUL reaching a query was a 503, which a program retries for ever). A loop, not
    recursion: the parser accepted the nesting, the walk must too."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def json_body(request: HttpRequest, *, limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """The request's JSON object, or a 400 that says what is wrong with it."""
    # The declared length first: a body is not read into memory only to be refused.
    if declared_length(request) > limit or len(request.body) > limit:
        raise ApiError(413, "too-large", f"the JSON body is larger than {limit} bytes")
    try:
        # Decoded here: json.loads would guess UTF-16 or UTF-32 from bytes, and RFC 8259
        # section 8.1 allows UTF-8 only.
        body = json.loads(request.body.decode("utf-8"), object_pairs_hook=_unique_keys,
                          parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "bad-json", f"the body is not JSON: {exc}") from None
    except RecursionError:  # nested deeper than the parser's stack: no request needs that
        raise ApiError(400, "bad-json", "the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad-json", "the body must be a JSON object")
    if _holds_nul(body):
        raise ApiError(400, "bad-json", "a string in the body holds a NUL character (\\u0000)")
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
            setattr(request, audit.VIA_ATTRIBUTE, VIA)  # every event of this request: via=api
            response = _answer(request, view, methods, allowed, body_types, *args, **kwargs)
            add_never_cache_headers(response)  # PHI: no proxy or browser cache keeps it
            return response

        return wrapper

    return decorate


def _log_failure(what: str, exc: Exception) -> None:
    """Where it failed, the exception's type and PostgreSQL's SQLSTATE, but not its message: a
    constraint's message quotes the row ("Failing row contains (...)": a subject, an address,
    a login), and logs are no place for PHI."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("mail API: %s: %s (SQLSTATE %s)\n%s", what, type(exc).__name__,
              getattr(exc.__cause__, "sqlstate", None) or "none", frames)


def _rate_limited(user: AbstractBaseUser) -> int | None:
    """Seconds until ``user`` may ask again when over HISP_API_REQUESTS_PER_MINUTE, else None.

    A count per user and clock minute in the shared cache: every program of one user, through
    every web process, shares it. Should the cache be away, requests are not counted."""
    limit = int(settings.HISP_API_REQUESTS_PER_MINUTE)
    if not limit:
        return None
    now = time.time()
    minute = int(now // 60)
    key = f"hisp:api:requests:{user.pk}:{minute}"
    try:
        count = credentials.count(key, window=120)
    except Exception:
        log.warning("mail API: the cache is unreachable; requests are not counted", exc_info=True)
        return None
    if count <= limit:
        return None
    return max(1, math.ceil((minute + 1) * 60 - now))


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
        wait = _rate_limited(request.user)
        if wait is not None:
            return error(429, "rate-limited",
                         f"more than {settings.HISP_API_REQUESTS_PER_MINUTE} requests in a minute; "
                         "slow down", Retry_After=str(wait))
        return view(request, *args, **kwargs)
    except DataError as exc:
        # A value the database cannot store (too long, out of range, a NUL): the request's
        # fault, and the same request again would fail again, so not a 503 to retry.
        _log_failure("a value the database refused", exc)
        return error(400, "bad-request", "a value in the request cannot be stored as given")
    except DatabaseError as exc:
        # The database away or failing: the program is told to retry (a send is one
        # transaction: a failed one took nothing, and its Idempotency-Key stays free).
        _log_failure("database error", exc)
        return error(503, "unavailable", "the mail store cannot be reached now; try again shortly",
                     Retry_After="30")
    except RequestDataTooBig:
        # Past DATA_UPLOAD_MAX_MEMORY_SIZE Django refuses to read the body: its answer would be
        # an HTML 400 page, and the body's size is what is wrong.
        return error(413, "too-large", "the request body is larger than this server accepts")
    except SuspiciousOperation:
        # Django's other refusals of a request (more query fields than
        # DATA_UPLOAD_MAX_NUMBER_FIELDS): a JSON 400, not its HTML page.
        return error(400, "bad-request", "the request is malformed or exceeds this server's limits")
    except ApiError as exc:
        return error(exc.status, exc.code, exc.message, **exc.headers)
    except Http404:
        return error(404, "not-found", "there is no such object, or it is not yours to see")
    except PermissionDenied as exc:
        return error(403, "forbidden", str(exc) or "you may not do this")
    except Exception as exc:
        # Our bug: a program gets JSON it can read, and the log the place, not the message
        # (which may quote PHI).
        _log_failure("unexpected error", exc)
        return error(500, "internal-error", "the server failed; the request may be retried")
