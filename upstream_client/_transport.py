"""The default transport: one aiohttp connection pool, reached two ways.

- As an ``httpx.AsyncBaseTransport`` (``handle_async_request``, through httpx-aiohttp), so that
  anything written for httpx can use the pool.
- Through :meth:`AiohttpTransport.exchange`, which :class:`~upstream_client.BackendClient` uses:
  the method, URL, headers and body go to aiohttp as they are, and the status, headers and body
  (read up to a cap) come back, without httpx's request and response objects in between. Those
  objects cost about as much CPU per call as the rest of the client together.

Measured with ``bench/upstream_client_bench.py`` (one event-loop core, 32 concurrent calls to a
local nginx), aiohttp's pool serves several times the calls per second of httpx's own httpcore
pool, so it is the default. Any ``httpx.AsyncBaseTransport`` can replace it
(``BackendClient(transport=…)``), which is how tests mock the upstream; the client then goes
through ``handle_async_request`` as with any other transport.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport as _HttpxAiohttpTransport

from upstream_client._config import Limits, Timeout, TLSConfig


class Exchange:
    """What one request through :meth:`AiohttpTransport.exchange` got back.

    ``body`` is ``None`` when it exceeded the cap; ``encoded`` is True when the upstream sent a
    ``Content-Encoding`` other than identity anyway: the body (capped as it came) is then still
    encoded, for the caller to decode, and cap again, as it decodes any other transport's.
    """

    __slots__ = ("body", "encoded", "headers", "status")

    def __init__(
        self, status: int, headers: Mapping[str, str], body: bytes | None, encoded: bool
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.encoded = encoded


class AiohttpTransport(httpx.AsyncBaseTransport):
    """The aiohttp pool honouring ``limits`` and ``tls``, for httpx and for :meth:`exchange`.

    The aiohttp session keeps no cookies (a ``Set-Cookie`` of one user's call must never ride
    along on another's), ignores proxy environment variables, never decompresses on its own
    and is created lazily inside the running event loop.
    """

    def __init__(self, limits: Limits, tls: TLSConfig | None) -> None:
        self._limits = limits
        self._ssl: ssl.SSLContext | bool = tls.ssl_context() if tls is not None else True
        self._session: aiohttp.ClientSession | None = None
        self._httpx = _HttpxAiohttpTransport(
            trust_env=False,
            limits=httpx.Limits(
                max_connections=limits.max_connections,
                max_keepalive_connections=limits.max_keepalive_connections,
                keepalive_expiry=limits.keepalive_expiry,
            ),
            client=self._pool,
        )

    def _pool(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections,
                keepalive_timeout=self._limits.keepalive_expiry,
                ssl=self._ssl,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                auto_decompress=False,
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._httpx.handle_async_request(request)

    async def exchange(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        content: bytes | None,
        *,
        timeout: Timeout,
        max_body_bytes: int,
    ) -> Exchange:
        """Send one request and read its answer's body, or stop reading past ``max_body_bytes``.

        Raises aiohttp's exceptions (and ``TimeoutError``): the client translates them where it
        translates every transport's.
        """
        async with self._pool().request(
            method,
            url,
            headers=headers,
            data=content,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(
                sock_connect=timeout.connect, sock_read=timeout.read, connect=timeout.pool
            ),
        ) as response:
            answer_headers = response.headers
            encoded = answer_headers.get("content-encoding", "identity") != "identity"
            declared = response.content_length
            if declared is not None:
                if declared > max_body_bytes:
                    return Exchange(response.status, answer_headers, None, encoded)
                # Its length is known and allowed: one read (aiohttp stops at that length).
                return Exchange(response.status, answer_headers, await response.read(), encoded)
            parts: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_any():
                size += len(chunk)
                if size > max_body_bytes:
                    return Exchange(response.status, answer_headers, None, encoded)
                parts.append(chunk)
            return Exchange(response.status, answer_headers, b"".join(parts), encoded)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def default_transport(limits: Limits, tls: TLSConfig | None) -> AiohttpTransport:
    """The aiohttp-backed transport, honouring ``limits`` and ``tls``."""
    return AiohttpTransport(limits, tls)


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
