"""Submission-port credentials: the webmail password, or a per-device app password.

Users with a second factor cannot complete TOTP in a desktop mail client, so for them only app
passwords are accepted (like every major mail provider).

Guessing is limited through the shared cache, so several SMTP processes count together, each
count over FAILURE_WINDOW. An attempt is counted before its password is checked (one atomic
increment), so sessions trying at the same moment cannot all read the count from before the
others; a success takes back its own count but forgives nothing else (a mail client logs in
every few minutes, and each reset would give a guesser FAILURE_LIMIT more tries).

- per account and client address (an IPv6 client: its /64, see ``address_group``): at most
  FAILURE_LIMIT attempts. This is the guessing limit, and nothing lifts it;
- per account, from every address together: at most FAILURE_LIMIT attempts (guessing from
  many addresses at once);
- per client address: at most FAILURE_LIMIT accounts failed from there (one password tried
  on many accounts). Counting accounts rather than failures keeps one mail client with a stale
  password from counting more than once.

The last two let anyone lock an account out, and a few stale mail clients behind a NAT lock
out every user behind it. So they do not apply to an account at an address where it signed in
within KNOWN_CLIENT_TTL: NIST SP 800-63B section 5.2.2 names "IP addresses from which the
subscriber has been successfully authenticated before" as a way to keep rate limiting from
locking out the claimant, and OWASP's device cookies (the Authentication cheat sheet) are the
same idea where, as in SMTP AUTH, there is no cookie. It gives a guesser nothing it could
not have anyway: only one sharing that address gains, and the first limit still holds it to
FAILURE_LIMIT guesses per window, as any other address is held before the account limit. A
success never clears the address's count of accounts, so logging in to an account of one's own
does not wash it for the others.

What a client cannot be told apart by is its password: five devices with stale app passwords
at one address use up that address's guesses at their own account just as a guesser would.

An attempt that could not be checked (the database away) is taken back as well: it guessed
nothing, and counting it locked out every mail client that retried through an outage.

Each AUTH costs exactly two password hashes, whatever the login and whichever credential
matches (see :func:`_verify`), so its time says nothing about the account.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password, make_password
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.utils import timezone
from django.utils.crypto import salted_hmac

from hisp.models import Address, AddressGrant, AppPassword
from hisp.smtp.protocol import address_group

FAILURE_LIMIT = 5
FAILURE_WINDOW = 15 * 60  # seconds
KNOWN_CLIENT_TTL = 30 * 24 * 3600  # seconds: a month of a mail client's regular logins

# Redis counts atomically; the file cache of the quick start reads and writes, so the
# listener's threads take turns.
_counting = threading.Lock()


@dataclass(frozen=True)
class Outcome:
    user: AbstractBaseUser | None
    throttled: bool = False


@dataclass(frozen=True)
class _Keys:
    account: str
    client: str
    tried: str  # this account failed from this client (counted once for the client)
    attempts: str  # attempts at this account from this client
    known: str  # this account signed in from this client


def _keys(login: str, client: str) -> _Keys:
    # The login is normalised as _verify looks the user up (stripped, case-insensitive):
    # " Alice" and "alice" are one account, so they share one counter. Upper case, as the
    # database compares (iexact is UPPER(a) = UPPER(b)): lower case would leave "alıce" (dotless
    # i) and "ſ" (long s), which find the same account, each FAILURE_LIMIT guesses of their own.
    # Hashed: the name is whatever the client sent (spaces, control characters, any length),
    # which a cache key must not carry.
    name = hashlib.sha256(login.strip().upper().encode("utf-8", "surrogatepass")).hexdigest()
    group = address_group(client)
    return _Keys(
        account=f"hisp:smtp-auth:login:{name}",
        client=f"hisp:smtp-auth:ip:{group}",
        tried=f"hisp:smtp-auth:ip:{group}:{name}",
        attempts=f"hisp:smtp-auth:attempts:{group}:{name}",
        known=f"hisp:smtp-auth:known:{group}:{name}",
    )


def _has_second_factor(user: AbstractBaseUser) -> bool:
    from django_otp import devices_for_user

    return any(True for _ in devices_for_user(user, confirmed=True))


def count(key: str, window: int = FAILURE_WINDOW) -> int:
    """Add one to the counter at ``key`` (started for ``window`` seconds); the new value. Also
    the mail API's request count (webmail/api/auth.py)."""
    with _counting:
        cache.add(key, 0, window)
        try:
            return int(cache.incr(key))
        except ValueError:  # expired between add and incr
            cache.set(key, 1, window)
            return 1


def _take_back(key: str) -> None:
    with _counting:
        try:
            cache.decr(key)
        except ValueError:  # the window ended meanwhile: nothing left to take back
            pass


def check(login: str, password: str, *, client: str) -> Outcome:
    keys = _keys(login, client)
    known = bool(cache.get(keys.known))
    if not known and (cache.get(keys.client) or 0) >= FAILURE_LIMIT:
        return Outcome(None, throttled=True)
    if count(keys.attempts) > FAILURE_LIMIT:
        return Outcome(None, throttled=True)
    if count(keys.account) > FAILURE_LIMIT and not known:
        return Outcome(None, throttled=True)
    try:
        user = _verify(login, password)
    except Exception:
        # Our failure (the database away), not a guess: the client is told so (454) and
        # retries, and its attempts must not count, or every mail client retrying through an
        # outage would be locked out for FAILURE_WINDOW after it (FAILURE_LIMIT retries).
        _take_back(keys.attempts)
        _take_back(keys.account)
        raise
    if user is None:
        if cache.add(keys.tried, True, FAILURE_WINDOW):  # an account not yet failed from here
            count(keys.client)
        return Outcome(None)
    _take_back(keys.attempts)
    _take_back(keys.account)
    cache.set(keys.known, True, KNOWN_CLIENT_TTL)
    return Outcome(user)


# --- Verifying a password at a fixed cost -------------------------------------------------------
# An app password is stored as Django's hash whose salt is a selector: a keyed HMAC of the
# password itself, which is found without hashing, so only that one row is verified. An app
# password is 96 random bits (webmail.services), so a selector that someone holding both the
# database and SECRET_KEY could test guesses against quickly still leaves 2**96 to try; the
# slow hash is kept for rows of any other kind. Rows from before selectors (any other salt) are
# verified one by one, and get their selector when they first match.
_SELECTOR_MARK = "hispsel1"
_SELECTOR_PURPOSE = "hisp.smtp.credentials.app-password-selector"


def _selectors(password: str) -> list[str]:
    """The selector of ``password`` under SECRET_KEY, then under each of its fallbacks (rows
    keyed before a rotation are still found, and keyed again when they match)."""
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return [
        _SELECTOR_MARK
        + salted_hmac(_SELECTOR_PURPOSE, password, secret=secret, algorithm="sha256").hexdigest()[
            :32
        ]
        for secret in secrets
    ]


def app_password_hash(clear: str) -> str:
    """What to store for a new app password (AppPassword.password_hash): Django's hash with
    the password's selector as its salt, so AUTH verifies it with one hash among any number."""
    return make_password(clear, salt=_selectors(clear)[0])


def app_password_selected(user: AbstractBaseUser, password: str) -> AppPassword | None:
    """The user's app password row that ``password`` selects, found without hashing: only for
    a password :func:`check` has just accepted (its selector names one row, or none when it was
    the account password)."""
    selector = _selectors(password)[0]
    rows = AppPassword.objects.filter(user=user).only("pk", "user_id", "password_hash")
    return next((row for row in rows if _selector_of(row.password_hash) == selector), None)


def _selector_of(encoded: str) -> str | None:
    # Every Django hash reads algorithm$...$hash, the salt somewhere between.
    return next(
        (part for part in encoded.split("$")[1:-1] if part.startswith(_SELECTOR_MARK)), None
    )


def _spend_one_hash(password: str) -> None:
    """As long as checking a password against a stored hash, for a slot with nothing to check."""
    make_password(password)


def _matching_app_password(user: AbstractBaseUser, password: str) -> AppPassword | None:
    rows = list(AppPassword.objects.filter(user=user).only("pk", "password_hash"))
    selectors = _selectors(password)
    by_selector = {_selector_of(row.password_hash): row for row in rows}
    row = next((by_selector[s] for s in selectors if s in by_selector), None)
    if row is not None:
        if not check_password(password, row.password_hash):
            return None  # another password with the same 128-bit selector: never in practice
        if _selector_of(row.password_hash) != selectors[0]:
            _key(row, password)
        return row
    _spend_one_hash(password)
    for row in rows:
        if _selector_of(row.password_hash) is None and check_password(password, row.password_hash):
            _key(row, password)
            return row
    return None


def _key(row: AppPassword, password: str) -> None:
    """Store ``row`` with its selector under the current SECRET_KEY (conditional: a row
    replaced or deleted meanwhile is left as it is)."""
    AppPassword.objects.filter(pk=row.pk, password_hash=row.password_hash).update(
        password_hash=app_password_hash(password)
    )


def _verify(login: str, password: str) -> AbstractBaseUser | None:
    """The user whose account password or app password ``password`` is, else None.

    Always two hashes: one for the account password (users without a second factor) and one for
    the app passwords (see :func:`_matching_app_password`), a throwaway hash standing in for
    whatever there is nothing to check. Returning at the first match, or hashing once per app
    password, let the time of the answer tell a guesser whether the login exists, whether it
    has a second factor, and how many app passwords it has."""
    users = get_user_model()
    name = login.strip()
    # No user name holds a NUL (AUTH LOGIN can send one), and PostgreSQL refuses it even in
    # a query: that would end the session with an error instead of counting a failed login.
    user = None if "\x00" in name else users.objects.filter(
        username__iexact=name, is_active=True
    ).first()
    if user is None:
        _spend_one_hash(password)
        _spend_one_hash(password)
        return None
    if _has_second_factor(user):
        _spend_one_hash(password)
        by_account_password = False
    else:
        by_account_password = user.check_password(password)
    app = _matching_app_password(user, password)
    if app is not None:
        AppPassword.objects.filter(pk=app.pk).update(last_used_at=timezone.now())
    return user if by_account_password or app is not None else None


def may_send_from(user: AbstractBaseUser, address: str) -> bool:
    grants = AddressGrant.objects.filter(
        user=user, address__address__iexact=address, address__status=Address.Status.ACTIVE
    ).select_related("address")
    return any(grant.may_send for grant in grants)
