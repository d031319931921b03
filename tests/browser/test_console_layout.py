"""The console's layout in a real Chromium: phone widths, dark mode, and the screenshots of the
flows screen (desktop and phone) that a person can look at after a run."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest
from PIL import Image

from tests.browser.driver import (
    Locator,
    Page,
    announced,
    assert_no_sideways_scroll,
    create_by_api,
    create_form,
    create_in_ui,
    delete_button,
    edit_button,
    edit_form,
    expect,
    fill_flow,
    flow_row,
    sign_in,
)
from tests.support.chromium import ARTIFACTS
from tests.support.processes import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

US_EAST = "/?tenant=ten_acme&cluster=plane_dev_us_east_1"
EU_WEST = "/?tenant=ten_acme&cluster=plane_dev_eu_west_1"
PHONE = {"width": 390, "height": 844}
SMALLEST = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 800}
# The README shows these two: `UPDATE_SCREENSHOTS=1 pytest tests/browser -k screenshots` renews
# them, made small.
README_SCREENSHOTS = Path(__file__).parent / "screenshots"


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def _assert_within_screen(page: Page, control: Locator, what: str) -> None:
    """On screen once scrolled to, inside the page's width, and big enough to tap."""
    control.scroll_into_view_if_needed()
    expect(control).to_be_in_viewport()
    box = control.bounding_box()
    assert box is not None, what
    width = page.viewport_size["width"] if page.viewport_size else 0
    assert box["x"] >= 0 and box["x"] + box["width"] <= width, f"{what} sticks out: {box}"
    assert box["height"] >= 36, f"{what} is too small to tap: {box}"


def test_screenshots_of_the_flows_screen_on_a_desktop_and_a_phone(
    page: Page, stack: ServerProcess, tmp_path: Path
) -> None:
    sign_in(page, stack, "alice", US_EAST)
    create_by_api(
        page,
        "ten_acme",
        "plane_dev_us_east_1",
        [
            {"name": "github-ci-to-billing", "sourceId": "ing_github_ci",
             "destinationId": "dest_billing_svc",
             "retryPolicy": {"maxAttempts": 5, "backoffSeconds": 30}},
            {"name": "stripe-invoices-to-billing", "sourceId": "ing_stripe_prod",
             "destinationId": "dest_billing_svc"},
            {"name": "stripe-payments-to-orders", "sourceId": "ing_stripe_prod",
             "destinationId": "dest_orders_api",
             "retryPolicy": {"maxAttempts": 8, "backoffSeconds": 60}},
        ],
    )  # fmt: skip
    shots = {}
    for name, size in [("flows-desktop", DESKTOP), ("flows-phone", PHONE)]:
        page.set_viewport_size(size)
        page.reload()
        expect(flow_row(page, "github-ci-to-billing")).to_be_visible()
        expect(page.locator("#flows-region")).to_have_attribute("aria-busy", "false")
        shots[name] = tmp_path / f"{name}.png"
        page.screenshot(path=str(shots[name]), full_page=True, animations="disabled")

    ARTIFACTS.mkdir(exist_ok=True)
    for name, shot in shots.items():
        assert shot.stat().st_size > 10_000, f"{name} looks empty"
        shutil.copy(shot, ARTIFACTS / shot.name)
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            # Kept small for the README: 256 colours are plenty for a flat interface.
            with Image.open(shot) as image:
                image.convert("RGB").quantize(colors=256).save(
                    README_SCREENSHOTS / shot.name, optimize=True
                )
    assert _png_size(shots["flows-desktop"])[0] == DESKTOP["width"]
    assert _png_size(shots["flows-phone"])[0] == PHONE["width"]


def test_the_readme_shows_the_flows_screen_on_a_desktop_and_a_phone() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    for name, size in [("flows-desktop", DESKTOP), ("flows-phone", PHONE)]:
        path = README_SCREENSHOTS / f"{name}.png"
        assert f"tests/browser/screenshots/{name}.png" in readme
        assert _png_size(path)[0] == size["width"]
        assert path.stat().st_size < 300_000, f"{path} should be optimized"


def test_on_a_phone_nothing_scrolls_sideways_and_every_action_is_reachable(
    page: Page, stack: ServerProcess
) -> None:
    page.set_viewport_size(PHONE)
    page.goto(stack.url + EU_WEST)
    expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()
    assert_no_sideways_scroll(page, "signed out")
    sign_in(page, stack, "alice", EU_WEST)
    long_name = "phone-" + "x" * 122  # the longest name there can be, with no place to break
    eu = {"sourceId": "ing_shopify_eu", "destinationId": "dest_eu_warehouse"}
    flows = [{"name": f"phone-{i:02d}", **eu} for i in range(20)]
    flows.append({"name": long_name, **eu})
    create_by_api(page, "ten_acme", "plane_dev_eu_west_1", flows)
    page.reload()
    row = flow_row(page, long_name)
    expect(row).to_be_visible()
    assert_no_sideways_scroll(page, "flows")

    # Cards, not a table: each flow's facts are labelled in the card.
    assert row.evaluate("row => getComputedStyle(row).display") == "block"
    expect(row.locator(".cell-label", has_text="Source")).to_be_visible()
    expect(row.locator(".cell-label", has_text="Destination")).to_be_visible()
    expect(page.locator("#flows thead")).not_to_be_in_viewport()

    for control, what in [
        (page.get_by_label("Tenant", exact=True), "the tenant picker"),
        (page.get_by_label("Cluster", exact=True), "the cluster picker"),
        (page.get_by_role("button", name="Sign out", exact=True), "Sign out"),
        (page.get_by_role("button", name="New flow"), "New flow"),
        (edit_button(row), "Edit"),
        (delete_button(row), "Delete"),
        (page.get_by_role("button", name="Load more"), "Load more"),
        (page.get_by_text("Where you are signed in"), "the sessions panel"),
    ]:
        _assert_within_screen(page, control, what)

    page.get_by_role("button", name="Load more").click()
    expect(page.locator("#flow-rows tr[data-flow-id]")).to_have_count(21)
    assert_no_sideways_scroll(page, "all flows")

    page.get_by_role("button", name="New flow").click()
    fill_flow(create_form(page), long_name, "Shopify EU", "EU warehouse")
    assert_no_sideways_scroll(page, "the new flow form")
    create_form(page).get_by_role("button", name="Create flow").click()
    expect(create_form(page).get_by_role("alert")).to_contain_text("clashes with another flow")
    assert_no_sideways_scroll(page, "an error with a request id")
    _assert_within_screen(page, create_form(page).get_by_role("button", name="Cancel"), "Cancel")
    create_form(page).get_by_label("Name", exact=True).fill("made-on-a-phone")
    create_form(page).get_by_role("button", name="Create flow").click()
    expect(announced(page)).to_contain_text("Created flow made-on-a-phone.")

    edit_button(row).click()
    expect(edit_form(page)).to_be_visible()
    assert_no_sideways_scroll(page, "an inline edit")
    _assert_within_screen(page, edit_form(page).get_by_role("button", name="Save changes"), "Save")
    edit_form(page).get_by_role("button", name="Cancel").click()

    delete_button(row).click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    _assert_within_screen(page, dialog.get_by_role("button", name="Delete flow"), "confirm")
    assert_no_sideways_scroll(page, "the delete dialog")
    dialog.get_by_role("button", name="Delete flow").click()
    expect(flow_row(page, long_name)).to_have_count(0)

    page.set_viewport_size(SMALLEST)
    assert_no_sideways_scroll(page, "360 px")
    _assert_within_screen(page, page.get_by_role("button", name="New flow"), "New flow at 360 px")
    assert page.page_errors == []  # type: ignore[attr-defined]


def _luminance(css_color: str) -> float:
    inside = css_color[css_color.index("(") + 1 : -1]
    red, green, blue = (int(part) for part in inside.split(",")[:3])
    return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255


def test_dark_mode_follows_the_system(page: Page, stack: ServerProcess) -> None:
    sign_in(page, stack, "alice", US_EAST)
    create_in_ui(page, "in-the-dark", "GitHub CI", "Orders API")
    background = "getComputedStyle(document.body).backgroundColor"
    text = "getComputedStyle(document.body).color"
    assert _luminance(page.evaluate(background)) > 0.8
    page.emulate_media(color_scheme="dark")
    assert _luminance(page.evaluate(background)) < 0.2
    assert _luminance(page.evaluate(text)) > 0.8
    table = "getComputedStyle(document.querySelector('#flows')).backgroundColor"
    assert _luminance(page.evaluate(table)) < 0.2
    page.emulate_media(color_scheme="light")
    assert _luminance(page.evaluate(background)) > 0.8
