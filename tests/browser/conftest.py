"""Fixtures of the browser tests: Debian's Chromium, driven by Playwright, against ``bff dev``.

Each test module gets its own stack (sandbox, development provider, BFF) on free loopback ports;
each test a fresh Chromium profile (``page``; ``module_page`` is one page shared by a module's
tests) that may reach loopback only. A request to anywhere else is aborted and recorded, and a
test that made one fails: the console and the provider's pages load nothing from elsewhere.

Locally the tests skip when Chromium or Playwright is missing; with ``REQUIRE_BROWSER=1`` or
``CI=true`` they fail instead. How Chromium runs is in :mod:`tests.support.chromium`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.chromium import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DESKTOP,
    RECORD_CSP_VIOLATIONS,
    UI_TIMEOUT_MS,
    browser_required,
    is_local,
    sync_playwright,
)
from tests.support.dev_stack import running_dev_stack
from tests.support.processes import ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Route


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


@contextmanager
def _loopback_only_browser(chromium: Path, profile: Path) -> Iterator[BrowserContext]:
    """A Chromium profile that can reach loopback only; fails the test that tried more."""
    assert sync_playwright is not None
    blocked: list[str] = []

    def loopback_only(route: Route) -> None:
        if is_local(route.request.url):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser_context = playwright.chromium.launch_persistent_context(
            str(profile),
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


def _recording_errors(page: Page) -> Page:
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.page_errors = page_errors  # type: ignore[attr-defined]
    return page


@pytest.fixture
def context(chromium: Path, tmp_path: Path) -> Iterator[BrowserContext]:
    """A fresh Chromium profile for each test."""
    with _loopback_only_browser(chromium, tmp_path / "chromium-profile") as browser_context:
        yield browser_context


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return _recording_errors(context.pages[0] if context.pages else context.new_page())


@pytest.fixture(scope="module")
def module_page(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    """One page for all the tests of a module, for tests that look at one screen many ways."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    with _loopback_only_browser(chromium, profile) as browser_context:
        yield _recording_errors(browser_context.pages[0])
