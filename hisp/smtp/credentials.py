"""Submission-port credentials: the webmail password, or a per-device app password.

Users with a second factor cannot complete TOTP in a desktop mail client, so for them only app
passwords are accepted (like every major mail provider). Failures are rate-limited per client
address and per login name through the shared cache, so several SMTP processes count together.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.utils import timezone

from hisp.models import Address, AddressGrant, AppPassword

FAILURE_LIMIT = 5
FAILURE_WINDOW = 15 * 60  # seconds


@dataclass(frozen=True)
class Outcome:
    user: AbstractBaseUser | None
    throttled: bool = False


def _keys(login: str, client: str) -> tuple[str, str]:
    # The login key is normalised exactly as _verify looks the user up (stripped,
    # case-insensitive): " Alice" and "alice" are one account, so they share one counter.
    # Hashed: the name is whatever the client sent (spaces, control characters, any length),
    # which a cache key must not carry.
    name = hashlib.sha256(login.strip().lower().encode("utf-8", "surrogatepass")).hexdigest()
    return (f"hisp:smtp-auth:ip:{client}", f"hisp:smtp-auth:login:{name}")


def _has_second_factor(user: AbstractBaseUser) -> bool:
    from django_otp import devices_for_user

    return any(True for _ in devices_for_user(user, confirmed=True))


def check(login: str, password: str, *, client: str) -> Outcome:
    keys = _keys(login, client)
    if any((cache.get(key) or 0) >= FAILURE_LIMIT for key in keys):
        return Outcome(None, throttled=True)
    user = _verify(login, password)
    if user is None:
        for key in keys:
            cache.add(key, 0, FAILURE_WINDOW)
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.set(key, 1, FAILURE_WINDOW)
        return Outcome(None)
    cache.delete_many(list(keys))
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
    if not _has_second_factor(user) and user.check_password(password):
        return user
    for app in AppPassword.objects.filter(user=user):
        if check_password(password, app.password_hash):
            AppPassword.objects.filter(pk=app.pk).update(last_used_at=timezone.now())
            return user
    return None


def may_send_from(user: AbstractBaseUser, address: str) -> bool:
    grants = AddressGrant.objects.filter(
        user=user, address__address__iexact=address, address__status=Address.Status.ACTIVE
    ).select_related("address")
    return any(grant.may_send for grant in grants)
