"""What a person does in the console and at the development provider, as functions for tests.

Locators go by what a person sees (roles, labels, visible text) wherever the page allows it; the
ids used are the console's own, documented in ``bff/static/console.html``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.chromium import browser_required
from tests.support.processes import ServerProcess

try:
    from axe_playwright_python.sync_playwright import Axe
    from playwright.sync_api import Locator, Page, Request, Route, expect
except ImportError:
    if browser_required():
        raise
    pytest.skip("playwright is not installed (pip install -e '.[dev]')", allow_module_level=True)

FLOWS_API = "/api/bff/v1/tenants/{tenant}/clusters/{cluster}/delivery-flows"
REQUEST_ID = re.compile(r"req_[0-9a-f]{24}")
_AXE = Axe()


def sign_in(page: Page, stack: ServerProcess, user: str, path: str = "/") -> None:
    """From ``path`` signed out, through the provider's sign-in page, back to ``path``."""
    page.goto(stack.url + path)
    page.get_by_role("link", name="Sign in").click()
    sign_in_at_provider(page, user)
    # Back on the console; with the path given, or the one the console chose for the user.
    page.wait_for_url(lambda url: url.startswith(stack.url + path) and "/auth/" not in url)
    expect(page.locator("#account")).to_be_visible()


def sign_in_at_provider(page: Page, user: str) -> None:
    page.get_by_label("User name").fill(user)
    page.get_by_role("button", name="Sign in", exact=True).click()


def open_cluster(page: Page, tenant: str, cluster: str) -> None:
    expect(page.locator(f'#tenant option[value="{tenant}"]')).to_have_count(1)
    if page.locator("#tenant").input_value() != tenant:
        page.select_option("#tenant", tenant)
    expect(page.locator(f'#cluster option[value="{cluster}"]')).to_have_count(1)
    page.select_option("#cluster", cluster)
    expect(page.locator("#flows-region")).to_have_attribute("aria-busy", "false")
    expect(page.locator("#flows-panel")).to_be_visible()


def choose(form: Locator, label: str, option_text: str) -> None:
    """Pick the option whose visible text contains ``option_text`` (options read "name · id")."""
    select = form.get_by_label(label, exact=True)
    value = select.locator("option", has_text=option_text).get_attribute("value")
    assert value, f"no option {option_text!r} under {label!r}"
    select.select_option(value)


def create_form(page: Page) -> Locator:
    return page.locator("#create-form")


def edit_form(page: Page) -> Locator:
    return page.locator("#edit-form")


def fill_flow(form: Locator, name: str, source: str, destination: str) -> None:
    form.get_by_label("Name", exact=True).fill(name)
    choose(form, "Source", source)
    choose(form, "Destination", destination)


def create_in_ui(page: Page, name: str, source: str, destination: str) -> Locator:
    """Creates a flow with the New flow form; returns its row."""
    page.get_by_role("button", name="New flow").click()
    fill_flow(create_form(page), name, source, destination)
    create_form(page).get_by_role("button", name="Create flow").click()
    row = flow_row(page, name)
    expect(row).to_have_count(1)
    return row


def flow_row(page: Page, name: str) -> Locator:
    """The row (or, on a narrow screen, the card) of the flow named exactly ``name``."""
    exact = re.compile("^" + re.escape(name) + "$")
    return page.locator("#flow-rows tr[data-flow-id]").filter(
        has=page.locator(".flow-name", has_text=exact)
    )


def edit_button(row: Locator) -> Locator:
    return row.get_by_role("button", name=re.compile(r"^Edit "))


def delete_button(row: Locator) -> Locator:
    return row.get_by_role("button", name=re.compile(r"^Delete "))


def flow_names(page: Page) -> list[str]:
    return page.locator("#flow-rows .flow-name").all_text_contents()


def create_by_api(page: Page, tenant: str, cluster: str, flows: list[dict[str, Any]]) -> None:
    """Creates flows in order through the gateway with the page's session (oldest first)."""
    statuses = page.evaluate(
        """async ([path, flows]) => {
            const statuses = [];
            for (const flow of flows) {
              const response = await fetch(path, {
                method: "POST",
                headers: {"X-CSRF": "1", "Content-Type": "application/json"},
                body: JSON.stringify(flow),
              });
              statuses.push(response.status);
            }
            return statuses;
        }""",
        [FLOWS_API.format(tenant=tenant, cluster=cluster), flows],
    )
    assert statuses == [201] * len(flows), statuses


def announced(page: Page) -> Locator:
    """The live region that tells screen-reader users what changed."""
    return page.locator("#announcer")


def csp_violations(page: Page) -> list[str]:
    violations: list[str] = page.evaluate("window.__cspViolations || []")
    return violations


def assert_accessible(page: Page, state: str) -> None:
    """axe-core finds no serious or critical violation on the page as it is now."""
    results = _AXE.run(page)
    bad = [v for v in results.response["violations"] if v["impact"] in {"serious", "critical"}]
    report = "\n".join(
        f"  {v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(str(node["target"]) for node in v["nodes"][:5])
        for v in bad
    )
    assert not bad, f"axe found serious or critical violations ({state}):\n{report}"


def assert_no_sideways_scroll(page: Page, state: str) -> None:
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], f"the page scrolls sideways ({state}): {widths}"


def focused(page: Page) -> Locator:
    return page.locator("*:focus")


def tab_to(page: Page, target: Locator, limit: int = 60) -> int:
    """Presses Tab until ``target`` has the focus; how many presses it took (fails past limit)."""
    for presses in range(1, limit + 1):
        page.keyboard.press("Tab")
        if target.evaluate("element => element === document.activeElement"):
            return presses
    raise AssertionError(f"{target} cannot be reached with Tab ({limit} presses)")


def choose_by_keyboard(page: Page, select: Locator, option_text: str) -> None:
    """With ``select`` focused, presses ArrowDown until its choice contains ``option_text``."""
    for _ in range(20):
        if option_text in select.evaluate("s => s.selectedOptions[0]?.textContent || ''"):
            return
        page.keyboard.press("ArrowDown")
    raise AssertionError(f"no option {option_text!r} reached with the arrow keys")


class HeldRequests:
    """A route handler that holds matching requests until :meth:`release`, to see busy states."""

    def __init__(self, method: str, matches: Callable[[Request], bool] = lambda _: True) -> None:
        self.method = method
        self.matches = matches
        self.held: list[Route] = []

    def __call__(self, route: Route) -> None:
        if route.request.method == self.method and self.matches(route.request):
            self.held.append(route)
        else:
            route.fallback()

    def release(self, page: Page, timeout_ms: float = 10_000) -> None:
        """Lets the held requests go on, once there is one (the page may not have sent it yet)."""
        waited = 0.0
        while not self.held:
            assert waited < timeout_ms, f"no {self.method} request to hold came"
            page.wait_for_timeout(50)  # the route handler runs meanwhile
            waited += 50
        for route in self.held:
            route.continue_()
        self.held.clear()
