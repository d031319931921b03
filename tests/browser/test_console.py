"""The development console in a real Chromium, against the real ``bff dev`` stack.

The stack (sandbox, development provider, BFF) runs as ``python -m bff dev`` on free loopback
ports; Chromium is Debian's ``/usr/bin/chromium`` driven by Playwright. Every request the browser
makes to anything but loopback is aborted (the provider's pages link a stylesheet on a CDN).

Locally the tests skip when Chromium is missing; with ``REQUIRE_BROWSER=1`` or ``CI=true`` they
fail instead.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.dev_stack import running_dev_stack
from tests.e2e.oidc_login import browser_login
from tests.support.processes import ServerProcess


def _browser_required() -> bool:
    return os.environ.get("REQUIRE_BROWSER") == "1" or os.environ.get("CI") == "true"


try:
    from playwright.sync_api import BrowserContext, Page, Route, expect, sync_playwright
except ImportError:
    if _browser_required():
        raise
    pytest.skip("playwright is not installed (pip install -e '.[dev]')", allow_module_level=True)

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

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
EXACT_OLD_NAME = re.compile(r"^browser-flow$")
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# Recorded before any page script runs, so a policy that blocks the console's own files shows.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is not installed (apt-get install chromium)"
        if _browser_required():
            pytest.fail(reason + "; REQUIRE_BROWSER=1 or CI=true needs it")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def stack(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``python -m bff dev`` on free ports; stopped with SIGINT, which must exit 0."""
    with running_dev_stack(tmp_path_factory.mktemp("bff-dev")) as running:
        yield running
        status = running.stop()
    assert status == 0, f"bff dev exited with {status}:\n{running.output()}"


def _loopback_only(route: Route) -> None:
    host = urlsplit(route.request.url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback or route.request.url.startswith(("data:", "blob:")):
        route.continue_()
    else:
        route.abort()


@pytest.fixture
def context(chromium: Path, tmp_path: Path) -> Iterator[BrowserContext]:
    """A fresh Chromium profile that can reach loopback only."""
    with sync_playwright() as playwright:
        browser_context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(chromium),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            browser_context.set_default_timeout(UI_TIMEOUT_MS)
            browser_context.route("**/*", _loopback_only)
            browser_context.add_init_script(RECORD_CSP_VIOLATIONS)
            yield browser_context
        finally:
            browser_context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    page = context.pages[0] if context.pages else context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.page_errors = page_errors  # type: ignore[attr-defined]
    return page


def _sign_in(page: Page, stack: ServerProcess, user: str) -> None:
    page.goto(stack.url + "/")
    page.get_by_role("link", name="Sign in").click()
    page.locator('input[name="sub"]').fill(user)
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(stack.url + "/")


def _open_cluster(page: Page, tenant: str, cluster: str) -> None:
    expect(page.locator(f'#tenant option[value="{tenant}"]')).to_have_count(1)
    page.select_option("#tenant", tenant)
    expect(page.locator(f'#cluster option[value="{cluster}"]')).to_have_count(1)
    page.select_option("#cluster", cluster)
    expect(page.locator("#flow-form")).to_be_visible()


def _choose(page: Page, select: str, name: str) -> None:
    """Pick the option whose visible text names ``name`` (the options read "name · id")."""
    value = page.locator(f"{select} option", has_text=name).get_attribute("value")
    assert value, f"no option {name!r} in {select}"
    page.select_option(select, value)


def _csp_violations(page: Page) -> list[str]:
    violations: list[str] = page.evaluate("window.__cspViolations || []")
    return violations


def test_sign_in_create_edit_delete_sign_out(
    page: Page, stack: ServerProcess, tmp_path: Path
) -> None:
    response = page.goto(stack.url + "/")
    assert response is not None and response.status == 200
    assert response.headers["content-security-policy"] == CONSOLE_CSP
    assert response.headers["cache-control"] == "no-cache"
    for asset, media_type in [("console.js", "text/javascript"), ("console.css", "text/css")]:
        served = page.request.get(f"{stack.url}/console/{asset}")
        assert served.status == 200
        assert served.headers["content-type"].startswith(media_type)
        assert served.headers["content-security-policy"] == CONSOLE_CSP
        assert served.headers["cache-control"] == "no-cache"
    expect(page.locator("#signed-out")).to_be_visible()
    sign_in = page.get_by_role("link", name="Sign in")
    assert sign_in.get_attribute("href") == "/api/bff/v1/auth/login?returnTo=/"

    sign_in.click()
    page.locator('input[name="sub"]').fill("alice")
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(stack.url + "/")
    expect(page.locator("#user-name")).to_have_text("Alice Admin")
    expect(page.locator("#tenant-list")).to_contain_text("ten_acme")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()

    _open_cluster(page, "ten_acme", "plane_dev_us_east_1")
    expect(page.locator("#flow-max-attempts")).to_have_value("3")
    expect(page.locator("#flow-backoff")).to_have_value("10")
    page.locator("#flow-name").fill("browser-flow")
    _choose(page, "#flow-source", "Stripe production")
    _choose(page, "#flow-destination", "Orders API")
    page.get_by_role("button", name="Create flow").click()

    row = page.locator("#flow-rows tr", has=page.locator(".flow-name", has_text="browser-flow"))
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Stripe production")
    expect(row).to_contain_text("Orders API")
    expect(row).to_contain_text("3 attempts, 10 s backoff")
    expect(page.locator("#status")).to_have_text("Created flow “browser-flow”.")
    expect(page.locator("#problem")).to_be_hidden()
    screenshot = tmp_path / "console-signed-in.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000

    # The session cookie is HttpOnly: nothing secret is readable by script or stored by the page.
    cookies = [c for c in page.context.cookies() if c["name"].endswith("bff_session")]
    assert cookies and cookies[0]["httpOnly"]
    assert page.evaluate("document.cookie") == ""
    assert page.evaluate("window.localStorage.length + window.sessionStorage.length") == 0
    assert cookies[0]["value"] not in page.content()

    row.get_by_role("button", name="Edit").click()
    expect(page.locator("#flow-name")).to_have_value("browser-flow")
    page.locator("#flow-name").fill("browser-flow-renamed")
    page.get_by_role("button", name="Save changes").click()
    renamed = page.locator(
        "#flow-rows tr", has=page.locator(".flow-name", has_text="browser-flow-renamed")
    )
    expect(renamed).to_have_count(1)
    expect(page.locator("#flow-rows .flow-name", has_text=EXACT_OLD_NAME)).to_have_count(0)
    expect(page.locator("#status")).to_have_text("Saved flow “browser-flow-renamed”.")

    page.once("dialog", lambda dialog: dialog.accept())
    renamed.get_by_role("button", name="Delete").click()
    expect(page.locator("#status")).to_have_text("Deleted flow “browser-flow-renamed”.")
    expect(page.locator("#flow-rows .flow-name", has_text="browser-flow")).to_have_count(0)

    page.get_by_role("button", name="Sign out").click()
    # The development provider asks before it ends its side of the session, then comes back.
    page.get_by_role("button", name="End session").click()
    page.wait_for_url(stack.url + "/*")
    expect(page.locator("#signed-out")).to_be_visible()
    expect(page.get_by_role("link", name="Sign in")).to_be_visible()
    expect(page.locator("#account")).to_be_hidden()
    status = page.evaluate(
        """fetch("/api/bff/v1/auth/session", {headers: {"X-CSRF": "1"}}).then(r => r.status)"""
    )
    assert status == 401
    assert _csp_violations(page) == []
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_create_without_a_name_shows_the_error_next_to_the_name(
    page: Page, stack: ServerProcess
) -> None:
    _sign_in(page, stack, "alice")
    _open_cluster(page, "ten_acme", "plane_dev_us_east_1")
    rows_before = page.locator("#flow-rows tr").count()
    _choose(page, "#flow-source", "Stripe production")
    _choose(page, "#flow-destination", "Orders API")
    page.get_by_role("button", name="Create flow").click()

    expect(page.locator("#error-name")).to_have_text("Enter a name.")
    expect(page.locator("#flow-name")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#problem-title")).to_have_text("Validation Error")
    expect(page.locator("#error-sourceId")).to_have_text("")
    assert page.locator("#flow-rows tr").count() == rows_before

    # Fixing the name clears the error and creates the flow.
    page.locator("#flow-name").fill("named-after-all")
    page.get_by_role("button", name="Create flow").click()
    expect(page.locator("#flow-rows .flow-name", has_text="named-after-all")).to_have_count(1)
    expect(page.locator("#error-name")).to_have_text("")
    expect(page.locator("#problem")).to_be_hidden()
    assert _csp_violations(page) == []
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_a_reader_sees_flows_but_cannot_change_them(page: Page, stack: ServerProcess) -> None:
    _sign_in(page, stack, "bob")
    expect(page.locator("#user-name")).to_have_text("Bob Reader")
    _open_cluster(page, "ten_acme", "plane_dev_us_east_1")

    expect(page.locator("#read-only")).to_be_visible()
    expect(page.locator("#flow-name")).to_be_disabled()
    expect(page.locator("#flow-source")).to_be_disabled()
    expect(page.get_by_role("button", name="Create flow")).to_be_disabled()
    for button in page.locator("#flow-rows button").all():
        expect(button).to_be_disabled()
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_saving_a_stale_edit_is_refused_with_the_reason(
    page: Page, stack: ServerProcess, tmp_path: Path
) -> None:
    _sign_in(page, stack, "alice")
    _open_cluster(page, "ten_acme", "plane_dev_us_east_1")
    page.locator("#flow-name").fill("stale-edit")
    _choose(page, "#flow-source", "GitHub CI")
    _choose(page, "#flow-destination", "Billing service")
    page.get_by_role("button", name="Create flow").click()
    row = page.locator("#flow-rows tr", has=page.locator(".flow-name", has_text="stale-edit"))
    row.get_by_role("button", name="Edit").click()
    expect(page.get_by_role("button", name="Save changes")).to_be_visible()

    # Someone else changes the flow after the console read it.
    flow_id = row.get_attribute("data-flow-id")
    changed = page.evaluate(
        """async (path) => {
            const response = await fetch(path, {
              method: "PUT",
              headers: {"X-CSRF": "1", "Content-Type": "application/json"},
              body: JSON.stringify({name: "changed-elsewhere", sourceId: "ing_github_ci",
                                    destinationId: "dest_billing_svc"}),
            });
            return response.status;
        }""",
        f"/api/bff/v1/tenants/ten_acme/clusters/plane_dev_us_east_1/delivery-flows/{flow_id}",
    )
    assert changed == 200

    page.locator("#flow-name").fill("my-edit")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#problem-title")).to_have_text("Precondition Failed")
    expect(page.locator("#problem-detail")).not_to_be_empty()
    page.screenshot(path=str(tmp_path / "console-problem.png"), full_page=True)
    page.get_by_role("button", name="Cancel edit").click()
    # Choosing the cluster again reloads its flows: the other change is there, ours is not.
    page.select_option("#cluster", "plane_dev_us_east_1")
    expect(page.locator("#flow-rows .flow-name", has_text="changed-elsewhere")).to_have_count(1)
    expect(page.locator("#flow-rows .flow-name", has_text="my-edit")).to_have_count(0)


def test_next_page_follows_the_cursor(page: Page, stack: ServerProcess) -> None:
    _sign_in(page, stack, "alice")
    created = page.evaluate(
        """async (path) => {
            const statuses = [];
            for (let i = 0; i < 21; i++) {
              const response = await fetch(path, {
                method: "POST",
                headers: {"X-CSRF": "1", "Content-Type": "application/json"},
                body: JSON.stringify({name: "eu-flow-" + String(i).padStart(2, "0"),
                                      sourceId: "ing_shopify_eu",
                                      destinationId: "dest_eu_warehouse"}),
              });
              statuses.push(response.status);
            }
            return statuses;
        }""",
        "/api/bff/v1/tenants/ten_acme/clusters/plane_dev_eu_west_1/delivery-flows",
    )
    assert created == [201] * 21
    _open_cluster(page, "ten_acme", "plane_dev_eu_west_1")

    expect(page.locator("#flow-rows tr")).to_have_count(20)
    first_page = page.locator("#flow-rows .flow-name").all_text_contents()
    expect(page.get_by_role("button", name="First page")).to_be_hidden()
    page.get_by_role("button", name="Next page").click()
    expect(page.locator("#flow-rows tr")).to_have_count(1)
    second_page = page.locator("#flow-rows .flow-name").all_text_contents()
    assert set(first_page) | set(second_page) == {f"eu-flow-{i:02d}" for i in range(21)}
    expect(page.get_by_role("button", name="Next page")).to_be_hidden()
    page.get_by_role("button", name="First page").click()
    expect(page.locator("#flow-rows tr")).to_have_count(20)
    expect(page.locator("#flow-rows .flow-name")).to_have_text(first_page)


def test_a_create_retried_after_a_lost_answer_reuses_its_key_and_creates_once(
    page: Page, stack: ServerProcess
) -> None:
    _sign_in(page, stack, "alice")
    _open_cluster(page, "ten_acme", "plane_dev_us_east_1")
    keys: list[str | None] = []

    def lose_the_first_answer(route: Route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        keys.append(route.request.headers.get("idempotency-key"))
        if len(keys) == 1:
            route.fetch()  # the flow is created upstream; its answer never reaches the page
            route.fulfill(
                status=504,
                content_type="application/problem+json",
                body='{"type":"https://api.zen-mesh.io/errors/upstream-timeout",'
                '"title":"Upstream Timeout","status":504,"detail":"No answer in time."}',
            )
        else:
            route.continue_()

    page.route("**/delivery-flows", lose_the_first_answer)
    page.locator("#flow-name").fill("retried-once")
    _choose(page, "#flow-source", "Stripe production")
    _choose(page, "#flow-destination", "Orders API")
    page.get_by_role("button", name="Create flow").click()
    expect(page.locator("#problem-title")).to_have_text("Upstream Timeout")
    page.get_by_role("button", name="Create flow").click()  # the same form, again
    expect(page.locator("#flow-rows .flow-name", has_text="retried-once")).to_have_count(1)
    assert len(keys) == 2 and keys[0] is not None and keys[0] == keys[1], keys
    page.reload()
    _open_cluster(page, "ten_acme", "plane_dev_us_east_1")
    expect(page.locator("#flow-rows .flow-name", has_text="retried-once")).to_have_count(1)


def test_a_user_without_tenants_is_told_they_have_no_access(
    page: Page, stack: ServerProcess
) -> None:
    _sign_in(page, stack, "nina")
    no_access = page.locator("#no-access")
    expect(no_access).to_be_visible()
    expect(no_access).to_contain_text("You have no access yet")
    expect(no_access).to_contain_text("signed in as Nina Newcomer")
    expect(page.locator("#signed-in")).to_be_hidden()
    expect(page.get_by_role("button", name="Sign out", exact=True)).to_be_visible()
    # The operator hears of it too, with the claim that is missing.
    assert "has the tenants claim 'zen_tenants'" in stack.output()
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_pressing_deny_at_the_provider_ends_on_a_page_with_a_way_back(
    page: Page, stack: ServerProcess
) -> None:
    page.goto(stack.url + "/")
    page.get_by_role("link", name="Sign in").click()
    page.get_by_role("button", name="Deny").click()
    page.wait_for_url(stack.url + "/api/bff/v1/auth/callback*")
    expect(page.get_by_role("heading", name="Sign-in failed")).to_be_visible()
    expect(page.locator("main")).to_contain_text("refused the sign-in (access_denied)")
    expect(page.locator("code")).to_have_text(re.compile(r"^req_[0-9a-f]{24}$"))
    assert _csp_violations(page) == []
    color = page.evaluate("getComputedStyle(document.querySelector('.button')).backgroundColor")
    assert color not in {"", "rgba(0, 0, 0, 0)"}, "its own style sheet is applied"
    page.get_by_role("link", name="Try again").click()
    page.locator('input[name="sub"]').fill("alice")
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(stack.url + "/")
    expect(page.locator("#user-name")).to_have_text("Alice Admin")


def test_signing_out_another_browser_and_everywhere(page: Page, stack: ServerProcess) -> None:
    _sign_in(page, stack, "carol")
    # Carol's other browser: a laptop somewhere else, signed in through the same provider.
    with httpx.Client(
        headers={"User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/128.0"},
        trust_env=False,
    ) as laptop:
        browser_login(laptop, stack.url, "carol")
        whoami = f"{stack.url}/api/bff/v1/auth/session"
        assert laptop.get(whoami, headers={"X-CSRF": "1"}).status_code == 200

        page.get_by_text("Where you are signed in").click()
        sessions = page.locator("#session-list li")
        expect(sessions).to_have_count(2)
        expect(sessions.first).to_contain_text("(this browser)")
        expect(page.locator("#session-list")).to_contain_text("Firefox on Windows")
        page.get_by_role("button", name="Sign out Firefox on Windows").click()
        expect(page.locator("#status")).to_have_text("Signed out Firefox on Windows.")
        expect(sessions).to_have_count(1)
        assert laptop.get(whoami, headers={"X-CSRF": "1"}).status_code == 401

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Sign out everywhere").click()
    expect(page.locator("#signed-out")).to_be_visible()
    page.reload()
    expect(page.locator("#signed-out")).to_be_visible()
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_a_session_that_cannot_be_renewed_offers_a_quiet_sign_in_before_it_ends(
    page: Page, stack: ServerProcess
) -> None:
    _sign_in(page, stack, "alice")

    def as_if_not_renewable(route: Route) -> None:
        # The gateway's real answer, as it is for a provider that issued no refresh token.
        answer = route.fetch()
        session = answer.json()
        session["refreshable"] = False
        ends = datetime.now(UTC) + timedelta(seconds=90)
        session["expiresAt"] = ends.isoformat(timespec="seconds").replace("+00:00", "Z")
        route.fulfill(response=answer, json=session)

    page.route("**/api/bff/v1/auth/session", as_if_not_renewable)
    page.goto(stack.url + "/?tab=flows")
    notice = page.locator("#expiry")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("Your sign-in ends at")
    stay = page.get_by_role("link", name="Stay signed in")
    assert stay.get_attribute("href") == (
        "/api/bff/v1/auth/login?prompt=none&returnTo=%2F%3Ftab%3Dflows"
    )
    page.unroute("**/api/bff/v1/auth/session")
    stay.click()
    # The development provider does not do prompt=none: it asks, and the user comes back.
    page.locator('input[name="sub"]').fill("alice")
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(stack.url + "/?tab=flows")
    expect(page.locator("#user-name")).to_have_text("Alice Admin")
    expect(notice).to_be_hidden()
