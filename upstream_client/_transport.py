"""The default transport: one aiohttp connection pool, reached two ways.

- As an ``httpx.AsyncBaseTransport`` (``handle_async_request``, through httpx-aiohttp), so that
  anything written for httpx can use the pool.
- Through :meth:`AiohttpTransport.exchange`, which :class:`~upstream_client.BackendClient` uses:
  the method, URL, headers and body go to aiohttp as they are, and the status, headers and body
  (read up to a cap) come back as an :class:`Exchange`, without httpx's request and response
  objects in between. Those objects cost about as much CPU per call as the rest of the client
  together.

:func:`exchange_through_httpx` is the same exchange through any other transport, and
:func:`read_capped` the one size-capped body read of both.

Measured with ``bench/upstream_client_bench.py`` (one event-loop core, 32 concurrent calls to a
local nginx), aiohttp's pool serves several times the calls per second of httpx's own httpcore
pool, so it is the default. Any ``httpx.AsyncBaseTransport`` can replace it
(``BackendClient(transport=…)``), which is how tests mock the upstream; the client then goes
through ``handle_async_request`` as with any other transport.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterable, Mapping

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport as _HttpxAiohttpTransport

from upstream_client._config import Limits, Timeout, TLSConfig


class Exchange:
    """The answer one attempt got: status, headers and body, whichever transport carried it.

    ``body`` is ``None`` when it exceeded the size cap; it is decoded when the upstream sent a
    ``Content-Encoding`` other than identity anyway (the cap then counts decoded bytes).
    """

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes | None) -> None:
        self.status = status
        self.headers = headers
        self.body = body


async def read_capped(chunks: AsyncIterable[bytes], cap: int) -> bytes | None:
    """The chunks joined, or ``None`` as soon as they add up to more than ``cap`` bytes."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > cap:
            return None
        parts.append(chunk)
    return b"".join(parts)


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

        Raises aiohttp's exceptions, ``TimeoutError`` and httpx's ``DecodingError``: the client
        translates them where it translates every transport's.
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
            status = response.status
            headers = response.headers
            declared = response.content_length
            body: bytes | None
            if declared is None:
                body = await read_capped(response.content.iter_any(), max_body_bytes)
            elif declared <= max_body_bytes:
                # Its length is known and allowed: one read (aiohttp stops at that length).
                body = await response.read()
            else:
                body = None
        if body is not None and headers.get("content-encoding", "identity") != "identity":
            # Encoded although the client asked for identity: decoded as httpx decodes any
            # transport's body, and capped again, so that a compression bomb stops at the cap.
            decoder = httpx.Response(status, headers=list(headers.items()), content=body)
            body = await read_capped(decoder.aiter_bytes(), max_body_bytes)
        return Exchange(status, headers, body)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def default_transport(limits: Limits, tls: TLSConfig | None) -> AiohttpTransport:
    """The aiohttp-backed transport, honouring ``limits`` and ``tls``."""
    return AiohttpTransport(limits, tls)


async def exchange_through_httpx(
    transport: httpx.AsyncBaseTransport,
    method: str,
    url: httpx.URL,
    headers: Mapping[str, str],
    content: bytes | None,
    *,
    timeout: Mapping[str, float],
    max_body_bytes: int,
) -> Exchange:
    """:meth:`AiohttpTransport.exchange` through any httpx transport (``timeout``: httpx's).

    Raises the transport's exceptions, for the client to translate.
    """
    request = httpx.Request(
        method, url, headers=headers, content=content, extensions={"timeout": timeout}
    )
    response = await transport.handle_async_request(request)
    try:
        answer_headers = response.headers
        declared = answer_headers.get("content-length")
        body: bytes | None
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            body = None
        elif answer_headers.get("content-encoding", "identity") == "identity" and isinstance(
            response.stream, httpx.AsyncByteStream
        ):
            # Reading the transport's stream directly skips httpx's decoder chain.
            body = await read_capped(response.stream, max_body_bytes)
        else:
            # Counting decoded bytes also caps a compression bomb.
            body = await read_capped(response.aiter_bytes(), max_body_bytes)
    finally:
        await response.aclose()
    return Exchange(response.status_code, answer_headers, body)
