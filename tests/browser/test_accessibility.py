"""The console for people who use a keyboard or a screen reader: axe-core on every screen state
(no serious or critical violation), keyboard-only create, edit and delete, visible focus."""

from __future__ import annotations

import re

import pytest

from tests.browser.driver import (
    HeldRequests,
    Page,
    announced,
    assert_accessible,
    choose_by_keyboard,
    create_form,
    create_in_ui,
    delete_button,
    edit_button,
    edit_form,
    expect,
    fill_flow,
    flow_row,
    focused,
    sign_in,
    sign_in_at_provider,
    tab_to,
)
from tests.support.processes import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

US_EAST = "/?tenant=ten_acme&cluster=plane_dev_us_east_1"


def test_every_screen_state_passes_axe(page: Page, stack: ServerProcess) -> None:
    page.goto(stack.url + "/")
    expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()
    assert_accessible(page, "signed out")

    page.get_by_role("link", name="Sign in").click()
    expect(page.get_by_label("User name")).to_be_visible()
    assert_accessible(page, "the provider's sign-in page")
    sign_in_at_provider(page, "alice")
    expect(page.locator("#choose-hint")).to_be_visible()
    assert_accessible(page, "signed in, no cluster chosen")

    page.select_option("#cluster", "plane_dev_us_east_1")
    expect(page.locator("#flows-region")).to_have_attribute("aria-busy", "false")
    assert_accessible(page, "an empty cluster")

    listing = HeldRequests("GET", lambda r: r.url.endswith("/delivery-flows"))
    page.route("**/delivery-flows", listing)
    page.reload()
    expect(page.locator("#flow-rows .skeleton-row").first).to_be_visible()
    assert_accessible(page, "loading the flows")
    listing.release(page)
    page.unroute("**/delivery-flows")

    row = create_in_ui(page, "axe-flow", "Stripe production", "Orders API")
    assert_accessible(page, "a flow just created")

    page.get_by_role("button", name="New flow").click()
    create_form(page).get_by_role("button", name="Create flow").click()
    expect(create_form(page).get_by_role("alert")).to_be_visible()
    assert_accessible(page, "the new flow form with field errors")
    fill_flow(create_form(page), "axe-flow", "Stripe production", "Orders API")
    create_form(page).get_by_role("button", name="Create flow").click()
    expect(create_form(page).locator(".request-id")).to_be_visible()
    assert_accessible(page, "an error with a request id")
    page.keyboard.press("Escape")

    edit_button(row).click()
    expect(edit_form(page)).to_be_visible()
    assert_accessible(page, "an inline edit")
    page.keyboard.press("Escape")

    delete_button(row).click()
    expect(page.get_by_role("dialog")).to_be_visible()
    assert_accessible(page, "the delete confirmation")
    page.keyboard.press("Escape")

    page.get_by_text("Where you are signed in").click()
    expect(page.locator("#session-list li").first).to_contain_text("(this browser)")
    assert_accessible(page, "the sessions panel")

    page.emulate_media(color_scheme="dark")
    assert_accessible(page, "dark mode")
    page.set_viewport_size({"width": 390, "height": 844})
    assert_accessible(page, "a phone, dark")
    page.emulate_media(color_scheme="light")
    assert_accessible(page, "a phone, light")
    page.set_viewport_size({"width": 1280, "height": 900})

    # The session ends under the page.
    page.context.clear_cookies()
    edit_button(row).click()
    expect(page.get_by_role("heading", name="Your session has ended")).to_be_visible()
    assert_accessible(page, "the session has ended")
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_the_flows_as_cards_pass_axe_on_a_phone_and_a_tablet(
    page: Page, stack: ServerProcess
) -> None:
    sign_in(page, stack, "alice", US_EAST)
    row = create_in_ui(page, "axe-cards", "GitHub CI", "Billing service")
    for width in (390, 900):
        page.set_viewport_size({"width": width, "height": 844})
        assert_accessible(page, f"the flows at {width} px")
        edit_button(row).click()
        expect(edit_form(page)).to_be_visible()
        assert_accessible(page, f"an inline edit at {width} px")
        page.keyboard.press("Escape")
        delete_button(row).click()
        expect(page.get_by_role("dialog")).to_be_visible()
        assert_accessible(page, f"the delete confirmation at {width} px")
        page.keyboard.press("Escape")
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_a_reader_and_a_user_without_access_pass_axe(page: Page, stack: ServerProcess) -> None:
    sign_in(page, stack, "bob", US_EAST)
    expect(page.get_by_role("note")).to_be_visible()
    assert_accessible(page, "read-only")
    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page.get_by_role("heading", name="Sign out")).to_be_visible()
    assert_accessible(page, "the provider's sign-out page")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(stack.url + "/*")

    sign_in(page, stack, "nina")
    expect(page.get_by_role("heading", name="You have no access yet")).to_be_visible()
    assert_accessible(page, "no access")


def test_the_gateway_failure_page_passes_axe(page: Page, stack: ServerProcess) -> None:
    page.goto(stack.url + "/")
    page.get_by_role("link", name="Sign in").click()
    page.get_by_role("button", name="Deny").click()
    expect(page.get_by_role("heading", name="Sign-in failed")).to_be_visible()
    assert_accessible(page, "the sign-in failed page")


def test_create_edit_and_delete_with_the_keyboard_only(page: Page, stack: ServerProcess) -> None:
    sign_in(page, stack, "alice", US_EAST)
    create_in_ui(page, "keyboard-neighbour", "GitHub CI", "Billing service")
    page.goto(stack.url + US_EAST)
    expect(page.locator("#flows-region")).to_have_attribute("aria-busy", "false")

    # The first Tab offers a way past the header.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()

    # Create.
    tab_to(page, page.get_by_role("button", name="New flow"))
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid", "the focus is visible"
    page.keyboard.press("Enter")
    expect(create_form(page).get_by_label("Name", exact=True)).to_be_focused()
    page.keyboard.type("keyboard-flow")
    page.keyboard.press("Tab")
    expect(create_form(page).get_by_label("Source")).to_be_focused()
    choose_by_keyboard(page, create_form(page).get_by_label("Source"), "Stripe production")
    page.keyboard.press("Tab")
    expect(create_form(page).get_by_label("Destination")).to_be_focused()
    choose_by_keyboard(page, create_form(page).get_by_label("Destination"), "Orders API")
    page.keyboard.press("Tab")
    expect(create_form(page).get_by_label("Attempts", exact=True)).to_be_focused()
    page.keyboard.press("Control+A")
    page.keyboard.type("5")
    page.keyboard.press("Enter")
    row = flow_row(page, "keyboard-flow")
    expect(row).to_contain_text("5 attempts")
    expect(row.locator(".flow-name")).to_be_focused()

    # Edit.
    tab_to(page, edit_button(row), limit=5)
    page.keyboard.press("Enter")
    name = edit_form(page).get_by_label("Name", exact=True)
    expect(name).to_be_focused()
    page.keyboard.press("Control+A")
    page.keyboard.type("keyboard-flow-2")
    page.keyboard.press("Enter")
    renamed = flow_row(page, "keyboard-flow-2")
    expect(renamed).to_contain_text("Saved")
    expect(edit_button(renamed)).to_be_focused()

    # Delete: the dialog starts on the safe choice.
    page.keyboard.press("Tab")
    expect(delete_button(renamed)).to_be_focused()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("button", name="Keep it")).to_be_focused()
    page.keyboard.press("Shift+Tab")
    expect(dialog.get_by_role("button", name="Delete flow")).to_be_focused()
    page.keyboard.press("Enter")
    expect(flow_row(page, "keyboard-flow-2")).to_have_count(0)
    expect(announced(page)).to_have_text("Deleted flow keyboard-flow-2.")
    # The focus moves to the flow that took its place, not to the top of the page.
    expect(focused(page)).to_have_text(re.compile(r"^keyboard-neighbour$"))

    # Everything else is reachable with Tab too.
    tab_to(page, page.get_by_text("Where you are signed in"))
    page.keyboard.press("Enter")
    tab_to(page, page.get_by_role("button", name="Sign out everywhere"), limit=10)
    assert page.page_errors == []  # type: ignore[attr-defined]
