"""Separation of duties in the console: every URL against every role (and none), the refusal a
staff member gets beyond their role (403 naming it, audited, nothing changed), the superuser, and
the pages that leave out what a role may not do. Personas: rita (registration officer), carl
(certificate officer), otto (mail operator), aude (auditor), nora (staff with no role yet),
suzy (superuser without any group)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from adminconsole import access
from adminconsole.roles import Role
from adminconsole.urls import urlpatterns
from hisp.models import AuditEvent, Certificate, TrustBundle
from hisp.services import identity
from tests.adminconsole.sessions import verified_client
from tests.adminconsole.test_access import VIEWS, _call, _url
from tests.adminconsole.test_confirmations import ACTIONS
from tests.adminconsole.world import World

REG, CERT, OPS, AUDIT = Role.REGISTRATION, Role.CERTIFICATES, Role.OPERATIONS, Role.AUDIT
EVERY = frozenset(Role)
QUEUES = frozenset({OPS, AUDIT})

# URL name -> the roles that may use it. Written out here, not read from the views, so a view
# that loses or changes its @needs fails this table.
ALLOWED: dict[str, frozenset[Role]] = {
    "dashboard": EVERY,
    "domain-list": EVERY,
    "domain-add": frozenset({CERT}),
    "domain-detail": EVERY,
    "domain-ca-rollover": frozenset({CERT}),
    "address-list": EVERY,
    "address-add": frozenset({REG}),
    "address-detail": EVERY,
    "address-proofing": frozenset({REG}),
    "address-status": frozenset({REG}),
    "address-status-confirm": frozenset({REG}),
    "address-grant": frozenset({REG}),
    "address-revoke-grant": frozenset({REG}),
    "address-reset-password": frozenset({REG}),
    "address-invite": frozenset({REG}),
    "address-invitation-revoke": frozenset({REG}),
    "certificate-list": EVERY,
    "certificate-detail": EVERY,
    "certificate-pem": EVERY,
    "certificate-issue": frozenset({CERT}),
    "certificate-import": frozenset({CERT}),
    "certificate-revoke": frozenset({CERT}),
    "certificate-renew": frozenset({CERT}),
    "certificate-pkcs12": frozenset({CERT}),
    "anchor-list": EVERY,
    "anchor-import": frozenset({CERT}),
    "anchor-confirm": frozenset({CERT}),
    "anchor-remove": frozenset({CERT}),
    "anchor-export": frozenset({CERT}),
    "bundle-list": EVERY,
    "bundle-add": frozenset({CERT}),
    "bundle-detail": EVERY,
    "bundle-refresh": frozenset({CERT}),
    "bundle-remove": frozenset({CERT}),
    "route-list": EVERY,
    "route-set": frozenset({OPS}),
    "route-delete": frozenset({OPS}),
    "message-list": QUEUES,
    "message-detail": QUEUES,
    "delivery-list": QUEUES,
    "delivery-detail": QUEUES,
    "delivery-retry": frozenset({OPS}),
    "delivery-fail": frozenset({OPS}),
    "discovery": EVERY,
    "discovery-flush": frozenset({OPS}),
    "audit-log": frozenset({AUDIT}),
    "audit-export": frozenset({AUDIT}),
}
PERSONAS = {REG: "rita", CERT: "carl", OPS: "otto", AUDIT: "aude"}


@pytest.fixture
def client_with(make_user: Callable[..., Any]) -> Callable[..., Client]:
    """A verified client of the persona holding ``roles`` (one role, or none: nora)."""
    made: dict[str, Client] = {}

    def make(*roles: Role) -> Client:
        name = PERSONAS[roles[0]] if len(roles) == 1 else "nora"
        if name not in made:
            made[name] = verified_client(make_user(name, staff=True, roles=roles))
        return made[name]

    return make


@pytest.fixture
def issued(db: None) -> Certificate:
    """A certificate the HISP issued itself, which a certificate officer can revoke."""
    identity.add_domain("clinic.example.com")
    address = identity.add_address("dr.who@clinic.example.com", name="Dr Who", address_cert=True)
    return Certificate.objects.get(address=address, binding=Certificate.Binding.ADDRESS)


def _body(response: Any) -> str:
    content = b"".join(response.streaming_content) if response.streaming else response.content
    return content.decode()


def test_the_role_table_covers_every_console_url() -> None:
    names = {p.name for p in urlpatterns if getattr(p, "name", None)}
    assert names == set(ALLOWED) == set(VIEWS)


def test_the_views_need_what_the_table_says() -> None:
    # The dashboard is the one page open to staff with no role; everything else needs one.
    for pattern in urlpatterns:
        needed = set(access.roles_needed(pattern.callback))
        expected = set() if pattern.name == "dashboard" else set(ALLOWED[pattern.name])
        assert needed == expected, pattern.name


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_each_role_reaches_exactly_its_urls(
    client_with: Callable[..., Client], world: World, role: Role
) -> None:
    client = client_with(role)
    wrong = []
    for name in sorted(VIEWS):
        status = _call(client, world, name).status_code
        allowed = role in ALLOWED[name]
        if allowed == (status == 403):
            wrong.append((name, status, "allowed" if allowed else "refused"))
    assert wrong == []


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_a_refusal_is_403_naming_the_role_and_audited(
    client_with: Callable[..., Client], world: World, role: Role
) -> None:
    client = client_with(role)
    for name in sorted(n for n, allowed in ALLOWED.items() if role not in allowed):
        before = AuditEvent.objects.filter(action="console.refused").count()
        response = _call(client, world, name)
        assert response.status_code == 403, name
        body = _body(response)
        assert "Your role does not include this" in body
        for needed in ALLOWED[name]:
            assert needed.label in body, (name, needed)
        assert response["Cache-Control"].startswith("max-age=0")  # never cached, as all pages
        event = AuditEvent.objects.filter(action="console.refused").latest("id")
        assert AuditEvent.objects.filter(action="console.refused").count() == before + 1
        assert event.actor_label == PERSONAS[role]
        assert event.object_type == "console-url"
        assert event.object_id == name
        assert event.detail["url_name"] == name
        assert event.detail["method"] == VIEWS[name][0]
        assert set(event.detail["roles_needed"]) == {r.value for r in ALLOWED[name]}
        assert event.detail["target"] == {
            key: str(value) for key, value in VIEWS[name][1](world).items()
        }


def test_the_refusal_is_recorded_with_the_client_address(
    client_with: Callable[..., Client], world: World
) -> None:
    client = client_with(REG)
    response = client.get(reverse("adminconsole:audit-log"), REMOTE_ADDR="198.51.100.7")
    assert response.status_code == 403
    assert "<strong>Auditor</strong>" in _body(response)
    event = AuditEvent.objects.get(action="console.refused")
    assert event.client_address == "198.51.100.7"
    assert event.detail == {
        "url_name": "audit-log",
        "method": "GET",
        "target": {},
        "roles_needed": ["audit"],
    }
    # The refusal did not count as reading the log.
    assert not AuditEvent.objects.filter(action="audit.view").exists()


def test_staff_with_no_role_sees_only_the_dashboard_which_says_so(
    client_with: Callable[..., Client], world: World
) -> None:
    client = client_with()
    dashboard = client.get(reverse("adminconsole:dashboard"))
    assert dashboard.status_code == 200
    body = _body(dashboard)
    assert "You have no role in the console yet" in body
    assert "ask an administrator" in body
    # Nothing behind the counts: no figures, no links to other console pages.
    assert reverse("adminconsole:domain-list") not in body
    assert reverse("adminconsole:audit-log") not in body
    for name in sorted(set(VIEWS) - {"dashboard"}):
        assert _call(client, world, name).status_code == 403, name


def test_a_role_group_of_another_name_gives_no_role(
    make_user: Callable[..., Any], world: World
) -> None:
    from django.contrib.auth.models import Group

    user = make_user("gus", staff=True, roles=())
    user.groups.add(Group.objects.create(name="Audit"))  # not the role's exact name
    client = verified_client(user)
    assert client.get(reverse("adminconsole:audit-log")).status_code == 403


def test_a_superuser_holds_every_role_without_any_group(world: World) -> None:
    suzy = get_user_model().objects.create_superuser("suzy", "suzy@hisp.example", "x" * 20)
    assert not suzy.groups.exists()
    client = verified_client(suzy)
    refused = [name for name in sorted(VIEWS) if _call(client, world, name).status_code == 403]
    assert refused == []
    assert "no role" not in _body(client.get(reverse("adminconsole:dashboard")))


def test_a_superuser_who_is_not_staff_still_gets_404(world: World) -> None:
    root = get_user_model().objects.create_superuser("root", "root@hisp.example", "x" * 20)
    get_user_model().objects.filter(pk=root.pk).update(is_staff=False)
    root.refresh_from_db()
    assert verified_client(root).get(reverse("adminconsole:domain-list")).status_code == 404


def test_roles_do_not_open_the_console_to_an_unverified_session(
    make_user: Callable[..., Any], world: World
) -> None:
    # una-like: every role, but a password only: still sent to the second factor, not refused.
    user = make_user("ursula", staff=True)
    client = Client()
    client.force_login(user)
    response = client.get(reverse("adminconsole:audit-log"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse(access.OTP_URL_NAME))
    assert not AuditEvent.objects.filter(action="console.refused").exists()


# A destructive POST refused for lack of the role: 403 and nothing changed. The confirmed data
# of test_confirmations, which acts when the role is held.
DESTRUCTIVE = sorted(ACTIONS)


@pytest.mark.parametrize("name", DESTRUCTIVE)
def test_a_refused_confirmed_action_changes_nothing(
    client_with: Callable[..., Client], world: World, name: str
) -> None:
    action = ACTIONS[name]
    target = action.post or action.page
    outsider = next(role for role in (AUDIT, CERT, REG, OPS) if role not in ALLOWED[target])
    response = client_with(outsider).post(action.post_url(world), action.data)
    assert response.status_code == 403
    assert not action.done(world)
    assert not AuditEvent.objects.filter(action=action.audit).exists()


def test_a_registration_officer_cannot_revoke_a_certificate(
    client_with: Callable[..., Client], issued: Certificate
) -> None:
    url = reverse("adminconsole:certificate-revoke", kwargs={"pk": issued.pk})
    data = {"reason": "key_compromise", "confirm": "on", "note": "stolen laptop"}
    response = client_with(REG).post(url, data)
    assert response.status_code == 403
    assert Certificate.objects.get(pk=issued.pk).revoked_at is None
    assert not AuditEvent.objects.filter(action="certificate.revoke").exists()
    # The same POST by a certificate officer does revoke: the data was good.
    assert client_with(CERT).post(url, data).status_code == 302
    assert Certificate.objects.get(pk=issued.pk).revoked_at is not None


def test_an_auditor_cannot_remove_a_bundle(
    client_with: Callable[..., Client], world: World
) -> None:
    url = reverse("adminconsole:bundle-remove", kwargs={"pk": world.bundle.pk})
    response = client_with(AUDIT).post(url, {"reason": "left the community", "confirm": "on"})
    assert response.status_code == 403
    assert TrustBundle.objects.filter(pk=world.bundle.pk).exists()


def test_needs_above_staff_required_is_refused_at_import() -> None:
    def view(request: Any) -> Any:  # pragma: no cover - never called
        raise AssertionError

    with pytest.raises(TypeError, match="below @staff_required"):
        access.needs(Role.AUDIT)(access.staff_required(view))
    with pytest.raises(TypeError):
        access.needs()


# What a page offers follows the role: the server refuses anyway, the page does not tempt.


def test_a_registration_officers_certificate_page_offers_no_revoke_button(
    client_with: Callable[..., Client], issued: Certificate
) -> None:
    url = reverse("adminconsole:certificate-detail", kwargs={"pk": issued.pk})
    actions = [
        reverse(f"adminconsole:certificate-{name}", kwargs={"pk": issued.pk})
        for name in ("revoke", "renew", "pkcs12")
    ]
    as_registration = _body(client_with(REG).get(url))
    assert "Revoke" not in as_registration
    assert [a for a in actions if a in as_registration] == []
    as_certificates = _body(client_with(CERT).get(url))
    assert "Revoke" in as_certificates
    assert [a for a in actions if a in as_certificates] == actions


def test_the_menu_shows_only_the_pages_of_the_role(
    client_with: Callable[..., Client], world: World
) -> None:
    def menu(client: Client) -> str:
        body = _body(client.get(reverse("adminconsole:domain-list")))
        return body.split('aria-label="Admin console"', 1)[1].split("</nav>", 1)[0]

    registration = menu(client_with(REG))
    assert reverse("adminconsole:address-list") in registration
    assert reverse("adminconsole:message-list") not in registration
    assert reverse("adminconsole:audit-log") not in registration
    auditor = menu(client_with(AUDIT))
    assert reverse("adminconsole:audit-log") in auditor
    assert reverse("adminconsole:message-list") in auditor
    operator = menu(client_with(OPS))
    assert reverse("adminconsole:delivery-list") in operator
    assert reverse("adminconsole:audit-log") not in operator


def test_list_pages_offer_only_the_forms_of_the_role(
    client_with: Callable[..., Client], world: World
) -> None:
    auditor = client_with(AUDIT)
    for page, action in (
        ("domain-list", "domain-add"),
        ("address-list", "address-add"),
        ("route-list", "route-set"),
        ("bundle-list", "bundle-add"),
        ("certificate-list", "certificate-issue"),
        ("anchor-list", "anchor-import"),
    ):
        assert reverse(f"adminconsole:{action}") not in _body(
            auditor.get(reverse(f"adminconsole:{page}"))
        ), page
    delivery = _body(auditor.get(_url(world, "delivery-detail")))
    assert _url(world, "delivery-fail") not in delivery
    assert _url(world, "delivery-retry") not in delivery
    address = _body(client_with(CERT).get(_url(world, "address-detail")))
    assert reverse("adminconsole:address-proofing", kwargs={"pk": world.address.pk}) not in address
    assert reverse("adminconsole:address-invite", kwargs={"pk": world.address.pk}) not in address
    assert _url(world, "address-revoke-grant") not in address
    bundle = _body(client_with(OPS).get(_url(world, "bundle-detail")))
    assert _url(world, "bundle-remove") not in bundle
    assert _url(world, "bundle-refresh") not in bundle
    routes = _body(client_with(CERT).get(reverse("adminconsole:route-list")))
    assert _url(world, "route-delete") not in routes
