"""Sign-in in-process: the BFF with its real authenticators over the fake provider.

:func:`running_app` drives the BFF in-process with its real authenticators, the fake provider
(:mod:`tests.support.provider`) and a mocked upstream; :func:`running_instances`, several of them
over one provider. :class:`Harness` bundles what a test needs from one: browsers
(:mod:`tests.support.cookies`), a sign-in through the provider, a session put straight into the
store. :func:`auth_settings` are the test settings with the fake provider as issuer and short,
round session timeouts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import respx
from starlette.applications import Starlette

from bff import create_app
from bff.settings import Settings
from bff.state.invalidation import RedisInvalidation
from bff.state.sessions import Session
from tests.support.clock import FakeClock
from tests.support.cookies import Browser
from tests.support.gateway import BFF, LOGIN, make_settings
from tests.support.provider import (
    BEARER_AUDIENCE,
    CLIENT_ID,
    CLIENT_SECRET,
    ISSUER,
    USERS,
    FakeProvider,
)

IDLE_TIMEOUT = 600
ABSOLUTE_TIMEOUT = 3600


def auth_settings(**sections: dict[str, Any]) -> Settings:
    """Test settings with the fake provider as issuer and short, round session timeouts."""
    base: dict[str, dict[str, Any]] = {
        "oidc": {
            "issuer": ISSUER,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "bearer_audience": BEARER_AUDIENCE,
        },
        "sessions": {
            "idle_timeout_seconds": IDLE_TIMEOUT,
            "absolute_timeout_seconds": ABSOLUTE_TIMEOUT,
        },
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return make_settings(**base)


@dataclass
class Harness:
    app: Starlette
    client: httpx.AsyncClient
    provider: FakeProvider
    clock: FakeClock
    upstream: respx.MockRouter
    base_url: str

    @property
    def cookie_name(self) -> str:
        return self.app.state.signin.session_auth.cookies.session

    def browser(self, user_agent: str | None = None) -> Browser:
        return Browser(self.client, origin=self.base_url, user_agent=user_agent)

    async def login(self, browser: Browser, user: str = "alice", return_to: str = "/") -> str:
        """Sign ``user`` in through the fake provider; returns the new session id."""
        start = await browser.get(LOGIN, params={"returnTo": return_to})
        assert start.status_code == 302, start.text
        callback = await browser.get(self.provider.authorize(start.headers["location"], user))
        assert callback.status_code == 302, callback.text
        assert callback.headers["location"] == return_to
        return browser.cookies[self.cookie_name]

    async def insert_session(self, user: str, **fields: Any) -> str:
        """A session put straight into the app's store, as a login of ``user`` would leave it."""
        demo = USERS[user]
        session = Session(
            sub=demo.sub,
            name=demo.name,
            email=demo.email,
            tenants=demo.tenants,
            access_token=demo.api_key,
            **fields,
        )
        raw_id: str = await self.app.state.signin.sessions.store.create(session)
        return raw_id

    def browser_with(self, raw_id: str) -> Browser:
        browser = self.browser()
        browser.cookies[self.cookie_name] = raw_id
        return browser


@asynccontextmanager
async def running_app(
    upstream: respx.MockRouter,
    *,
    settings: Settings | None = None,
    clock: FakeClock | None = None,
    base_url: str = BFF,
    real_idp: bool = False,
    provider: FakeProvider | None = None,
) -> AsyncIterator[Harness]:
    """The BFF with its real authenticators over a fake provider and the mocked upstream.

    With ``real_idp`` the BFF reaches the provider named by ``settings`` over the network.
    """
    if provider is not None:
        clock = provider.clock
    clock = clock or FakeClock()
    provider = provider or FakeProvider(clock)
    app = create_app(
        settings or auth_settings(),
        upstream_transport=httpx.MockTransport(upstream.async_handler),
        idp_transport=None if real_idp else provider.transport,
        clock=clock,
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=base_url) as client,
    ):
        yield Harness(app, client, provider, clock, upstream, base_url)


@asynccontextmanager
async def running_instances(
    settings: Settings, upstream: respx.MockRouter, provider: FakeProvider, count: int = 2
) -> AsyncIterator[list[Harness]]:
    """``count`` gateways with the real authenticators over one fake provider and the mocked
    upstream; sharing Redis, each is subscribed to the invalidation channel when handed out."""
    async with AsyncExitStack() as stack:
        harnesses = []
        for _ in range(count):
            app = create_app(
                settings,
                upstream_transport=httpx.MockTransport(upstream.async_handler),
                idp_transport=provider.transport,
                clock=provider.clock,
            )
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BFF)
            )
            invalidation = app.state.services.invalidation
            if isinstance(invalidation, RedisInvalidation):
                await asyncio.wait_for(invalidation.subscribed.wait(), timeout=5)
            harnesses.append(Harness(app, client, provider, provider.clock, upstream, BFF))
        yield harnesses
