"""Cookies as a browser keeps them, for the BFF driven in-process.

:class:`Browser` keeps cookies the way a browser does (name → value, deleted on ``Max-Age=0``)
and sends them explicitly, so a test can plant, swap or replay any cookie; :func:`set_cookies`
reads a response's ``Set-Cookie`` headers with their attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.gateway import BFF


@dataclass(frozen=True)
class SetCookie:
    name: str
    value: str
    attributes: dict[str, str]
    """Lower-cased attribute names; flags (HttpOnly, Secure) map to ``""``."""

    @property
    def deleted(self) -> bool:
        return self.attributes.get("max-age") == "0"


def set_cookies(response: httpx.Response) -> list[SetCookie]:
    cookies = []
    for header in response.headers.get_list("set-cookie"):
        first, *rest = (part.strip() for part in header.split(";"))
        name, _, value = first.partition("=")
        attributes = {}
        for part in rest:
            key, _, attribute = part.partition("=")
            attributes[key.strip().lower()] = attribute.strip()
        cookies.append(SetCookie(name, value.strip('"'), attributes))
    return cookies


@dataclass
class Browser:
    """One browser: its own cookies, sent explicitly on every request to the BFF."""

    client: httpx.AsyncClient
    cookies: dict[str, str] = field(default_factory=dict)
    origin: str = BFF
    user_agent: str | None = None

    async def request(
        self, method: str, url: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        sent = dict(headers or {})
        if self.user_agent is not None:
            sent.setdefault("User-Agent", self.user_agent)
        if self.cookies and "Cookie" not in sent:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = await self.client.request(method, url, headers=sent, **kwargs)
        # httpx would keep its own jar too; this class is the only cookie store.
        self.client.cookies.clear()
        for cookie in set_cookies(response):
            if cookie.deleted:
                self.cookies.pop(cookie.name, None)
            else:
                self.cookies[cookie.name] = cookie.value
        return response

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def api(
        self, method: str, url: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        """A call as the dashboard's script makes it: ``X-CSRF: 1`` and, if unsafe, Origin."""
        sent = {"X-CSRF": "1"}
        if method not in {"GET", "HEAD"}:
            sent["Origin"] = self.origin
        sent.update(headers or {})
        return await self.request(method, url, headers=sent, **kwargs)
