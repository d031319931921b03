"""The default transport: the httpx transport interface over an aiohttp connection pool.

Measured with ``bench/upstream_client_bench.py`` (one event-loop core, 32 concurrent calls to a
local nginx), aiohttp's pool under the httpx transport interface serves several times the calls
per second of httpx's own httpcore pool, so it is the default. Any ``httpx.AsyncBaseTransport``
can replace it (``BackendClient(transport=…)``), which is how tests mock the upstream.
"""

from __future__ import annotations

import ssl

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from upstream_client._config import Limits, TLSConfig


def default_transport(limits: Limits, tls: TLSConfig | None) -> httpx.AsyncBaseTransport:
    """An aiohttp-backed transport honouring ``limits`` and ``tls``.

    The aiohttp session keeps no cookies (a ``Set-Cookie`` of one user's call must never ride
    along on another's), ignores proxy environment variables, and is created lazily inside the
    running event loop.
    """
    ssl_context: ssl.SSLContext | bool = tls.ssl_context() if tls is not None else True

    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections,
            keepalive_timeout=limits.keepalive_expiry,
            ssl=ssl_context,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            auto_decompress=False,
        )

    transport: httpx.AsyncBaseTransport = AiohttpTransport(
        trust_env=False,
        limits=httpx.Limits(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
        ),
        client=session,
    )
    return transport


def httpcore_transport(limits: Limits, tls: TLSConfig | None) -> httpx.AsyncBaseTransport:
    """httpx's own transport with the same limits and TLS, for comparison and as a fallback."""
    return httpx.AsyncHTTPTransport(
        verify=tls.ssl_context() if tls is not None else True,
        trust_env=False,
        limits=httpx.Limits(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
        ),
    )
