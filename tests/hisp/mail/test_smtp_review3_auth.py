"""Third review of submission AUTH (hisp.smtp.credentials), on the real cache and database.

Lockout: a few stale mail clients behind one NAT locked out every user behind it, and anyone
could lock any account out everywhere with five failures; now those two limits spare an
account where it signed in before, while the limit per account and address still holds.

Cost: each app password was hashed in turn, so the answer's time told how many a user has and
which matched. Hash computations are counted (a real hasher that counts), not timed."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import MD5PasswordHasher, make_password
from django.core.cache import cache
from django_otp.plugins.otp_totp.models import TOTPDevice

from hisp.models import AppPassword
from hisp.smtp import credentials
from hisp.smtp.credentials import FAILURE_LIMIT, app_password_hash, check

PASSWORD = "correct horse battery"
NAT = "198.51.100.7"
HOME = "192.0.2.10"


@pytest.fixture(autouse=True)
def _fresh_counts():
    cache.clear()
    yield
    cache.clear()


def _user(name: str):
    return get_user_model().objects.create_user(username=name, password=PASSWORD)


# --- Lockout ----------------------------------------------------------------------------------


def test_stale_clients_of_other_users_behind_a_nat_do_not_lock_out_one_who_signed_in_there(db):
    """A clinic behind one address: alice's mail client signs in as usual; then five
    colleagues' clients keep an old password. Spraying is still stopped there (an account
    never seen at that address is throttled), but alice goes on working."""
    alice = _user("alice")
    assert check("alice", PASSWORD, client=NAT).user == alice
    for n in range(FAILURE_LIMIT):
        _user(f"colleague{n}")
        assert check(f"colleague{n}", "old password", client=NAT) == credentials.Outcome(None)
    _user("newcomer")
    assert check("newcomer", PASSWORD, client=NAT).throttled
    assert check("alice", PASSWORD, client=NAT).user == alice


def test_failures_from_elsewhere_do_not_lock_the_owner_out_where_they_sign_in(db):
    """Five failures from five addresses throttle the account for every address it has not
    signed in from, not for the owner's usual one."""
    alice = _user("alice")
    assert check("alice", PASSWORD, client=HOME).user == alice
    for n in range(FAILURE_LIMIT):
        assert check("alice", "guess", client=f"203.0.113.{n}").user is None
    assert check("alice", PASSWORD, client="203.0.113.200").throttled
    assert check("alice", PASSWORD, client=HOME).user == alice


def test_a_known_address_still_gets_only_the_limit_of_guesses(db):
    """Being known lifts the account's and the address's limits, never the limit of guesses
    at one account from one address: a guesser behind alice's NAT gets FAILURE_LIMIT tries,
    and then even the right password waits."""
    alice = _user("alice")
    assert check("alice", PASSWORD, client=NAT).user == alice
    for _ in range(FAILURE_LIMIT):
        assert check("alice", "guess", client=NAT) == credentials.Outcome(None)
    assert check("alice", PASSWORD, client=NAT).throttled


def test_the_owners_success_gives_guessers_elsewhere_no_fresh_tries(db):
    """A success used to clear the account's count: a mail client signing in every few
    minutes gave a guesser FAILURE_LIMIT more tries each time."""
    alice = _user("alice")
    for n in range(FAILURE_LIMIT - 1):
        assert check("alice", "guess", client=f"203.0.113.{n}").user is None
    assert check("alice", PASSWORD, client=HOME).user == alice
    assert check("alice", "guess", client="203.0.113.50") == credentials.Outcome(None)
    assert check("alice", "guess", client="203.0.113.51").throttled


def test_the_owners_own_logins_never_use_up_a_limit(db):
    alice = _user("alice")
    for _ in range(3 * FAILURE_LIMIT):
        assert check("alice", PASSWORD, client=HOME).user == alice


# --- Cost -------------------------------------------------------------------------------------


class CountingHasher(MD5PasswordHasher):
    """Django's MD5 hasher (the tests' own, for speed) that counts its hash computations."""

    algorithm = "counted_md5"
    computed = 0

    def encode(self, password, salt):
        CountingHasher.computed += 1
        return super().encode(password, salt)


@pytest.fixture
def counted(settings):
    settings.PASSWORD_HASHERS = [f"{__name__}.CountingHasher"]


def _hashes(login: str, password: str) -> int:
    before = CountingHasher.computed
    check(login, password, client=HOME)
    return CountingHasher.computed - before


def _with_app_passwords(name: str, count: int, *, second_factor: bool = True):
    user = _user(name)
    if second_factor:
        TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    for n in range(count):
        AppPassword.objects.create(
            user=user, name=f"device {n}", password_hash=app_password_hash(f"{name}-app-{n}")
        )
    return user


def test_every_auth_costs_two_hashes_whatever_the_account_holds(db, counted):
    _with_app_passwords("plain", 0, second_factor=False)
    _with_app_passwords("plainapps", 6, second_factor=False)
    _with_app_passwords("none", 0)
    _with_app_passwords("one", 1)
    _with_app_passwords("many", 12)
    attempts = {
        "no such login": ("nobody", PASSWORD),
        "account password, right": ("plain", PASSWORD),
        "account password, wrong": ("plain", "guess"),
        "account password with app passwords, right": ("plainapps", PASSWORD),
        "app password of one without a second factor": ("plainapps", "plainapps-app-5"),
        "second factor, no app password": ("none", PASSWORD),
        "one app password, right": ("one", "one-app-0"),
        "one app password, wrong": ("one", "guess"),
        "twelve app passwords, the first": ("many", "many-app-0"),
        "twelve app passwords, the last": ("many", "many-app-11"),
        "twelve app passwords, wrong": ("many", "guess"),
    }
    costs = {what: _hashes(*attempt) for what, attempt in attempts.items()}
    assert costs == dict.fromkeys(attempts, 2)


def test_the_right_app_password_among_many_still_signs_in_and_is_marked_used(db, counted):
    user = _with_app_passwords("many", 12)
    assert check("many", "many-app-7", client=HOME).user == user
    used = AppPassword.objects.get(name="device 7")
    assert used.last_used_at is not None
    assert not AppPassword.objects.exclude(pk=used.pk).filter(last_used_at__isnull=False).exists()
    assert check("many", "many-app-70", client=HOME).user is None


def test_an_app_password_stored_before_selectors_gets_one_when_first_used(db, counted):
    """Rows made with a random salt (before app_password_hash, or by webmail.services until it
    uses it) are verified one by one once, then keyed: the next AUTH costs two hashes."""
    user = _with_app_passwords("legacy", 0)
    for n in range(4):
        AppPassword.objects.create(
            user=user, name=f"old {n}", password_hash=make_password(f"old-{n}")
        )
    assert check("legacy", "old-3", client=HOME).user == user
    assert _hashes("legacy", "old-3") == 2
    assert check("legacy", "old-0", client=HOME).user == user  # the others still work
    assert credentials._selector_of(AppPassword.objects.get(name="old 3").password_hash)


def test_an_app_password_keyed_before_a_secret_key_rotation_still_works(db, counted, settings):
    user = _with_app_passwords("rotated", 1)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a new secret key for this test, long enough to be a real one"
    assert check("rotated", "rotated-app-0", client=HOME).user == user
    assert _hashes("rotated", "rotated-app-0") == 2
    settings.SECRET_KEY_FALLBACKS = []
    assert check("rotated", "rotated-app-0", client=HOME).user == user


@pytest.mark.django_db
def test_spellings_the_database_takes_for_one_login_share_its_guesses():
    # PostgreSQL's iexact (UPPER = UPPER) finds "alice" by "alıce" (dotless i) and "ſ" by "s":
    # the mail ports' and the API's guess counts must see one account, not three.
    _user("alice.s")
    for login in ("alice.s", "alıce.s", "alice.ſ"):
        for _ in range(FAILURE_LIMIT // 3 + 1):
            check(login, "wrong", client="192.0.2.10")
    assert check("alice.s", "wrong", client="192.0.2.10").throttled
