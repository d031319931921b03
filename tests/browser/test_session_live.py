"""The console follows its session live, in a real Chromium against ``bff dev``: a tab whose
session ends elsewhere says so at once, why, and how to come back; a write the end cut short is
kept in the tab and finished after signing in again, once, with its Idempotency-Key."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.browser.driver import (
    FLOWS_API,
    Page,
    Request,
    Route,
    announced,
    assert_accessible,
    create_by_api,
    create_form,
    edit_button,
    edit_form,
    expect,
    fill_flow,
    flow_row,
    focused,
    sign_in,
    sign_in_at_provider,
)
from tests.support.oidc_login import browser_login
from tests.support.processes import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

US_EAST = "/?tenant=ten_acme&cluster=plane_dev_us_east_1"
LIST = FLOWS_API.format(tenant="ten_acme", cluster="plane_dev_us_east_1")
EVENTS_PATH = "/api/bff/v1/auth/session/events"
EVENTS = "**" + EVENTS_PATH
LIVE_MS = 3000
"""The tab says the session ended within this long of it ending elsewhere, with no action."""


def sign_out_everywhere_from_another_device(stack: ServerProcess, user: str) -> None:
    with httpx.Client(trust_env=False) as laptop:
        browser_login(laptop, stack.url, user)
        ended = laptop.delete(
            f"{stack.url}/api/bff/v1/auth/sessions",
            headers={"X-CSRF": "1", "Origin": stack.url},
        )
        assert ended.status_code == 200, ended.text


def flows_named(page: Page, name: str) -> int:
    """How many flows of the cluster bear ``name``, as the gateway lists them."""
    names: list[str] = page.evaluate(
        """async (path) => {
            const answer = await fetch(path + "?limit=100", {headers: {"X-CSRF": "1"}});
            return (await answer.json()).items.map((flow) => flow.name);
        }""",
        LIST,
    )
    return names.count(name)


def signed_in_and_followed(page: Page, sign_in_somehow: Callable[[], None]) -> None:
    """Signs in, and waits until the tab shows the cluster and follows its session."""
    with page.expect_response(lambda r: r.url.endswith(EVENTS_PATH)) as stream:
        sign_in_somehow()
    assert stream.value.status == 200
    expect(page.locator("#flows-panel")).to_be_visible()
    expect(page.locator("#flows-region")).to_have_attribute("aria-busy", "false")


def quoted(name: str) -> str:
    """A flow's name as the console quotes it in its sentences."""
    return "\u2018" + name + "\u2019"


def sign_in_again(page: Page, stack: ServerProcess) -> None:
    sign_in_link = page.get_by_role("link", name="Sign in")
    assert sign_in_link.get_attribute("href") == (
        "/api/bff/v1/auth/login?returnTo=%2F%3Ftenant%3Dten_acme%26cluster%3Dplane_dev_us_east_1"
    )
    sign_in_link.click()
    sign_in_at_provider(page, "alice")
    page.wait_for_url(stack.url + US_EAST)


@pytest.fixture
def puts(page: Page) -> Iterator[list[dict[str, Any]]]:
    """The PUTs the page sends: where, and with which Idempotency-Key and If-Match."""
    sent: list[dict[str, Any]] = []

    def record(request: Request) -> None:
        if request.method == "PUT":
            headers = request.headers
            sent.append(
                {
                    "url": request.url,
                    "key": headers.get("idempotency-key"),
                    "etag": headers.get("if-match"),
                }
            )

    page.on("request", record)
    yield sent


def test_a_tab_hears_at_once_that_its_session_ended_elsewhere_and_why(
    page: Page, stack: ServerProcess
) -> None:
    signed_in_and_followed(page, lambda: sign_in(page, stack, "alice", US_EAST))

    # Another tab of this browser signs out: this one hears it, and says so, without a click.
    other_tab = page.context.new_page()
    other_tab.goto(stack.url + US_EAST)
    other_tab.get_by_role("button", name="Sign out", exact=True).click()
    heading = page.get_by_role("heading", name="Your session has ended")
    expect(heading).to_be_visible(timeout=LIVE_MS)
    expect(heading).to_be_focused()
    expect(page.locator("#signed-out-text")).to_have_text(
        "You signed out in another tab or window. Nothing you saved is lost. "
        "Sign in again to come back to this view."
    )
    expect(announced(page)).to_contain_text("You signed out in another tab or window.")
    other_tab.close()
    assert_accessible(page, "the session ended in another tab")

    # Signed out everywhere from another device.
    signed_in_and_followed(page, lambda: sign_in_again(page, stack))
    sign_out_everywhere_from_another_device(stack, "alice")
    expect(heading).to_be_visible(timeout=LIVE_MS)
    expect(page.locator("#signed-out-text")).to_contain_text(
        "You signed out everywhere, on this device or another."
    )
    sign_in_again(page, stack)
    expect(page.locator("#cluster")).to_have_value("plane_dev_us_east_1")
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_a_form_open_when_the_session_ends_is_finished_after_signing_in_with_the_keyboard(
    page: Page, stack: ServerProcess
) -> None:
    signed_in_and_followed(page, lambda: sign_in(page, stack, "alice", US_EAST))
    page.get_by_role("button", name="New flow").click()
    fill_flow(create_form(page), "kept-across-sign-in", "Stripe production", "Orders API")

    # Mid-edit, the session ends on another device.
    sign_out_everywhere_from_another_device(stack, "alice")
    expect(page.get_by_role("heading", name="Your session has ended")).to_be_visible(
        timeout=LIVE_MS
    )
    expect(page.locator("#signed-out-kept")).to_have_text(
        "What you were saving is kept in this tab: after you sign in, you can finish saving "
        + quoted("kept-across-sign-in")
        + "."
    )
    stored = page.evaluate("JSON.stringify(Object.entries(sessionStorage))")
    assert "kept-across-sign-in" in stored
    assert not re.search(r"eyJ|bff_session|access_token", stored), "no token is kept"
    assert_accessible(page, "the session ended, a write kept")

    sign_in_again(page, stack)
    offer = page.get_by_role("heading", name="Finish saving " + quoted("kept-across-sign-in") + "?")
    expect(offer).to_be_visible()
    expect(offer).to_be_focused()
    expect(announced(page)).to_contain_text("Finish saving " + quoted("kept-across-sign-in") + "?")
    assert_accessible(page, "a kept write offered")
    assert flows_named(page, "kept-across-sign-in") == 0, "nothing was sent before"

    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Finish saving")).to_be_focused()
    page.keyboard.press("Enter")
    row = flow_row(page, "kept-across-sign-in")
    expect(row).to_contain_text("New")
    expect(row.locator(".flow-name")).to_be_focused()
    expect(announced(page)).to_have_text(
        "Created flow kept-across-sign-in. It is first in the list."
    )
    expect(page.locator("#kept")).to_be_hidden()
    assert flows_named(page, "kept-across-sign-in") == 1

    page.reload()
    expect(page.locator("#flows-region")).to_have_attribute("aria-busy", "false")
    expect(page.locator("#kept")).to_be_hidden()
    assert flows_named(page, "kept-across-sign-in") == 1
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_a_save_refused_because_the_session_ended_is_finished_once_with_the_same_key(
    page: Page, stack: ServerProcess, puts: list[dict[str, Any]]
) -> None:
    # No live events here: the tab learns of the end from the save itself, a 401.
    page.route(EVENTS, lambda route: route.abort())
    sign_in(page, stack, "alice", US_EAST)
    flow = {"name": "edit-across-sign-in", "sourceId": "ing_github_ci"}
    create_by_api(
        page, "ten_acme", "plane_dev_us_east_1", [{**flow, "destinationId": "dest_orders_api"}]
    )
    page.reload()
    edit_button(flow_row(page, "edit-across-sign-in")).click()
    name = edit_form(page).get_by_label("Name", exact=True)
    name.fill("edit-across-sign-in-2")

    sign_out_everywhere_from_another_device(stack, "alice")
    name.press("Enter")
    expect(page.get_by_role("heading", name="Your session has ended")).to_be_visible()
    expect(page.locator("#signed-out-kept")).to_contain_text(quoted("edit-across-sign-in-2"))
    assert len(puts) == 1

    sign_in_again(page, stack)
    expect(
        page.get_by_role("heading", name="Finish saving " + quoted("edit-across-sign-in-2") + "?")
    ).to_be_focused()
    page.get_by_role("button", name="Finish saving").click()
    renamed = flow_row(page, "edit-across-sign-in-2")
    expect(renamed).to_contain_text("Saved")
    expect(announced(page)).to_have_text("Saved flow edit-across-sign-in-2.")
    assert flows_named(page, "edit-across-sign-in-2") == 1
    assert flows_named(page, "edit-across-sign-in") == 0

    refused, finished = puts
    assert refused["url"] == finished["url"]
    assert refused["key"] and refused["key"] == finished["key"], "one write, one key"
    assert refused["etag"] and refused["etag"] == finished["etag"], "against the version edited"
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_a_kept_write_can_be_discarded_with_the_keyboard(page: Page, stack: ServerProcess) -> None:
    signed_in_and_followed(page, lambda: sign_in(page, stack, "alice", US_EAST))
    page.get_by_role("button", name="New flow").click()
    fill_flow(create_form(page), "kept-then-discarded", "GitHub CI", "Orders API")
    sign_out_everywhere_from_another_device(stack, "alice")
    expect(page.get_by_role("heading", name="Your session has ended")).to_be_visible(
        timeout=LIVE_MS
    )
    sign_in_again(page, stack)
    expect(
        page.get_by_role("heading", name="Finish saving " + quoted("kept-then-discarded") + "?")
    ).to_be_focused()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Discard")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#kept")).to_be_hidden()
    expect(announced(page)).to_have_text(
        "Discarded " + quoted("kept-then-discarded") + "; nothing was saved."
    )
    expect(focused(page)).to_have_id("list-title")
    page.reload()
    expect(page.locator("#flows-region")).to_have_attribute("aria-busy", "false")
    expect(page.locator("#kept")).to_be_hidden()
    assert flows_named(page, "kept-then-discarded") == 0
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_a_refused_stream_is_opened_again_a_few_times_only(
    page: Page, stack: ServerProcess
) -> None:
    """An instance shutting down or a browser with too many tabs refuses the stream: the tab
    opens it again after 5 s, 30 s and 120 s, then stops (each opening counts as using the
    session), and carries on working all the while."""
    page.clock.install()
    opened: list[int] = []

    def refuse(route: Route) -> None:
        opened.append(1)
        route.fulfill(
            status=429,
            headers={"Content-Type": "application/problem+json", "Retry-After": "30"},
            body='{"type":"about:blank","title":"Too Many Requests","status":429}',
        )

    page.route(EVENTS, refuse)
    sign_in(page, stack, "alice", US_EAST)
    expect(page.locator("#flows-panel")).to_be_visible()
    page.wait_for_timeout(300)
    assert len(opened) == 1
    for wait_ms, total in ((4_000, 1), (1_500, 2), (30_500, 3), (120_500, 4), (600_000, 4)):
        page.clock.run_for(wait_ms)
        page.wait_for_timeout(300)  # the check of the session, and the new request, settle
        assert len(opened) == total, (wait_ms, len(opened))
    expect(page.get_by_role("heading", name="Your session has ended")).to_have_count(0)
    assert page.page_errors == []  # type: ignore[attr-defined]
