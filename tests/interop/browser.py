"""A browser made of ``httpx``: it follows redirects, fills the provider's forms and calls the API.

oidc-provider's development pages are plain HTML: a sign-in form (``login``, ``password``), a
consent form, a ``[ Cancel ]`` link that aborts the interaction, and a sign-out confirmation whose
buttons sit outside their form (``form="op.logoutForm"``). :class:`Page` reads them as a browser
would; :class:`Browser` keeps the cookies of both origins in one jar and never leaves loopback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin

import httpx

from bff.paths import API_PREFIX, LOGIN_PATH
from tests.support.oidc_login import follow_redirects

NAVIGATION_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
SESSION_COOKIE = "bff_session"
PASSWORD = "any password"
"""The development sign-in page takes any password."""


@dataclass
class Form:
    """A ``<form>`` with the fields a browser would send, buttons apart."""

    id: str
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: list[tuple[str, str]] = field(default_factory=list)
    """(name, value) of the submit buttons that belong to it, inside or by ``form=``."""


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self.links: dict[str, str] = {}
        self._form: Form | None = None
        self._link: str | None = None
        self._link_text = ""
        self._outside_buttons: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self._form = Form(
                id=attributes.get("id", ""),
                action=attributes.get("action", ""),
                method=attributes.get("method", "get").lower(),
            )
            self.forms.append(self._form)
        elif tag == "input" and "name" in attributes:
            owner = self._owner(attributes)
            if owner is not None and attributes.get("type", "text") != "submit":
                owner.fields[attributes["name"]] = attributes.get("value", "")
        elif tag == "button" and attributes.get("type", "submit") == "submit":
            button = (attributes.get("name", ""), attributes.get("value", ""))
            if "form" in attributes:
                self._outside_buttons.append((attributes["form"], *button))
            elif self._form is not None:
                self._form.buttons.append(button)
        elif tag == "a" and "href" in attributes:
            self._link, self._link_text = attributes["href"], ""

    def handle_data(self, data: str) -> None:
        if self._link is not None:
            self._link_text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "a" and self._link is not None:
            self.links[self._link_text.strip()] = self._link
            self._link = None

    def _owner(self, attributes: dict[str, str]) -> Form | None:
        if "form" in attributes:
            return next((form for form in self.forms if form.id == attributes["form"]), None)
        return self._form

    def close(self) -> None:
        super().close()
        for form_id, name, value in self._outside_buttons:
            for form in self.forms:
                if form.id == form_id:
                    form.buttons.append((name, value))


class Page:
    """An HTML page of the provider: its forms and links, URLs resolved against the page."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.url = str(response.url)
        parser = _PageParser()
        parser.feed(response.text)
        parser.close()
        for form in parser.forms:
            form.action = urljoin(self.url, form.action or self.url)
        self.forms = parser.forms
        self.links = {text: urljoin(self.url, href) for text, href in parser.links.items()}

    def form_with(self, name: str, value: str | None = None) -> Form:
        """The form that has a field ``name`` (with ``value``, if given)."""
        for form in self.forms:
            if name in form.fields and (value is None or form.fields[name] == value):
                return form
        raise AssertionError(
            f"no form with {name}={value!r} at {self.url} ({self.response.status_code}):\n"
            f"{self.response.text[:2000]}"
        )

    def link(self, text: str) -> str:
        if text not in self.links:
            raise AssertionError(f"no link {text!r} at {self.url}; links: {self.links}")
        return self.links[text]


@dataclass
class SignInStart:
    """The gateway's redirect to the provider, and the page the provider then showed."""

    authorization_request: httpx.URL
    page: Page


class Browser:
    """One user's browser on the gateway's origin (and the provider's, during sign-in)."""

    def __init__(self, client: httpx.Client, gateway_url: str) -> None:
        self.client = client
        self.gateway_url = gateway_url
        client.headers["Accept"] = NAVIGATION_ACCEPT

    # --- navigations -----------------------------------------------------------------------------

    def go(self, url: str | httpx.URL) -> httpx.Response:
        """Open ``url`` and follow its redirects, as typing it in the address bar does."""
        return follow_redirects(self.client, self.client.get(url, follow_redirects=False))

    def submit(
        self, form: Form, *, press: tuple[str, str] | None = None, **typed: str
    ) -> httpx.Response:
        """Send ``form`` with ``typed`` into its fields and a button pressed: ``press`` (its name
        and value), or else the first."""
        if press is not None and press not in form.buttons:
            raise AssertionError(f"no button {press} in the form to {form.action}: {form.buttons}")
        data = {**form.fields, **typed}
        name, value = press or (form.buttons[0] if form.buttons else ("", ""))
        if name:
            data[name] = value
        if form.method == "post":
            response = self.client.post(form.action, data=data, follow_redirects=False)
        else:
            response = self.client.get(form.action, params=data, follow_redirects=False)
        return follow_redirects(self.client, response)

    def start_sign_in(self, return_to: str = "/") -> SignInStart:
        """Press "sign in": the gateway sends the browser to the provider's sign-in page."""
        login = self.client.get(
            f"{self.gateway_url}{LOGIN_PATH}",
            params={"returnTo": return_to},
            follow_redirects=False,
        )
        assert login.status_code == 302, login.text
        authorization_request = login.url.join(login.headers["location"])
        return SignInStart(authorization_request, Page(follow_redirects(self.client, login)))

    def log_in(self, page: Page, user: str) -> Page:
        """Type ``user`` on the provider's sign-in page; the page that follows (consent)."""
        form = page.form_with("prompt", "login")
        return Page(self.submit(form, login=user, password=PASSWORD))

    def consent(self, page: Page) -> httpx.Response:
        """Press "Continue" on the consent page; the end of the redirects back."""
        return self.submit(page.form_with("prompt", "consent"))

    def sign_in(self, user: str = "alice", return_to: str = "/") -> httpx.Response:
        """The whole sign-in; the ``returnTo`` page the gateway finally sends the browser to."""
        start = self.start_sign_in(return_to)
        final = self.consent(self.log_in(start.page, user))
        expected = f"{self.gateway_url}{return_to}"
        assert str(final.url) == expected, (final.status_code, final.url, final.text[:2000])
        assert self.session_cookie(), "the callback set no session cookie"
        return final

    # --- the dashboard's API calls ---------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call of the dashboard's script: the CSRF header, our Origin on changes, JSON."""
        headers = {"X-CSRF": "1", "Accept": "application/json", **kwargs.pop("headers", {})}
        if method not in {"GET", "HEAD"}:
            headers["Origin"] = self.gateway_url
        return self.client.request(
            method, f"{self.gateway_url}{API_PREFIX}{path}", headers=headers, **kwargs
        )

    def session_cookie(self) -> str | None:
        return self.client.cookies.get(SESSION_COOKIE)
