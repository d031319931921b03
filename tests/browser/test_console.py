"""The development console in a real Chromium, against the real ``bff dev`` stack: what a person
does with flows, and what they see when something goes wrong."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.browser.driver import (
    REQUEST_ID,
    HeldRequests,
    Page,
    Route,
    announced,
    choose,
    create_by_api,
    create_form,
    create_in_ui,
    csp_violations,
    delete_button,
    edit_button,
    edit_form,
    expect,
    fill_flow,
    flow_names,
    flow_row,
    open_cluster,
    sign_in,
    sign_in_at_provider,
)
from tests.support.oidc_login import browser_login
from tests.support.processes import ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import Response

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
US_EAST = "/?tenant=ten_acme&cluster=plane_dev_us_east_1"


def test_sign_in_create_edit_delete_sign_out(page: Page, stack: ServerProcess) -> None:
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
    expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()
    sign_in_link = page.get_by_role("link", name="Sign in")
    assert sign_in_link.get_attribute("href") == "/api/bff/v1/auth/login?returnTo=%2F"

    sign_in_link.click()
    sign_in_at_provider(page, "alice")
    page.wait_for_url(stack.url + "/?tenant=ten_acme")  # her one tenant, chosen for her
    expect(page.locator("#user-name")).to_have_text("Alice Admin")
    expect(page.locator("#tenant-access")).to_have_text("You can view and change flows here.")
    expect(page.locator("#choose-hint")).to_have_text("Choose a cluster to see its flows.")
    open_cluster(page, "ten_acme", "plane_dev_us_east_1")
    page.wait_for_url(stack.url + US_EAST)

    page.get_by_role("button", name="New flow").click()
    form = create_form(page)
    expect(form.get_by_label("Name", exact=True)).to_be_focused()
    expect(form.get_by_label("Attempts", exact=True)).to_have_value("3")
    expect(form.get_by_label("Seconds between attempts")).to_have_value("10")
    fill_flow(form, "browser-flow", "Stripe production", "Orders API")
    form.get_by_role("button", name="Create flow").click()

    # Newest first: the new flow is on top, marked, and has the focus.
    row = flow_row(page, "browser-flow")
    expect(row).to_contain_text("Stripe production")
    expect(row).to_contain_text("Orders API")
    expect(row).to_contain_text("3 attempts, 10 s apart")
    expect(row).to_contain_text("New")
    assert flow_names(page)[0] == "browser-flow"
    expect(row.locator(".flow-name")).to_be_focused()
    expect(announced(page)).to_have_text("Created flow browser-flow. It is first in the list.")
    expect(form).to_have_count(0)

    # The session cookie is HttpOnly: nothing secret is readable by script or stored by the page.
    cookies = [c for c in page.context.cookies() if c["name"].endswith("bff_session")]
    assert cookies and cookies[0]["httpOnly"]
    assert page.evaluate("document.cookie") == ""
    assert page.evaluate("window.localStorage.length + window.sessionStorage.length") == 0
    assert cookies[0]["value"] not in page.content()

    # Editing opens right under the row.
    edit_button(row).click()
    edit = edit_form(page)
    expect(edit.get_by_label("Name", exact=True)).to_have_value("browser-flow")
    expect(edit.get_by_label("Name", exact=True)).to_be_focused()
    assert row.evaluate("row => row.nextElementSibling.querySelector('#edit-form') !== null")
    edit.get_by_label("Name", exact=True).fill("browser-flow-renamed")
    edit.get_by_role("button", name="Save changes").click()
    renamed = flow_row(page, "browser-flow-renamed")
    expect(renamed).to_contain_text("Saved")
    expect(flow_row(page, "browser-flow")).to_have_count(0)
    expect(edit_button(renamed)).to_be_focused()
    expect(announced(page)).to_have_text("Saved flow browser-flow-renamed.")
    assert flow_names(page)[0] == "browser-flow-renamed", "saved in place"

    # Deleting asks first, naming the flow; keeping it changes nothing.
    delete_button(renamed).click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Delete the flow “browser-flow-renamed”?")
    expect(dialog).to_contain_text("Stripe production")
    dialog.get_by_role("button", name="Keep it").click()
    expect(dialog).to_be_hidden()
    expect(delete_button(renamed)).to_be_focused()
    delete_button(renamed).click()
    dialog.get_by_role("button", name="Delete flow").click()
    expect(flow_row(page, "browser-flow-renamed")).to_have_count(0)
    expect(announced(page)).to_have_text("Deleted flow browser-flow-renamed.")

    # Signing out ends the provider's session too and comes back to the console, signed out.
    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page.get_by_role("heading", name="Sign out")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(stack.url + "/*")
    expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()
    expect(page.get_by_role("link", name="Sign in")).to_be_visible()
    expect(page.locator("#account")).to_be_hidden()
    status = page.evaluate(
        """fetch("/api/bff/v1/auth/session", {headers: {"X-CSRF": "1"}}).then(r => r.status)"""
    )
    assert status == 401
    assert csp_violations(page) == []
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_flows_are_newest_first_and_load_more_keeps_what_is_shown(
    page: Page, stack: ServerProcess
) -> None:
    sign_in(page, stack, "alice")
    names = [f"eu-flow-{i:02d}" for i in range(23)]
    flows = [
        {"name": n, "sourceId": "ing_shopify_eu", "destinationId": "dest_eu_warehouse"}
        for n in names
    ]
    create_by_api(page, "ten_acme", "plane_dev_eu_west_1", flows)
    open_cluster(page, "ten_acme", "plane_dev_eu_west_1")

    newest_first = list(reversed(names))
    expect(page.locator("#flow-rows tr[data-flow-id]")).to_have_count(20)
    assert flow_names(page) == newest_first[:20]
    expect(page.locator("#list-count")).to_have_text("Showing the newest 20 flows.")

    # A flow created now goes on top, and nothing shown goes away.
    create_in_ui(page, "eu-flow-new", "Shopify EU", "EU warehouse")
    assert flow_names(page) == ["eu-flow-new", *newest_first[:20]]

    more = page.locator("#load-more")
    expect(more).to_have_text("Load more")
    held = HeldRequests("GET", lambda request: "cursor=" in request.url)
    page.route("**/delivery-flows?*", held)
    more.click()
    expect(more).to_have_text("Loading more…")
    expect(more).to_have_attribute("aria-busy", "true")
    held.release(page)
    expect(page.locator("#flow-rows tr[data-flow-id]")).to_have_count(24)
    assert flow_names(page) == ["eu-flow-new", *newest_first]
    expect(more).to_be_hidden()
    expect(page.locator("#list-count")).to_have_text("Showing all 24 flows, newest first.")
    expect(flow_row(page, "eu-flow-02").locator(".flow-name")).to_be_focused()
    expect(announced(page)).to_have_text("Loaded 3 more flows; that is all of them.")

    # Reloading shows the same, newest first.
    page.reload()
    expect(page.locator("#flow-rows tr[data-flow-id]")).to_have_count(20)
    assert flow_names(page) == ["eu-flow-new", *newest_first[:19]]
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_every_call_shows_that_it_is_busy(page: Page, stack: ServerProcess) -> None:
    sign_in(page, stack, "alice")
    create_by_api(
        page,
        "ten_acme",
        "plane_dev_us_east_1",
        [{"name": "busy-flow", "sourceId": "ing_github_ci", "destinationId": "dest_billing_svc"}],
    )

    # Opening a cluster: skeleton rows while its flows load, also when switching clusters.
    page.select_option("#cluster", "plane_dev_eu_west_1")
    expect(page.locator("#flows-region")).to_have_attribute("aria-busy", "false")
    listing = HeldRequests("GET", lambda r: r.url.endswith("/delivery-flows"))
    page.route("**/delivery-flows", listing)
    page.select_option("#cluster", "plane_dev_us_east_1")
    expect(page.locator("#flow-rows .skeleton-row").first).to_be_visible()
    expect(page.locator("#flows-region")).to_have_attribute("aria-busy", "true")
    expect(page.locator("#flow-rows .skeleton-row")).to_have_count(3)
    listing.release(page)
    expect(page.locator("#flows-region")).to_have_attribute("aria-busy", "false")
    expect(page.locator("#flow-rows .skeleton-row")).to_have_count(0)
    page.unroute("**/delivery-flows")

    # Creating.
    posting = HeldRequests("POST")
    page.route("**/delivery-flows", posting)
    page.get_by_role("button", name="New flow").click()
    fill_flow(create_form(page), "busy-created", "Stripe production", "Orders API")
    create_form(page).get_by_role("button", name="Create flow").click()
    submit = create_form(page).locator("button[type=submit]")
    expect(submit).to_have_text("Creating…")
    expect(submit).to_have_attribute("aria-disabled", "true")
    expect(submit).to_be_focused()  # busy, but the focus stays where it was
    posting.release(page)
    expect(flow_row(page, "busy-created")).to_have_count(1)
    page.unroute("**/delivery-flows")

    # Opening the edit form reads the flow first.
    row = flow_row(page, "busy-flow")
    reading = HeldRequests("GET")
    page.route("**/delivery-flows/flow_*", reading)
    edit_button(row).click()
    expect(edit_button(row)).to_have_attribute("aria-busy", "true")
    reading.release(page)
    expect(edit_form(page)).to_be_visible()
    page.unroute("**/delivery-flows/flow_*")

    # Saving.
    saving = HeldRequests("PUT")
    page.route("**/delivery-flows/flow_*", saving)
    edit_form(page).get_by_role("button", name="Save changes").click()
    expect(edit_form(page).locator("button[type=submit]")).to_have_text("Saving…")
    saving.release(page)
    expect(edit_form(page)).to_have_count(0)
    page.unroute("**/delivery-flows/flow_*")

    # Deleting.
    deleting = HeldRequests("DELETE")
    page.route("**/delivery-flows/flow_*", deleting)
    delete_button(row).click()
    page.get_by_role("dialog").get_by_role("button", name="Delete flow").click()
    expect(row).to_have_attribute("aria-busy", "true")
    expect(row.locator("button.delete")).to_have_text("Deleting…")
    deleting.release(page)
    expect(flow_row(page, "busy-flow")).to_have_count(0)
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_a_missing_name_is_explained_at_the_name_field(page: Page, stack: ServerProcess) -> None:
    sign_in(page, stack, "alice", US_EAST)
    expect(page.locator("#flows-region")).to_have_attribute("aria-busy", "false")
    page.get_by_role("button", name="New flow").click()
    form = create_form(page)
    choose(form, "Source", "Stripe production")
    choose(form, "Destination", "Orders API")
    form.get_by_role("button", name="Create flow").click()

    name = form.get_by_label("Name", exact=True)
    expect(page.locator("#create-name-error")).to_have_text("Enter a name.")
    expect(name).to_have_attribute("aria-invalid", "true")
    expect(name).to_have_attribute("aria-describedby", "create-name-hint create-name-error")
    expect(name).to_be_focused()
    expect(form.get_by_role("alert")).to_contain_text("Some values need fixing.")
    expect(page.locator("#create-source-error")).to_be_hidden()

    # Fixing the name clears the error and creates the flow.
    name.fill("named-after-all")
    form.get_by_role("button", name="Create flow").click()
    expect(flow_row(page, "named-after-all")).to_have_count(1)
    expect(create_form(page)).to_have_count(0)
    assert csp_violations(page) == []
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_a_clash_is_explained_in_the_form_in_plain_words(page: Page, stack: ServerProcess) -> None:
    sign_in(page, stack, "alice", US_EAST)
    create_in_ui(page, "twice-named", "GitHub CI", "Billing service")
    page.get_by_role("button", name="New flow").click()
    fill_flow(create_form(page), "twice-named", "Stripe production", "Orders API")
    create_form(page).get_by_role("button", name="Create flow").click()
    message = create_form(page).get_by_role("alert")
    expect(message).to_contain_text("This clashes with another flow.")
    expect(message).to_contain_text("A delivery flow with this name already exists in the cluster.")
    expect(message).to_contain_text(REQUEST_ID)
    expect(message).to_be_in_viewport()
    expect(flow_row(page, "twice-named")).to_have_count(1)


def test_a_stale_edit_is_explained_beside_the_flow_with_a_request_id_to_copy(
    page: Page, stack: ServerProcess
) -> None:
    sign_in(page, stack, "alice", US_EAST)
    row = create_in_ui(page, "stale-edit", "GitHub CI", "Billing service")
    edit_button(row).click()
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

    edit_form(page).get_by_label("Name", exact=True).fill("my-edit")
    edit_form(page).get_by_role("button", name="Save changes").click()
    message = edit_form(page).get_by_role("alert")
    expect(message).to_contain_text(
        "Someone else changed this flow after you opened it. Your changes were not saved."
    )
    expect(message).not_to_contain_text("Precondition")
    expect(message).to_be_in_viewport()
    # Beside the flow: the message is in the edit row right under the flow's row.
    assert row.evaluate("row => row.nextElementSibling.querySelector('[role=alert]') !== null")
    request_id = message.locator(".request-id").inner_text()
    assert REQUEST_ID.fullmatch(request_id), request_id
    message.get_by_role("button", name=f"Copy request id {request_id}").click()
    expect(message.get_by_role("button", name=f"Copy request id {request_id}")).to_have_text(
        "Copied"
    )
    assert page.evaluate("navigator.clipboard.readText()") == request_id

    # Escape cancels; choosing the cluster again shows the other change, not ours.
    page.keyboard.press("Escape")
    expect(edit_form(page)).to_have_count(0)
    page.goto(stack.url + US_EAST)
    expect(flow_row(page, "changed-elsewhere")).to_have_count(1)
    expect(flow_row(page, "my-edit")).to_have_count(0)
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_escape_cancels_and_the_focus_returns_where_it_was(
    page: Page, stack: ServerProcess
) -> None:
    sign_in(page, stack, "alice", US_EAST)
    row = create_in_ui(page, "escape-me", "Stripe production", "Orders API")

    new_flow = page.get_by_role("button", name="New flow")
    new_flow.click()
    expect(new_flow).to_have_attribute("aria-expanded", "true")
    create_form(page).get_by_label("Name", exact=True).fill("half-typed")
    page.keyboard.press("Escape")
    expect(create_form(page)).to_have_count(0)
    expect(new_flow).to_be_focused()
    expect(new_flow).to_have_attribute("aria-expanded", "false")

    edit_button(row).click()
    expect(edit_form(page)).to_be_visible()
    page.keyboard.press("Escape")
    expect(edit_form(page)).to_have_count(0)
    expect(edit_button(row)).to_be_focused()

    edit_button(row).click()
    edit_form(page).get_by_role("button", name="Cancel").click()
    expect(edit_button(row)).to_be_focused()

    delete_button(row).click()
    expect(page.get_by_role("dialog")).to_be_visible()
    expect(page.get_by_role("dialog").get_by_role("button", name="Keep it")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(delete_button(row)).to_be_focused()
    expect(flow_row(page, "escape-me")).to_have_count(1)


def test_a_reader_is_told_why_there_is_nothing_to_change(page: Page, stack: ServerProcess) -> None:
    sign_in(page, stack, "alice", US_EAST)
    create_in_ui(page, "for-bob", "Stripe production", "Orders API")
    page.get_by_role("button", name="Sign out", exact=True).click()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(stack.url + "/*")

    sign_in(page, stack, "bob", US_EAST)
    expect(page.locator("#user-name")).to_have_text("Bob Reader")
    expect(page.locator("#tenant-access")).to_have_text("You can view flows here, not change them.")
    notice = page.get_by_role("note")
    expect(notice).to_contain_text("You can view these flows but not change them.")
    expect(notice).to_contain_text("read-only access to ten_acme")
    expect(notice).to_contain_text("ask an administrator of ten_acme for write access")
    expect(flow_row(page, "for-bob")).to_have_count(1)
    expect(page.get_by_role("button", name="New flow")).to_have_count(0)
    expect(page.locator("#flow-rows button")).to_have_count(0)
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_a_create_retried_after_a_lost_answer_reuses_its_key_and_creates_once(
    page: Page, stack: ServerProcess
) -> None:
    sign_in(page, stack, "alice", US_EAST)
    expect(page.locator("#flows-region")).to_have_attribute("aria-busy", "false")
    keys: list[str | None] = []

    def lose_the_first_answer(route: Route) -> None:
        if route.request.method != "POST":
            route.fallback()
            return
        keys.append(route.request.headers.get("idempotency-key"))
        if len(keys) == 1:
            route.fetch()  # the flow is created upstream; its answer never reaches the page
            route.fulfill(
                status=504,
                content_type="application/problem+json",
                body='{"type":"https://api.zen-mesh.io/errors/upstream-timeout",'
                '"title":"Upstream Timeout","status":504,"detail":"No answer in time.",'
                '"instance":"req_0123456789abcdef01234567"}',
            )
        else:
            route.continue_()

    page.route("**/delivery-flows", lose_the_first_answer)
    page.get_by_role("button", name="New flow").click()
    fill_flow(create_form(page), "retried-once", "Stripe production", "Orders API")
    create_form(page).get_by_role("button", name="Create flow").click()
    message = create_form(page).get_by_role("alert")
    expect(message).to_contain_text("did not answer in time. Try again: nothing is done twice.")
    expect(message).to_contain_text("req_0123456789abcdef01234567")
    create_form(page).get_by_role("button", name="Create flow").click()  # the same form, again
    expect(flow_row(page, "retried-once")).to_have_count(1)
    assert len(keys) == 2 and keys[0] is not None and keys[0] == keys[1], keys
    page.reload()
    expect(flow_row(page, "retried-once")).to_have_count(1)


def test_a_user_without_tenants_is_told_they_have_no_access(
    page: Page, stack: ServerProcess
) -> None:
    sign_in(page, stack, "nina")
    no_access = page.locator("#no-access")
    expect(no_access).to_be_visible()
    expect(page.get_by_role("heading", name="You have no access yet")).to_be_visible()
    expect(no_access).to_contain_text("signed in as Nina Newcomer")
    expect(no_access).to_contain_text("Ask an administrator")
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
    assert csp_violations(page) == []
    color = page.evaluate("getComputedStyle(document.querySelector('.button')).backgroundColor")
    assert color not in {"", "rgba(0, 0, 0, 0)"}, "its own style sheet is applied"
    page.get_by_role("link", name="Try again").click()
    sign_in_at_provider(page, "alice")
    page.wait_for_url(stack.url + "/?tenant=ten_acme")
    expect(page.locator("#user-name")).to_have_text("Alice Admin")


def test_an_ended_session_brings_the_user_back_to_the_same_view(
    page: Page, stack: ServerProcess
) -> None:
    # Without the session's live events (a proxy that drops them, say), the tab learns of the
    # end at its next call; tests/browser/test_session_live.py has the tab that hears at once.
    page.route("**/api/bff/v1/auth/session/events", lambda route: route.abort())
    sign_in(page, stack, "alice", US_EAST)
    row = create_in_ui(page, "after-expiry", "GitHub CI", "Orders API")

    # The session ends on the server while the page is open (here: signed out everywhere from
    # elsewhere), and the browser still holds its cookie.
    (cookie,) = [c for c in page.context.cookies() if c["name"].endswith("bff_session")]
    ended = page.evaluate(
        """fetch("/api/bff/v1/auth/sessions", {method: "DELETE", headers: {"X-CSRF": "1"}})
             .then(r => r.status)"""
    )
    assert ended == 200
    page.context.add_cookies([cookie])  # type: ignore[list-item]

    edit_button(row).click()
    heading = page.get_by_role("heading", name="Your session has ended")
    expect(heading).to_be_visible()
    expect(heading).to_be_focused()
    expect(page.locator("#signed-out")).to_contain_text("Sign in again to come back to this view.")
    expect(announced(page)).to_contain_text("Your session has ended.")
    sign_in_link = page.get_by_role("link", name="Sign in")
    assert sign_in_link.get_attribute("href") == (
        "/api/bff/v1/auth/login?returnTo=%2F%3Ftenant%3Dten_acme%26cluster%3Dplane_dev_us_east_1"
    )
    sign_in_link.click()
    sign_in_at_provider(page, "alice")
    page.wait_for_url(stack.url + US_EAST)
    expect(page.locator("#tenant")).to_have_value("ten_acme")
    expect(page.locator("#cluster")).to_have_value("plane_dev_us_east_1")
    expect(flow_row(page, "after-expiry")).to_have_count(1)
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_back_and_forward_move_between_the_clusters_seen(page: Page, stack: ServerProcess) -> None:
    sign_in(page, stack, "alice", US_EAST)
    expect(page.locator("#cluster-name")).to_have_text("Dev US East 1")
    open_cluster(page, "ten_acme", "plane_dev_eu_west_1")
    page.wait_for_url(stack.url + "/?tenant=ten_acme&cluster=plane_dev_eu_west_1")
    expect(page.locator("#cluster-name")).to_have_text("Dev EU West 1")
    page.go_back()
    page.wait_for_url(stack.url + US_EAST)
    expect(page.locator("#cluster-name")).to_have_text("Dev US East 1")
    expect(page.locator("#cluster")).to_have_value("plane_dev_us_east_1")


def test_signing_out_another_browser_and_everywhere(page: Page, stack: ServerProcess) -> None:
    sign_in(page, stack, "carol")
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
        expect(announced(page)).to_have_text("Signed out Firefox on Windows.")
        expect(sessions).to_have_count(1)
        assert laptop.get(whoami, headers={"X-CSRF": "1"}).status_code == 401

    page.get_by_role("button", name="Sign out everywhere").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("this one included")
    dialog.get_by_role("button", name="Sign out everywhere").click()
    expect(page.get_by_role("heading", name="You are signed out everywhere")).to_be_visible()
    page.reload()
    expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_a_session_that_cannot_be_renewed_offers_a_quiet_sign_in_before_it_ends(
    page: Page, stack: ServerProcess
) -> None:
    sign_in(page, stack, "alice")

    def as_if_not_renewable(route: Route) -> None:
        # The gateway's real answer, as it is for a provider that issued no refresh token.
        answer = route.fetch()
        session = answer.json()
        session["refreshable"] = False
        ends = datetime.now(UTC) + timedelta(seconds=90)
        session["expiresAt"] = ends.isoformat(timespec="seconds").replace("+00:00", "Z")
        route.fulfill(response=answer, json=session)

    page.route("**/api/bff/v1/auth/session", as_if_not_renewable)
    page.goto(stack.url + US_EAST)
    notice = page.locator("#expiry")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("Your sign-in ends at")
    stay = page.get_by_role("link", name="Stay signed in")
    expect(stay).to_have_attribute(
        "href",
        "/api/bff/v1/auth/login?prompt=none&returnTo="
        "%2F%3Ftenant%3Dten_acme%26cluster%3Dplane_dev_us_east_1",
    )
    page.unroute("**/api/bff/v1/auth/session")
    stay.click()
    # The development provider does not do prompt=none: it asks, and the user comes back.
    sign_in_at_provider(page, "alice")
    page.wait_for_url(stack.url + US_EAST)
    expect(page.locator("#user-name")).to_have_text("Alice Admin")
    expect(page.locator("#cluster")).to_have_value("plane_dev_us_east_1")
    expect(notice).to_be_hidden()


def test_a_gateway_that_does_not_answer_is_said_plainly_with_a_way_to_retry(
    page: Page, stack: ServerProcess
) -> None:
    page.route("**/api/bff/v1/auth/session", lambda route: route.abort())
    page.goto(stack.url + "/")
    message = page.locator("#page-message").get_by_role("alert")
    expect(message).to_contain_text("The gateway did not answer.")
    expect(page.locator("#loading")).to_be_hidden()
    expect(page.locator("#signed-out")).to_be_hidden()  # nobody said the user is signed out
    page.unroute("**/api/bff/v1/auth/session")
    message.get_by_role("button", name="Try again").click()
    expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()
    expect(message).to_have_count(0)
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_a_list_shown_again_is_revalidated_and_its_rows_kept_while_unchanged(
    page: Page, stack: ServerProcess
) -> None:
    sign_in(page, stack, "alice", US_EAST)
    flow = {"sourceId": "ing_github_ci", "destinationId": "dest_billing_svc"}
    create_by_api(page, "ten_acme", "plane_dev_us_east_1", [{"name": "shown-again", **flow}])
    page.reload()
    expect(flow_row(page, "shown-again")).to_have_count(1)
    shown = page.evaluate(
        "[...document.querySelectorAll('#flow-rows tr')].map((row) => (row.dataset.seen = 'yes'))"
    )

    def show_the_tab_again() -> Response:
        with page.expect_response(
            lambda r: r.url.endswith("/delivery-flows") and r.request.method == "GET"
        ) as answer:
            page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
        return answer.value

    unchanged = show_the_tab_again()
    assert unchanged.status == 304
    assert unchanged.request.headers["if-none-match"] == unchanged.headers["etag"]
    # The very rows shown before: nothing was drawn again.
    expect(page.locator("#flow-rows tr[data-seen=yes]")).to_have_count(len(shown))

    create_by_api(page, "ten_acme", "plane_dev_us_east_1", [{"name": "shown-again-2", **flow}])
    changed = show_the_tab_again()
    assert changed.status == 200
    assert changed.request.headers["if-none-match"] == unchanged.headers["etag"]
    expect(flow_row(page, "shown-again-2")).to_have_count(1)
    assert flow_names(page)[0] == "shown-again-2"
    expect(announced(page)).to_contain_text("The list of flows changed")
    assert page.page_errors == []  # type: ignore[attr-defined]
