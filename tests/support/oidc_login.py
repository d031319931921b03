"""Log in through the BFF and the development OpenID provider as a browser would.

``browser_login`` follows the redirects hop by hop, reads the provider's login page, submits its
form with the user name (the provider's ``sub`` field), and follows the redirects back through
the BFF callback to ``returnTo``. Cookies stay in the ``httpx.Client`` jar, as in a browser.
Every hop must stay on loopback: tests never send traffic anywhere else.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin

import httpx

__all__ = ["LoginForm", "browser_login", "find_login_form", "follow_redirects"]

MAX_REDIRECTS = 10


@dataclass
class LoginForm:
    """A ``<form>`` that has a text field named ``sub``, as the provider's login page does."""

    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)

    def submission(self, user: str) -> dict[str, str]:
        """The form data a browser sends when the user types ``user`` and presses the button."""
        return {**self.fields, "sub": user}


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[LoginForm, bool]] = []
        self._current: LoginForm | None = None
        self._has_sub_input = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self._current = LoginForm(
                action=attributes.get("action", ""),
                method=attributes.get("method", "get").lower(),
            )
            self._has_sub_input = False
        elif tag == "input" and self._current is not None and "name" in attributes:
            if attributes["name"] == "sub" and attributes.get("type", "text") == "text":
                self._has_sub_input = True
            elif attributes.get("type") in {"hidden", "text", None, ""}:
                self._current.fields[attributes["name"]] = attributes.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._current is not None:
            self.forms.append((self._current, self._has_sub_input))
            self._current = None


def find_login_form(page: httpx.Response) -> LoginForm:
    """The provider's login form on ``page``, with ``action`` resolved against the page URL."""
    parser = _FormParser()
    parser.feed(page.text)
    for form, has_sub_input in parser.forms:
        if has_sub_input:
            form.action = urljoin(str(page.url), form.action or str(page.url))
            return form
    raise AssertionError(f"no login form with a 'sub' field at {page.url} ({page.status_code})")


def _check_loopback(url: httpx.URL) -> None:
    host = url.host
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise AssertionError(f"refusing to leave loopback: {url}")


def follow_redirects(client: httpx.Client, response: httpx.Response) -> httpx.Response:
    """Follow 3xx responses with GET, as a browser does, keeping the chain in ``history``."""
    history: list[httpx.Response] = []
    while response.is_redirect:
        if len(history) >= MAX_REDIRECTS:
            raise AssertionError(f"more than {MAX_REDIRECTS} redirects, last at {response.url}")
        target = response.url.join(response.headers["location"])
        _check_loopback(target)
        history.append(response)
        response = client.get(target, follow_redirects=False)
    response.history = history
    return response


def browser_login(
    client: httpx.Client, bff_url: str, user: str, return_to: str = "/"
) -> httpx.Response:
    """Sign ``user`` in through the BFF and return the last response (the ``returnTo`` page).

    ``response.history`` holds the responses from the form submission on: the provider's
    redirect to the BFF callback, the callback's redirect to ``returnTo``, and any after it.
    Raises ``AssertionError`` if the provider's login page does not appear.
    """
    start = httpx.URL(
        f"{bff_url.rstrip('/')}/api/bff/v1/auth/login", params={"returnTo": return_to}
    )
    _check_loopback(start)
    page = follow_redirects(client, client.get(start, follow_redirects=False))
    form = find_login_form(page)
    action = httpx.URL(form.action)
    _check_loopback(action)
    if form.method == "post":
        submitted = client.post(action, data=form.submission(user), follow_redirects=False)
    else:
        submitted = client.get(action, params=form.submission(user), follow_redirects=False)
    return follow_redirects(client, submitted)
