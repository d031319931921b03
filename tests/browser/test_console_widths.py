"""The console at every width a person uses, from a small phone to a desktop, in each screen state:
nothing scrolls sideways, every action is on screen, form fields use a phone's width, and no
heading breaks inside a word. One page looks at every case; a screenshot of each is left in
``tests/browser/artifacts/widths/``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.browser.driver import (
    Locator,
    Page,
    assert_no_sideways_scroll,
    create_by_api,
    create_form,
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
WIDTHS = [360, 390, 600, 768, 800, 900, 1024, 1280]
HEIGHT = 800
PHONE_MAX_WIDTH = 600
STATES = ["list", "new", "edit", "delete", "error", "read-only"]
FORM_STATES = {"new", "edit", "error"}
FORM_FIELDS = {"Name", "Source", "Destination"}
EDITED = "stripe-refunds-to-billing"
FLOWS = [
    {"name": "github-ci-to-orders", "sourceId": "ing_github_ci", "destinationId": "dest_orders_api",
     "retryPolicy": {"maxAttempts": 5, "backoffSeconds": 30}},
    {"name": EDITED, "sourceId": "ing_stripe_prod", "destinationId": "dest_billing_svc"},
    {"name": "stripe-payouts-to-orders", "sourceId": "ing_stripe_prod",
     "destinationId": "dest_orders_api", "retryPolicy": {"maxAttempts": 8, "backoffSeconds": 60}},
]  # fmt: skip
SHOTS = ARTIFACTS / "widths"

# Buttons and links a person can see, each with where it reaches horizontally: its box in page
# coordinates and how much of it the boxes that clip their content (overflow) leave showing.
ACTIONS_JS = """() => {
  const seen = [];
  for (const action of document.querySelectorAll("button, a[href]")) {
    if (!action.checkVisibility()) continue;
    const box = action.getBoundingClientRect();
    // The visually hidden, and the skip link waiting above the page for the focus.
    if (box.width <= 1 || box.height <= 1 || box.bottom + window.scrollY <= 0) continue;
    let left = box.left;
    let right = box.right;
    for (let outer = action.parentElement; outer; outer = outer.parentElement) {
      if (getComputedStyle(outer).overflowX === "visible") continue;
      const clip = outer.getBoundingClientRect();
      left = Math.max(left, clip.left);
      right = Math.min(right, clip.right);
    }
    seen.push({
      name: action.textContent.trim().replace(/\\s+/g, " "),
      left: box.left + window.scrollX,
      right: box.right + window.scrollX,
      width: box.width,
      shown: Math.max(0, right - left),
    });
  }
  return {actions: seen, viewport: document.documentElement.clientWidth};
}"""

# Text inputs and selects a person can see, with the content width of the box their form sits in.
FIELDS_JS = """() => {
  const textTypes = ["text", "search", "email", "url", "tel", "password"];
  const fields = [...document.querySelectorAll("input, select")].filter((field) =>
    field.checkVisibility() && (field.tagName === "SELECT" || textTypes.includes(field.type)));
  return fields.map((field) => {
    const container = (field.form || field).parentElement;
    const style = getComputedStyle(container);
    const content = container.clientWidth - parseFloat(style.paddingLeft)
      - parseFloat(style.paddingRight);
    return {
      name: (field.labels && field.labels[0] ? field.labels[0].textContent : field.name).trim(),
      width: field.getBoundingClientRect().width,
      container: container.tagName + "." + container.className,
      content,
    };
  });
}"""

# Words of the headings on screen that are split across lines although the line is long enough
# for them: each word's Range gives one rectangle per line it is on.
SPLIT_WORDS_JS = """() => {
  const split = [];
  for (const heading of document.querySelectorAll("h1, h2, h3, legend")) {
    if (!heading.checkVisibility() || heading.getClientRects().length === 0) continue;
    const outer = getComputedStyle(heading.parentElement);
    const own = getComputedStyle(heading);
    const room = heading.parentElement.clientWidth
      - parseFloat(outer.paddingLeft) - parseFloat(outer.paddingRight)
      - parseFloat(own.paddingLeft) - parseFloat(own.paddingRight)
      - parseFloat(own.borderLeftWidth) - parseFloat(own.borderRightWidth);
    const walker = document.createTreeWalker(heading, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const word of node.data.matchAll(/\\S+/g)) {
        const range = document.createRange();
        range.setStart(node, word.index);
        range.setEnd(node, word.index + word[0].length);
        const rects = [...range.getClientRects()].filter((rect) => rect.width > 0);
        const tops = [];
        for (const rect of rects) {
          if (!tops.some((top) => Math.abs(top - rect.top) < rect.height / 2)) tops.push(rect.top);
        }
        const width = rects.reduce((sum, rect) => sum + rect.width, 0);
        if (tops.length > 1 && width <= room) {
          split.push({heading: heading.textContent.trim(), word: word[0], lines: tops.length,
                      width, room});
        }
      }
    }
  }
  return split;
}"""


@dataclass
class Console:
    """The one page these tests look through, and what it shows now."""

    page: Page
    stack: ServerProcess
    user: str | None = None
    state: str | None = None

    def show(self, state: str) -> None:
        """Brings the page to ``state`` (at the size it has), unless it is there already."""
        user = "bob" if state == "read-only" else "alice"
        if user != self.user:
            self.page.context.clear_cookies()
            sign_in(self.page, self.stack, user, US_EAST)
            self.user, self.state = user, None
        if state == self.state:
            return
        self.state = None
        self.page.goto(self.stack.url + US_EAST)
        row = flow_row(self.page, EDITED)
        expect(row).to_be_visible()
        expect(self.page.locator("#flows-region")).to_have_attribute("aria-busy", "false")
        if state == "new":
            self.page.get_by_role("button", name="New flow").click()
            expect(create_form(self.page)).to_be_visible()
        elif state == "edit":
            edit_button(row).click()
            expect(edit_form(self.page)).to_be_visible()
        elif state == "delete":
            delete_button(row).click()
            expect(self.page.get_by_role("dialog")).to_be_visible()
        elif state == "read-only":
            expect(self.page.get_by_role("note")).to_be_visible()
        elif state == "error":
            self.page.get_by_role("button", name="New flow").click()
            fill_flow(create_form(self.page), EDITED, "Stripe production", "Billing service")
            create_form(self.page).get_by_role("button", name="Create flow").click()
            expect(create_form(self.page).get_by_role("alert")).to_contain_text(
                "clashes with another flow"
            )
        self.state = state

    def actions(self, state: str) -> list[Locator]:
        """The actions a person has in ``state``, which must be on screen."""
        page = self.page
        buttons = {
            "list": [page.get_by_role("button", name="New flow"),
                     edit_button(flow_row(page, EDITED)), delete_button(flow_row(page, EDITED))],
            "new": [create_form(page).get_by_role("button", name="Create flow"),
                    create_form(page).get_by_role("button", name="Cancel")],
            "edit": [edit_form(page).get_by_role("button", name="Save changes"),
                     edit_form(page).get_by_role("button", name="Cancel")],
            "delete": [page.get_by_role("dialog").get_by_role("button", name="Delete flow"),
                       page.get_by_role("dialog").get_by_role("button", name="Keep it")],
            "read-only": [],
            "error": [create_form(page).get_by_role("button", name="Copy"),
                      create_form(page).get_by_role("button", name="Create flow"),
                      create_form(page).get_by_role("button", name="Cancel")],
        }  # fmt: skip
        return [*buttons[state], page.get_by_role("button", name="Sign out", exact=True)]


@pytest.fixture(scope="module")
def console(module_page: Page, stack: ServerProcess) -> Iterator[Console]:
    sign_in(module_page, stack, "alice", US_EAST)
    create_by_api(module_page, "ten_acme", "plane_dev_us_east_1", FLOWS)
    yield Console(module_page, stack, user="alice")
    assert module_page.page_errors == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("state", STATES)
def test_the_console_fits_the_width(console: Console, state: str, width: int) -> None:
    page = console.page
    page.set_viewport_size({"width": width, "height": HEIGHT})
    console.show(state)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        # The state is on screen once its actions are (a dialog opens after the click returns).
        for action in console.actions(state):
            expect(action).to_be_visible()
    finally:  # a picture of every case, a failed one too
        page.screenshot(
            path=str(SHOTS / f"{width}-{state}.png"), full_page=True, animations="disabled"
        )
    where = f"{state} at {width} px"

    assert_no_sideways_scroll(page, where)
    seen = page.evaluate(ACTIONS_JS)
    off_screen = [
        action
        for action in seen["actions"]
        if action["left"] < 0
        or action["right"] > seen["viewport"]
        or action["shown"] < action["width"] - 0.5
    ]
    assert off_screen == [], f"actions not fully on screen ({where}): {off_screen}"

    split = page.evaluate(SPLIT_WORDS_JS)
    assert split == [], f"headings broken inside a word ({where}): {split}"

    if width <= PHONE_MAX_WIDTH:
        fields = page.evaluate(FIELDS_JS)
        names = {field["name"] for field in fields}
        expected = {"Tenant", "Cluster"} | (FORM_FIELDS if state in FORM_STATES else set())
        assert expected <= names, f"fields missing ({where}): {names}"
        narrow = [field for field in fields if field["width"] < 0.8 * field["content"]]
        assert narrow == [], f"fields narrower than 80 % of their container ({where}): {narrow}"


def test_times_say_their_time_zone(console: Console) -> None:
    console.show("list")
    page = console.page
    cdp = page.context.new_cdp_session(page)
    try:
        cdp.send("Emulation.setTimezoneOverride", {"timezoneId": "America/New_York"})
        page.reload()
        updated = flow_row(page, EDITED).locator("time")
        expect(updated).to_be_visible()
        iso = updated.get_attribute("datetime")
        assert iso is not None
        local = datetime.fromisoformat(iso).astimezone(ZoneInfo("America/New_York"))
        hour = local.strftime("%I").lstrip("0")
        expected = re.compile(rf"\b{hour}:{local:%M}\b.*\b{local:%Z}$")  # EST or EDT
        expect(updated).to_have_text(expected)
    finally:
        cdp.send("Emulation.setTimezoneOverride", {"timezoneId": ""})
        cdp.detach()
