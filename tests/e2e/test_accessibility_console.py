"""Accessibility of the admin console, checked with axe-core in headless Chromium.

HISP staff work in the console all day, some with a screen reader or the keyboard alone: every
page they meet must pass axe's WCAG 2.1 A and AA rules, plus the few best-practice rules that
decide whether a screen reader user can find their way (one main landmark, a level-one heading,
headings in order, named table headers). Keyboard use is checked by pressing Tab as a person
would: the first stop is a visible "Skip to content" link, every stop shows a focus ring.

axe is injected with Playwright's evaluate, which runs through the DevTools protocol and so is
not subject to the page's Content Security Policy; the page's own CSP problems stay an error.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from adminconsole.roles import Role, role_groups
from hisp.models import Address, Certificate
from hisp.services import audit, identity
from tests.adminconsole import pkitools
from tests.adminconsole.world import World, build
from tests.e2e.test_console import PASSWORD, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
# Best-practice rules (not WCAG success criteria in axe's tagging) that still decide whether a
# screen reader user can move around a page by landmarks, headings and table headers.
STRUCTURE_RULES = ["landmark-one-main", "page-has-heading-one", "heading-order",
                   "empty-table-header", "landmark-unique", "region", "landmark-no-duplicate-main"]
AXE = Axe()


def axe_problems(page: Any, where: str, *, structure: bool = True) -> list[str]:
    """Every axe violation on the page as it is now: rule, impact and the offending nodes."""
    found = []
    # One axe pass: a rule enabled by name runs beside the tags (axe's ruleShouldRun checks
    # options.rules before runOnly's tags), half the time of a second pass over the page.
    rules = {rule: {"enabled": True} for rule in STRUCTURE_RULES} if structure else {}
    results = AXE.run(page, options={"runOnly": {"type": "tag", "values": WCAG_TAGS},
                                     "rules": rules, "resultTypes": ["violations"]})
    for violation in results.response["violations"]:
        targets = "; ".join(" ".join(map(str, node["target"])) for node in violation["nodes"])
        found.append(f"{where}: {violation['id']} ({violation['impact']}) "
                     f"{violation['help']} -> {targets}")
    # axe leaves an aria-describedby whose ids are all missing to "needs review": a field whose
    # error message is not where it points is read without the error.
    for dangling in page.evaluate("""() => [...document.querySelectorAll(
            '[aria-describedby], [aria-labelledby], label[for]')].flatMap(e =>
        ['aria-describedby', 'aria-labelledby', 'for'].flatMap(a =>
            (e.getAttribute(a) || '').split(/\\s+/).filter(id => id && !document.getElementById(id))
                .map(id => `${e.tagName.toLowerCase()}#${e.id} ${a}=${id}`)))"""):
        found.append(f"{where}: dangling reference {dangling}")
    return found


@pytest.fixture
def desk(page: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """sam, verified staff, signed in to a console with one of everything it shows."""
    cache.clear()  # sign-in failure counts per client IP outlive other tests' databases
    sam = get_user_model().objects.create_user("sam", password=PASSWORD, is_staff=True)
    sam.groups.set(role_groups(Role))  # every console role (adminconsole.roles)
    device = TOTPDevice.objects.create(user=sam, name="phone", confirmed=True)
    domain = identity.add_domain("direct.example.org")
    alice = identity.add_address("alice@direct.example.org", name="Dr Alice Example")
    identity.add_domain("portal.example.org", portal=True)
    patient = identity.add_address("pat@portal.example.org", name="Pat Example", patient=True)
    world = build(domain, alice, get_user_model().objects.create_user("bob"))
    for n in range(60):  # enough for a second page of the audit log
        audit.record(action="route.set", obj=("route", f"r{n}"), actor=None, destination=f"d{n}")
    partner = pkitools.make_ca("Partner Health HISP CA")
    anchor_file = tmp_path / "partner.pem"
    anchor_file.write_bytes(partner.pem)
    script_errors: list[str] = []
    page.on("pageerror", lambda exc: script_errors.append(str(exc)))
    sign_in(page, "/console/", "sam", device)
    page.get_by_role("heading", name="Dashboard").wait_for()
    yield {"page": page, "world": world, "patient": patient, "anchor_file": anchor_file,
           "script_errors": script_errors}


def url(name: str, **kwargs: Any) -> str:
    return reverse(f"adminconsole:{name}", kwargs=kwargs or None)


def get_pages(world: World, patient: Address) -> list[tuple[str, str]]:
    """Every page staff reach by a link or an address bar, in the states they meet."""
    key_holder = Certificate.objects.filter(binding=Certificate.Binding.DOMAIN,
                                            bound_name=world.domain.name).first()
    assert key_holder is not None
    postmaster = Address.objects.get(address=f"postmaster@{world.domain.name}")
    return [
        ("dashboard", url("dashboard")),
        ("domain list", url("domain-list")),
        ("domain detail", url("domain-detail", pk=world.domain.pk)),
        ("CA rollover confirmation", url("domain-ca-rollover", pk=world.domain.pk)),
        ("address list", url("address-list")),
        ("address list filtered", url("address-list") + "?q=alice&status=active"),
        ("address detail (proofing form)", url("address-detail", pk=world.address.pk)),
        ("patient address detail", url("address-detail", pk=patient.pk)),
        ("suspend confirmation", url("address-status-confirm", pk=world.address.pk,
                                     transition="suspend")),
        ("disable confirmation", url("address-status-confirm", pk=world.address.pk,
                                     transition="disable")),
        ("revoke grant confirmation", url("address-revoke-grant", pk=world.address.pk,
                                          grant_pk=world.grant.pk)),
        ("password reset confirmation", url("address-reset-password", pk=world.address.pk)),
        ("patient invitation", url("address-invite", pk=patient.pk)),
        ("invitation refused", url("address-invite", pk=world.address.pk)),
        ("postmaster suspension refused", url("address-status-confirm", pk=postmaster.pk,
                                              transition="suspend")),
        ("certificate list", url("certificate-list")),
        ("certificate list filtered", url("certificate-list") + "?binding=domain&revoked=no"),
        ("certificate detail", url("certificate-detail", pk=world.certificate.pk)),
        ("domain certificate detail", url("certificate-detail", pk=key_holder.pk)),
        ("certificate issue", url("certificate-issue")),
        ("certificate import", url("certificate-import")),
        ("certificate revoke confirmation", url("certificate-revoke", pk=world.certificate.pk)),
        ("certificate revocation refused", url("certificate-revoke",
                                               pk=world.anchor.certificate_id)),
        ("PKCS#12 export", url("certificate-pkcs12", pk=key_holder.pk)),
        ("anchor list", url("anchor-list")),
        ("anchor import", url("anchor-import")),
        ("anchor removal confirmation", url("anchor-remove", pk=world.anchor.pk)),
        ("our anchor export", url("anchor-export", pk=world.domain.pk)),
        ("bundle list", url("bundle-list")),
        ("bundle detail", url("bundle-detail", pk=world.bundle.pk)),
        ("route list", url("route-list")),
        ("route delete confirmation", url("route-delete", pk=world.route.pk)),
        ("message list", url("message-list")),
        ("message list filtered", url("message-list") + "?direction=out&q=m1%40direct"),
        ("message list with an unknown direction", url("message-list") + "?direction=sideways"),
        ("message list, nothing found", url("message-list") + "?q=nothing-like-this"),
        ("message detail", url("message-detail", pk=world.message.pk)),
        ("delivery list", url("delivery-list")),
        ("delivery list filtered", url("delivery-list") + "?state=deferred&q=zoe"),
        ("delivery detail", url("delivery-detail", pk=world.delivery.pk)),
        ("delivery fail confirmation", url("delivery-fail", pk=world.delivery.pk)),
        ("discovery", url("discovery")),
        ("discovery of a hosted address",
         url("discovery") + f"?address=alice%40direct.example.org&sender_domain={world.domain.pk}"),
        ("audit log", url("audit-log")),
        ("audit log filtered, page 2", url("audit-log") + "?action=route.&page=2"),
        ("audit log with a refused filter", url("audit-log") + "?since=2026-02-02&until=2026-01-01"),
        ("audit log with an unreadable date", url("audit-log") + "?since=yesterday"),
        ("404", url("certificate-detail", pk=999999)),
    ]


def test_every_console_page_passes_axe(desk, settings):
    page, world = desk["page"], desk["world"]
    # A partner lookup that fails fast: a resolver address where nothing listens.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        settings.HISP_DNS_SERVERS = [f"127.0.0.1:{probe.getsockname()[1]}"]
    settings.HISP_DISCOVERY_TIMEOUT = timedelta(seconds=1)

    problems: list[str] = []
    pages = [*get_pages(world, desk["patient"]),
             ("discovery of an unreachable partner",
              url("discovery") + f"?address=zoe%40partner.example.net&sender_domain={world.domain.pk}")]
    for where, path in pages:
        response = page.goto(path)
        # A refusal may answer 400 or 409 with its page; only the 404 is meant to be one.
        assert (response.status == 404) == (where == "404") and response.status < 500, where
        if "refused" in where:  # the refusal itself is on the page, not a page without it
            assert page.get_by_role("alert").count() >= 1, where
        # The 404 is the site's own (templates/404.html), held to the same rules.
        problems += axe_problems(page, where)

    # Pages reached by submitting a form: errors beside fields, then the confirmation steps.
    page.goto(url("domain-list"))
    page.get_by_label("Domain name").fill("direct.example.org")
    page.get_by_role("button", name="Add domain").click()
    page.get_by_text("This domain is hosted already.").wait_for()
    problems += axe_problems(page, "domain form with an error")

    page.goto(url("address-list"))
    page.get_by_label("Direct address").fill("dr.no@elsewhere.example.org")
    page.get_by_label("Display name").fill("Dr No")
    page.get_by_role("button", name="Add address").click()
    page.get_by_text("The domain of this address is not hosted here.").wait_for()
    problems += axe_problems(page, "address form with an error")
    page.get_by_label("Direct address").fill("dr.no@direct.example.org")
    page.get_by_role("button", name="Add address").click()
    page.get_by_role("heading", name="dr.no@direct.example.org added, pending proofing").wait_for()
    problems += axe_problems(page, "new address with its temporary password")

    page.goto(url("address-detail", pk=world.address.pk))
    page.get_by_role("button", name="Record proofing").click()
    page.wait_for_load_state()
    problems += axe_problems(page, "proofing form with errors")

    page.goto(url("address-detail", pk=desk["patient"].pk))
    page.get_by_label("Proofed by").fill("Front desk, R. Jones")
    page.get_by_label("Evidence reference").fill("CASE-2026-17")
    page.get_by_label("Date proofed").fill(date.today().isoformat())
    page.get_by_role("button", name="Record proofing").click()
    page.get_by_role("cell", name="CASE-2026-17").wait_for()
    problems += axe_problems(page, "patient address, proofed")
    page.goto(url("address-invite", pk=desk["patient"].pk))
    page.get_by_role("button", name="Invite the patient").click()
    page.get_by_role("heading", name=re.compile("Invitation for")).wait_for()
    problems += axe_problems(page, "invitation link shown once")
    page.goto(url("address-detail", pk=desk["patient"].pk))
    page.get_by_role("cell", name=re.compile("No email")).wait_for()
    problems += axe_problems(page, "patient address with an open invitation")

    page.goto(url("certificate-issue"))
    page.get_by_label("Address or domain").fill("nobody@elsewhere.example")
    page.get_by_role("button", name="Issue").click()
    page.wait_for_load_state()
    problems += axe_problems(page, "certificate issue with an error")

    page.goto(url("anchor-import"))
    page.get_by_label("Anchor certificate (PEM or DER)").set_input_files(str(desk["anchor_file"]))
    page.get_by_role("button", name="Show fingerprint").click()
    page.get_by_role("heading", name=re.compile("Confirm the anchor")).wait_for()
    problems += axe_problems(page, "anchor fingerprint confirmation")

    page.goto(url("route-list"))
    page.get_by_label("Destination domain").fill("partner.example.net")
    page.get_by_label("Host").fill("mx2.partner.example.net")
    page.get_by_role("button", name="Save route").click()
    page.wait_for_load_state()
    problems += axe_problems(page, "route replacement confirmation")

    from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
    bundle_file = desk["anchor_file"].with_name("community.p7b")
    bundle_file.write_bytes(pkcs7.serialize_certificates(
        [pkitools.make_ca("Community Member CA").certificate], Encoding.DER))
    page.goto(url("bundle-list"))
    page.get_by_role("button", name=re.compile("Add bundle")).click()
    page.wait_for_load_state()
    problems += axe_problems(page, "bundle form with an error")
    page.get_by_label("Name").fill("Regional community")
    page.get_by_label(re.compile("bundle file")).set_input_files(str(bundle_file))
    page.get_by_role("button", name=re.compile("Add bundle")).click()
    page.get_by_role("heading", name=re.compile("Add the bundle")).wait_for()
    problems += axe_problems(page, "bundle add confirmation")
    page.get_by_role("checkbox").check()
    page.get_by_role("button", name=re.compile("Add the bundle")).click()
    page.get_by_role("heading", name="Trust bundle Regional community").wait_for()
    problems += axe_problems(page, "bundle detail with a success message")
    page.get_by_role("link", name="Refresh now…").click()
    page.wait_for_load_state()
    problems += axe_problems(page, "bundle refresh preview")

    assert not problems, "axe violations:\n" + "\n".join(problems)
    assert page.csp_problems == []
    assert desk["script_errors"] == []


def tab_stops(page: Any, count: int) -> list[dict[str, Any]]:
    """Press Tab up to ``count`` times (stopping when the focus leaves the page); what had the
    focus each time and whether a person could see it."""
    stops = []
    for _ in range(count):
        page.keyboard.press("Tab")
        stop = page.evaluate("""() => {
            const e = document.activeElement;
            if (!e || e === document.body) return null;
            const s = getComputedStyle(e), r = e.getBoundingClientRect();
            return {element: e.tagName.toLowerCase() + (e.type ? `[type=${e.type}]` : ''),
                    text: (e.innerText || e.name || '').trim().slice(0, 40),
                    inMain: !!e.closest('main'), inNav: !!e.closest('nav'),
                    ring: (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2)
                          || s.boxShadow !== 'none',
                    onScreen: r.width > 0 && r.height > 0 && r.right > 0 && r.bottom > 0
                              && r.left < innerWidth && r.top < innerHeight};
        }""")
        if stop is None:
            break
        stops.append(stop)
    return stops


def test_a_keyboard_user_skips_the_navigation_and_always_sees_where_the_focus_is(desk):
    page = desk["page"]
    page.goto(url("address-detail", pk=desk["world"].address.pk))
    first = tab_stops(page, 1)[0]
    assert first["text"] == "Skip to content" and first["onScreen"] and first["ring"], first
    page.keyboard.press("Enter")
    # Past the eleven menu links and the sign-out button at once.
    after_skip = tab_stops(page, 1)[0]
    assert after_skip["inMain"] and not after_skip["inNav"], after_skip

    world = desk["world"]
    hidden = []
    for path in (url("address-detail", pk=world.address.pk), url("audit-log"),
                 url("certificate-revoke", pk=world.certificate.pk), url("route-list")):
        page.goto(path)
        stops = tab_stops(page, 80)
        assert len(stops) > 15, (path, stops)  # the menu, sign-out and the page's own controls
        hidden += [(path, s) for s in stops if not s["ring"] or not s["onScreen"]]
    assert not hidden, f"focus not visible at: {hidden}"
    assert page.csp_problems == []


def test_every_table_has_named_column_or_row_headers(desk):
    page = desk["page"]
    unnamed: list[str] = []
    for where, path in get_pages(desk["world"], desk["patient"]):
        page.goto(path)
        unnamed += [f"{where}: {problem}" for problem in page.evaluate("""() => {
            const out = [];
            document.querySelectorAll('main table').forEach((table, i) => {
                const headers = table.querySelectorAll('th');
                if (!headers.length) out.push(`table ${i} has no header cells`);
                headers.forEach(th => {
                    if (!th.textContent.trim()) out.push(`table ${i} has an empty header`);
                });
                if (table.querySelector('thead') && !table.querySelector('thead th'))
                    out.push(`table ${i} has a head without header cells`);
            });
            return out;
        }""")]
    assert not unnamed, "\n".join(unnamed)


def test_the_console_pages_have_one_main_landmark_and_the_skip_link_targets_it(desk):
    page = desk["page"]
    for where, path in get_pages(desk["world"], desk["patient"])[:3]:
        page.goto(path)
        assert page.locator("main#main").count() == 1, where
        assert page.get_by_role("link", name="Skip to content").get_attribute("href") == "#main"
        assert page.get_by_role("navigation", name="Admin console").count() == 1, where



def test_one_axe_pass_reports_both_wcag_and_structure_rules(page):
    # The sweep's single pass must still run the structure rules enabled by name beside the
    # WCAG tags: a page without a main landmark or a level-one heading, and an image without
    # alternative text (a WCAG A failure), is reported for all three.
    page.set_content("<!doctype html><html lang='en'><head><title>t</title></head>"
                     "<body><div><h2>Section</h2><img src='data:,'></div></body></html>")
    rules = {problem.split(": ", 1)[1].split(" ", 1)[0] for problem in axe_problems(page, "bare")}
    assert {"landmark-one-main", "page-has-heading-one", "image-alt"} <= rules, rules
    wcag_only = {problem.split(": ", 1)[1].split(" ", 1)[0]
                 for problem in axe_problems(page, "bare", structure=False)}
    assert "image-alt" in wcag_only and "landmark-one-main" not in wcag_only, wcag_only
