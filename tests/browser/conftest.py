"""Fixtures of the browser tests: Debian's Chromium, driven by Playwright, against ``bff dev``.

Each test module gets its own stack (sandbox, development provider, BFF) on free loopback ports;
each test a fresh Chromium profile that may reach loopback only. A request to anywhere else is
aborted and recorded, and a test that made one fails: the console and the provider's pages load
nothing from elsewhere.

Locally the tests skip when Chromium or Playwright is missing; with ``REQUIRE_BROWSER=1`` or
``CI=true`` they fail instead.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from tests.e2e.dev_stack import running_dev_stack
from tests.support.processes import ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Route


def browser_required() -> bool:
    return os.environ.get("REQUIRE_BROWSER") == "1" or os.environ.get("CI") == "true"


try:
    from playwright.sync_api import sync_playwright
except ImportError:
    if browser_required():
        raise
    sync_playwright = None  # type: ignore[assignment]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_TIMEOUT_MS = 15_000
DESKTOP = {"width": 1280, "height": 900}
# Recorded before any page script runs, so a policy that blocks the console's own files shows.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + event.blockedURI);
});
"""
# Screenshots and other files a person may want to look at after a run (git-ignored).
ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="module")
def chromium() -> Path:
    if sync_playwright is None:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is not installed (apt-get install chromium)"
        if browser_required():
            pytest.fail(reason + "; REQUIRE_BROWSER=1 or CI=true needs it")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def stack(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``python -m bff dev`` on free ports; stopped with SIGINT, which must exit 0."""
    # One browser signs in many times a minute here; a person never would. The gateway's bound on
    # sign-ins started from one address is raised for the tests, not turned off.
    env = {"BFF__SESSIONS__MAX_PENDING_SIGN_INS_PER_CLIENT": "200"}
    with running_dev_stack(tmp_path_factory.mktemp("bff-dev"), env=env) as running:
        yield running
        status = running.stop()
    assert status == 0, f"bff dev exited with {status}:\n{running.output()}"


def _is_local(url: str) -> bool:
    if url.startswith(("data:", "blob:", "about:")):
        return True
    host = urlsplit(url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture
def context(chromium: Path, tmp_path: Path) -> Iterator[BrowserContext]:
    """A fresh Chromium profile that can reach loopback only; fails the test that tried more."""
    assert sync_playwright is not None
    blocked: list[str] = []

    def loopback_only(route: Route) -> None:
        if _is_local(route.request.url):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser_context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(chromium),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=DESKTOP,
            permissions=["clipboard-read", "clipboard-write"],
        )
        try:
            browser_context.set_default_timeout(UI_TIMEOUT_MS)
            browser_context.route("**/*", loopback_only)
            browser_context.add_init_script(RECORD_CSP_VIOLATIONS)
            yield browser_context
        finally:
            browser_context.close()
    assert blocked == [], f"the browser tried to reach beyond loopback: {blocked}"


@pytest.fixture
def page(context: BrowserContext) -> Page:
    page = context.pages[0] if context.pages else context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.page_errors = page_errors  # type: ignore[attr-defined]
    return page
