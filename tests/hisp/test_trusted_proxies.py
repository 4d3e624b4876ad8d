"""Behind the reverse proxies named in HISP_TRUSTED_PROXIES the client's address comes from
X-Forwarded-For (the rightmost address that is no trusted proxy) and the scheme from
X-Forwarded-Proto, for the audit log, the sign-in lockout and is_secure(); from any other peer
those headers change nothing. Each test also shows the trusted case, so none of them passes
without the middleware."""

from __future__ import annotations

from typing import Any

import pytest
from axes.models import AccessAttempt
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.test import Client

from adminconsole.roles import Role, role_groups
from hisp.models import AuditEvent
from hisp.proxies import parse_networks
from tests.adminconsole.sessions import verified_client
from tests.hisp.mail.test_smtp_review3_limits import start_outcomes
from tests.webmail.otp import current_code
from tests.webmail.personas import PASSWORD, Persona, make_persona

PROXY = "10.0.0.2"  # the reverse proxy the web role sees
INNER = "192.0.2.3"  # a second proxy in front of it (a CDN, a load balancer)
STRANGER = "198.51.100.7"  # reaches the web role directly, not a proxy
CLIENT = "203.0.113.9"
OTHER_CLIENT = "203.0.113.20"


@pytest.fixture
def proxies(settings: Any) -> None:
    settings.HISP_TRUSTED_PROXIES = parse_networks(f"{PROXY}, 192.0.2.0/28, fd00:1::/64")


def _from(peer: str, forwarded_for: str | None = None, **headers: str) -> dict[str, str]:
    extra = {"REMOTE_ADDR": peer, **headers}
    if forwarded_for is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return extra


def _staff_client() -> Client:
    sam = get_user_model().objects.create_user(username="sam", password=PASSWORD, is_staff=True)
    sam.groups.set(role_groups(tuple(Role)))
    return verified_client(sam)


def _audit_view_from(client: Client, **extra: str) -> str | None:
    assert client.get("/console/audit/", **extra).status_code == 200
    return AuditEvent.objects.filter(action="audit.view").latest("pk").client_address


def test_a_console_read_is_audited_with_the_forwarded_client_only_from_a_trusted_proxy(
    db: None, proxies: None
) -> None:
    staff = _staff_client()
    assert _audit_view_from(staff, **_from(PROXY, CLIENT)) == CLIENT
    # The same header from a peer that is no proxy of ours: its own address is the client.
    assert _audit_view_from(staff, **_from(STRANGER, CLIENT)) == STRANGER
    # The trusted proxy without the header: the proxy is all that is known.
    assert _audit_view_from(staff, **_from(PROXY)) == PROXY


def test_with_the_setting_empty_the_proxy_is_the_client_as_before(db: None, settings: Any) -> None:
    staff = _staff_client()
    settings.HISP_TRUSTED_PROXIES = ()
    assert _audit_view_from(staff, **_from(PROXY, CLIENT)) == PROXY
    settings.HISP_TRUSTED_PROXIES = parse_networks(PROXY)
    assert _audit_view_from(staff, **_from(PROXY, CLIENT)) == CLIENT


def _sign_in(persona: Persona, **extra: str) -> Client:
    client = Client()
    response = client.post(
        "/mail/login/", {"username": persona.user.username, "password": PASSWORD}, **extra
    )
    assert response.status_code == 302, response.content[:300]
    response = client.post("/mail/login/code/", {"token": current_code(persona.device)}, **extra)
    assert response.status_code == 302
    return client


def test_a_webmail_sign_in_is_audited_with_the_client_behind_two_proxies(
    db: None, proxies: None
) -> None:
    alice = make_persona("alice", "clinic.example")
    # The client wrote its own entry first; the inner proxy appended the client it saw (with
    # its port), our proxy appended the inner proxy: the client is the rightmost untrusted one.
    chain = f"1.2.3.4, {CLIENT}:51234, {INNER}"
    client = _sign_in(alice, **_from(PROXY, chain))
    assert AuditEvent.objects.get(action="auth.sign-in").client_address == CLIENT
    client.post("/mail/logout/", **_from(STRANGER, "[2001:db8:5::7]:443"))
    assert AuditEvent.objects.get(action="auth.sign-out").client_address == STRANGER
    bob = make_persona("bob", "clinic.example")
    _sign_in(bob, **_from(f"::ffff:{PROXY}", "[2001:db8:5::7]:443, fd00:1::9"))
    assert AuditEvent.objects.get(action="auth.sign-in", actor=bob.user).client_address == (
        "2001:db8:5::7"
    )


def _failed_sign_in(username: str, **extra: str) -> str | None:
    """The address django-axes counts a failed sign-in against."""
    AccessAttempt.objects.filter(username=username).delete()
    Client().post("/mail/login/", {"username": username, "password": "not the password"}, **extra)
    return AccessAttempt.objects.get(username=username).ip_address


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        (PROXY, CLIENT, CLIENT),
        (PROXY, f"{CLIENT}:51234", CLIENT),
        (PROXY, "2001:db8:5::7", "2001:db8:5::7"),
        (PROXY, "[2001:db8:5::7]", "2001:db8:5::7"),
        (PROXY, "[2001:DB8:5:0::7]:443", "2001:db8:5::7"),
        (PROXY, f"::ffff:{CLIENT}", CLIENT),
        (f"::ffff:{PROXY}", CLIENT, CLIENT),
        # The leftmost entries are the client's to write: never taken over the real one.
        (PROXY, f"6.6.6.6, {CLIENT}", CLIENT),
        (PROXY, f"6.6.6.6, {CLIENT}, {INNER}", CLIENT),
        (PROXY, f"6.6.6.6,{CLIENT},fd00:1::9,{INNER}", CLIENT),
        (PROXY, f" , {CLIENT} ,, {INNER} ", CLIENT),
        (PROXY, f"garbage, {CLIENT}", CLIENT),
        # Only trusted hops: an internal client, the leftmost.
        (PROXY, f"{INNER}, 10.0.0.2", INNER),
        # A trusted proxy that could not name its peer: the walk ends at the last hop it knew,
        # never at the client's own claim on the left.
        (PROXY, f"6.6.6.6, unknown, {INNER}", INNER),
    ],
)
def test_the_lockout_counts_the_client_the_proxies_name(
    db: None, proxies: None, peer: str, forwarded_for: str, client: str
) -> None:
    assert _failed_sign_in("someone", **_from(peer, forwarded_for)) == client


@pytest.mark.parametrize(
    "forwarded_for",
    [
        None,
        "",
        " , ,",
        "unknown",
        "proxy.example.org",
        "203.0.113.9:http",
        "203.0.113.9:123456",
        "1.2.3.4.5",
        "010.0.0.1",
        "[2001:db8::1",
        "[2001:db8::1]443",
        "fe80::1%eth0",
        "2001:db8::1/64",
        f"{CLIENT}, unknown",
        "x" * 10_000,
    ],
)
def test_a_missing_or_unreadable_header_leaves_the_proxy_as_the_client(
    db: None, proxies: None, forwarded_for: str | None
) -> None:
    assert _failed_sign_in("garbled", **_from(PROXY, forwarded_for)) == PROXY
    assert _failed_sign_in("control", **_from(PROXY, CLIENT)) == CLIENT


def test_a_peer_that_is_no_address_is_not_trusted(db: None, proxies: None) -> None:
    # gunicorn on a Unix socket reports an empty REMOTE_ADDR.
    assert _failed_sign_in("socket", **_from("", CLIENT)) is None
    assert _failed_sign_in("control", **_from(PROXY, CLIENT)) == CLIENT


def _password_step(username: str, password: str, **extra: str) -> Any:
    return Client().post("/mail/login/", {"username": username, "password": password}, **extra)


def _locked(response: Any) -> bool:
    return response.status_code in (403, 429) and b"Sign-in paused" in response.content


def test_two_clients_behind_one_proxy_do_not_lock_each_other_out(db: None, proxies: None) -> None:
    alice = make_persona("alice", "clinic.example")
    username = alice.user.username
    for _ in range(django_settings.AXES_FAILURE_LIMIT):
        _password_step(username, "a wrong password", **_from(PROXY, CLIENT))
    assert _locked(_password_step(username, PASSWORD, **_from(PROXY, CLIENT)))
    # Another client of the same proxy (through the inner proxy too) is not the one guessing.
    response = _password_step(username, PASSWORD, **_from(PROXY, f"{OTHER_CLIENT}, {INNER}"))
    assert response.status_code == 302 and not _locked(response)


def test_a_spoofed_header_from_an_untrusted_peer_does_not_escape_the_lockout(
    db: None, proxies: None
) -> None:
    alice = make_persona("alice", "clinic.example")
    username = alice.user.username
    for n in range(django_settings.AXES_FAILURE_LIMIT):
        _password_step(username, "a wrong password", **_from(STRANGER, f"203.0.113.{n + 1}"))
    assert _locked(_password_step(username, PASSWORD, **_from(STRANGER, "203.0.113.99")))
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {STRANGER}
    # The same guesses through the proxy are counted per client, each under the limit.
    for n in range(django_settings.AXES_FAILURE_LIMIT):
        _password_step(username, "a wrong password", **_from(PROXY, f"203.0.113.{n + 1}"))
    assert not _locked(_password_step(username, PASSWORD, **_from(PROXY, "203.0.113.99")))


def _hsts(**extra: str) -> bool:
    """Whether SecurityMiddleware took the request for HTTPS (it sends HSTS only then)."""
    return "Strict-Transport-Security" in Client().get("/mail/login/", **extra)


def test_only_a_trusted_proxy_makes_a_request_secure(
    db: None, settings: Any, proxies: None
) -> None:
    settings.SECURE_HSTS_SECONDS = 3600
    assert _hsts(**_from(PROXY, CLIENT, HTTP_X_FORWARDED_PROTO="https"))
    assert _hsts(**_from(PROXY, HTTP_X_FORWARDED_PROTO="HTTPS"))
    # An appended list: the last value is our proxy's, the first the client's.
    assert _hsts(**_from(PROXY, HTTP_X_FORWARDED_PROTO="http, https"))
    assert not _hsts(**_from(PROXY, HTTP_X_FORWARDED_PROTO="https, http"))
    assert not _hsts(**_from(PROXY, HTTP_X_FORWARDED_PROTO="http"))
    assert not _hsts(**_from(PROXY))
    assert not _hsts(**_from(STRANGER, HTTP_X_FORWARDED_PROTO="https"))
    assert not _hsts(**_from("127.0.0.1", HTTP_X_FORWARDED_PROTO="https"))


def _csrf_checked_sign_in(**extra: str) -> int:
    """A sign-in form posted from the HTTPS page (Origin https://testserver), CSRF enforced."""
    client = Client(enforce_csrf_checks=True)
    extra["HTTP_HOST"] = "testserver"  # as a proxy passes it on (else Django adds the port)
    client.get("/mail/login/", **extra)
    token = client.cookies[django_settings.CSRF_COOKIE_NAME].value
    form = {"username": "nobody", "password": "not the password", "csrfmiddlewaretoken": token}
    return client.post("/mail/login/", form, HTTP_ORIGIN="https://testserver", **extra).status_code


def test_a_form_posted_over_https_through_the_proxy_passes_the_csrf_origin_check(
    db: None, proxies: None
) -> None:
    # CsrfViewMiddleware compares Origin with the scheme it sees: behind the proxy that was
    # http, so the browser's https origin was refused unless listed in CSRF_TRUSTED_ORIGINS.
    assert _csrf_checked_sign_in(**_from(PROXY, CLIENT, HTTP_X_FORWARDED_PROTO="https")) == 200
    assert _csrf_checked_sign_in(**_from(STRANGER, HTTP_X_FORWARDED_PROTO="https")) == 403


BAD = [
    ("proxy.example.org", "not an IP address or CIDR network"),
    ("10.0.0.0/33", "not an IP address or CIDR network"),
    ("10.0.0.5/24", "has host bits set"),
    ("10.0.0.1, [::1]", "'[::1]' is not an IP address"),
    ("0.0.0.0/0", "would trust every client"),
    ("::/0", "would trust every client"),
]


def test_a_bad_entry_stops_the_start_naming_the_setting(tmp_path: Any) -> None:
    cases = [f"HISP_TRUSTED_PROXIES={value}" for value, _ in BAD]
    cases.append("HISP_TRUSTED_PROXIES=10.0.0.2, 172.16.0.0/12 ,fd00:1::/64,")
    outcomes = start_outcomes(tmp_path, cases, unset="HISP_TRUSTED_PROXIES")
    for (value, words), outcome in zip(BAD, outcomes, strict=False):
        assert outcome.startswith("ImproperlyConfigured: HISP_TRUSTED_PROXIES: "), value
        assert words in outcome, (value, outcome)
    assert outcomes[-1] == "started"
