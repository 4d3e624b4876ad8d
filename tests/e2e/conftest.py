"""End-to-end tests in Debian's headless Chromium driven by Playwright (no browser download).

Playwright's sync API runs an event loop in the test thread; Django then refuses ORM calls from
that thread unless told the caller is synchronous, which it is. Set only for these tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import missing

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        missing(f"Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server) -> Iterator[object]:
    context = browser.new_context(base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    # A CSP violation means an inline script or style slipped in: the page would break.
    page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    page.csp_problems = problems
    yield page
    context.close()
