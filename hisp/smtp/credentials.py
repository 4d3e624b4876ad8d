"""Submission-port credentials: the webmail password, or a per-device app password.

Users with a second factor cannot complete TOTP in a desktop mail client, so for them only app
passwords are accepted (like every major mail provider). Guessing is rate-limited through the
shared cache, so several SMTP processes count together:

- per account: at most FAILURE_LIMIT attempts that were not successes in FAILURE_WINDOW. Each
  attempt is counted before its password is checked (one atomic increment), so sessions trying
  at the same moment cannot all read the count from before the others;
- per client address (an IPv6 client: its /64, see ``address_group``): at most FAILURE_LIMIT
  accounts that failed from there. Counting accounts rather than failures keeps one mail client
  with a stale password from locking out everyone behind the same NAT, and a success does not
  reset it, so an attacker cannot wash the count by logging in to an account of their own.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.utils import timezone

from hisp.models import Address, AddressGrant, AppPassword
from hisp.smtp.protocol import address_group

FAILURE_LIMIT = 5
FAILURE_WINDOW = 15 * 60  # seconds

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
    tried: str  # this account from this client


def _keys(login: str, client: str) -> _Keys:
    # The login is normalised exactly as _verify looks the user up (stripped,
    # case-insensitive): " Alice" and "alice" are one account, so they share one counter.
    # Hashed: the name is whatever the client sent (spaces, control characters, any length),
    # which a cache key must not carry.
    name = hashlib.sha256(login.strip().lower().encode("utf-8", "surrogatepass")).hexdigest()
    group = address_group(client)
    return _Keys(
        account=f"hisp:smtp-auth:login:{name}",
        client=f"hisp:smtp-auth:ip:{group}",
        tried=f"hisp:smtp-auth:ip:{group}:{name}",
    )


def _has_second_factor(user: AbstractBaseUser) -> bool:
    from django_otp import devices_for_user

    return any(True for _ in devices_for_user(user, confirmed=True))


def _count(key: str) -> int:
    """Add one to the counter at ``key`` (started for FAILURE_WINDOW); the new value."""
    with _counting:
        cache.add(key, 0, FAILURE_WINDOW)
        try:
            return int(cache.incr(key))
        except ValueError:  # expired between add and incr
            cache.set(key, 1, FAILURE_WINDOW)
            return 1


def check(login: str, password: str, *, client: str) -> Outcome:
    keys = _keys(login, client)
    if (cache.get(keys.client) or 0) >= FAILURE_LIMIT or _count(keys.account) > FAILURE_LIMIT:
        return Outcome(None, throttled=True)
    user = _verify(login, password)
    if user is None:
        if cache.add(keys.tried, True, FAILURE_WINDOW):  # an account not yet failed from here
            _count(keys.client)
        return Outcome(None)
    cache.delete(keys.account)  # its owner: this attempt and the failures before are forgiven
    return Outcome(user)


def _verify(login: str, password: str) -> AbstractBaseUser | None:
    users = get_user_model()
    name = login.strip()
    # No user name holds a NUL (AUTH LOGIN can send one), and PostgreSQL refuses it even in
    # a query: that would end the session with an error instead of counting a failed login.
    user = None if "\x00" in name else users.objects.filter(
        username__iexact=name, is_active=True
    ).first()
    if user is None:
        # Same cost as a real check, so timing does not reveal which logins exist.
        users().set_password(password)
        return None
    second_factor = _has_second_factor(user)
    if not second_factor and user.check_password(password):
        return user
    apps = list(AppPassword.objects.filter(user=user))
    if second_factor and not apps:
        # Nothing to compare, but an answer without a hash's delay would tell a guesser that
        # this account exists and no password can open it.
        users().set_password(password)
    for app in apps:
        if check_password(password, app.password_hash):
            AppPassword.objects.filter(pk=app.pk).update(last_used_at=timezone.now())
            return user
    return None


def may_send_from(user: AbstractBaseUser, address: str) -> bool:
    grants = AddressGrant.objects.filter(
        user=user, address__address__iexact=address, address__status=Address.Status.ACTIVE
    ).select_related("address")
    return any(grant.may_send for grant in grants)
