"""The real development provider (``python -m devstack.idp``) as a process, and signing in there.

:func:`start_dev_provider` runs it on a free loopback port; :func:`real_login` signs a user in
through its login page, the BFF's hops in-process and the provider's on loopback.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.support.cookies import Browser
from tests.support.dev_stack import CONFIG
from tests.support.gateway import CALLBACK_URL, LOGIN
from tests.support.oidc_login import find_login_form
from tests.support.ports import free_port
from tests.support.processes import serving


@contextmanager
def start_dev_provider(redirect_uri: str = CALLBACK_URL) -> Iterator[str]:
    """``python -m devstack.idp`` on a free loopback port; yields its issuer URL."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    argv = [
        sys.executable, "-m", "devstack.idp",
        "--config", CONFIG,
        "--port", str(port),
        "--redirect-uri", redirect_uri,
    ]  # fmt: skip
    with serving(
        argv,
        name="the development provider",
        url=issuer,
        ready="/.well-known/openid-configuration",
        stop_signal=signal.SIGINT,
    ):
        yield issuer


async def real_login(
    browser: Browser, idp: httpx.AsyncClient, user: str, return_to: str = "/"
) -> httpx.Response:
    """Sign in through the real provider's page; returns the BFF callback's response.

    The BFF hops go through ``browser`` (in-process), the provider hops through ``idp`` (a real
    client on loopback), exactly in the order a browser makes them.
    """
    start = await browser.get(LOGIN, params={"returnTo": return_to})
    assert start.status_code == 302, start.text
    page = await idp.get(start.headers["location"])
    while page.is_redirect:
        page = await idp.get(page.url.join(page.headers["location"]))
    assert page.status_code == 200, page.text
    form = find_login_form(page)
    answer = await idp.post(form.action, data=form.submission(user))
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(CALLBACK_URL + "?"), location
    return await browser.get(location)
