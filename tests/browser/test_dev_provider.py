"""The development provider's pages in a real Chromium: sign in, sign out and errors are styled
by the provider's own style sheet, with no request beyond loopback, and signing out comes back to
the console's signed-out screen."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.browser.driver import (
    Page,
    Request,
    assert_accessible,
    csp_violations,
    expect,
    sign_in_at_provider,
)
from tests.support.processes import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def _assert_styled(page: Page, what: str) -> None:
    sheets = page.evaluate("[...document.styleSheets].map(s => s.href)")
    assert len(sheets) == 1 and urlsplit(sheets[0]).path == "/devstack/provider.css", sheets
    rules = page.evaluate("document.styleSheets[0].cssRules.length")
    assert rules > 10, f"{what}: the style sheet did not load"
    main = page.evaluate("getComputedStyle(document.querySelector('main')).borderTopStyle")
    assert main == "solid", f"{what} is not styled"
    font = page.evaluate("getComputedStyle(document.body).fontFamily")
    assert font.startswith("system-ui"), f"{what}: {font}"


def test_sign_in_and_sign_out_pages_are_styled_offline_and_come_back_to_the_console(
    page: Page, stack: ServerProcess
) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    provider_responses: list[Request] = []
    page.on(
        "requestfinished",
        lambda request: (
            provider_responses.append(request)
            if "/oauth2/" in request.url and request.resource_type == "document"
            else None
        ),
    )

    page.goto(stack.url + "/")
    page.get_by_role("link", name="Sign in").click()
    expect(page.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()
    expect(page.get_by_label("User name")).to_be_focused()
    expect(page.locator("main")).to_contain_text("flows-bff-dev asks you to sign in")
    _assert_styled(page, "the sign-in page")
    # The demo users, with what each may do.
    demo = page.get_by_role("button", name="bob")
    expect(demo).to_contain_text("Bob Reader · ten_acme: read")
    expect(page.get_by_role("button", name="nina")).to_contain_text("no tenants")
    assert csp_violations(page) == []
    policy = provider_responses[-1].response()
    assert policy is not None
    csp = policy.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "style-src 'self'" in csp
    assert f"form-action 'self' {stack.url}" in csp

    demo.click()  # one click signs in as bob
    page.wait_for_url(stack.url + "/?tenant=ten_acme")
    expect(page.locator("#user-name")).to_have_text("Bob Reader")

    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page.get_by_role("heading", name="Sign out")).to_be_visible()
    expect(page.locator("main")).to_contain_text("You have signed out of the application.")
    _assert_styled(page, "the sign-out page")
    assert csp_violations(page) == []
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(stack.url + "/")
    expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()
    expect(page.get_by_role("link", name="Sign in")).to_be_visible()

    # Signed out at the provider without an application to return to.
    idp = urlsplit(provider_responses[-1].url)
    page.goto(f"{idp.scheme}://{idp.netloc}/oauth2/end_session")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()
    _assert_styled(page, "the signed-out page")
    assert_accessible(page, "the provider's signed-out page")

    # A sign-in request the provider refuses.
    page.goto(f"{idp.scheme}://{idp.netloc}/oauth2/authorize?client_id=nobody&response_type=code")
    expect(page.get_by_role("heading", name="Sign-in cannot continue")).to_be_visible()
    _assert_styled(page, "the error page")
    assert_accessible(page, "the provider's error page")

    page.emulate_media(color_scheme="dark")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(18, 21, 27)", background

    loopback = ("http://127.0.0.1:", "data:")
    assert [url for url in requested if not url.startswith(loopback)] == []
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_a_missing_user_name_is_said_at_the_field(page: Page, stack: ServerProcess) -> None:
    page.goto(stack.url + "/")
    page.get_by_role("link", name="Sign in").click()
    # The browser's own check is skipped, as a script-less client would: the provider answers.
    page.get_by_label("User name").evaluate("input => input.removeAttribute('required')")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_text("Type a user name.")).to_be_visible()
    expect(page.get_by_label("User name")).to_have_attribute("aria-invalid", "true")
    assert_accessible(page, "the sign-in page with an error")
    sign_in_at_provider(page, "alice")
    page.wait_for_url(stack.url + "/?tenant=ten_acme")
