"""Server-Sent Events from the BFF in-process, read as they come.

httpx's ``ASGITransport`` hands a response over once the app has finished it, and an event stream
never finishes by itself. :class:`StreamingASGITransport` hands the response over at its start
and its body chunk by chunk, as a server would, and tells the app that the client went away
(``http.disconnect``) when the response is closed.

:func:`follow` opens ``GET /auth/session/events`` as a dashboard tab's ``EventSource`` does: with
the browser's cookies and ``Sec-Fetch-Site: same-origin``. :class:`EventReader` reads what comes,
keeps all of it as text (:attr:`EventReader.text`), and fails a test that waits too long.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.types import ASGIApp, Message

from tests.support.cookies import Browser
from tests.support.gateway import API, BFF

EVENTS = f"{API}/auth/session/events"
SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin", "Accept": "text/event-stream"}


class StreamingASGITransport(httpx.AsyncBaseTransport):
    """Calls an ASGI app in this event loop, answering as soon as its response starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(name.lower(), value) for name, value in request.headers.raw],
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port),
            "client": ("127.0.0.1", 50000),
            "root_path": "",
        }
        gone = asyncio.Event()
        started: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        asked = False

        async def receive() -> Message:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.set_result(message)
            elif message["type"] == "http.response.body":
                chunks.put_nowait(message.get("body", b""))
                if not message.get("more_body", False):
                    chunks.put_nowait(None)

        running = asyncio.create_task(self.app(scope, receive, send))  # type: ignore[arg-type]
        running.add_done_callback(lambda _: chunks.put_nowait(None))
        await asyncio.wait([started, running], return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            running.result()  # what the app raised, if it did
            raise AssertionError("the app finished without answering")
        start = started.result()
        return httpx.Response(
            start["status"],
            headers=start.get("headers", []),
            stream=_Body(chunks, gone, running),
            request=request,
        )


class _Body(httpx.AsyncByteStream):
    def __init__(
        self, chunks: asyncio.Queue[bytes | None], gone: asyncio.Event, running: asyncio.Task[None]
    ) -> None:
        self._chunks = chunks
        self._gone = gone
        self._running = running

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self._chunks.get()) is not None:
            yield chunk

    async def aclose(self) -> None:
        self._gone.set()
        await asyncio.wait_for(self._running, timeout=5)


@dataclass(frozen=True)
class Event:
    """One block of the stream: an event (``name``, JSON ``data``), a comment, or a ``retry``."""

    name: str | None = None
    data: Any = None
    comment: str | None = None
    retry: int | None = None

    def documented(self) -> dict[str, Any]:
        """The event as the OpenAPI document describes it: ``{"event": …, "data": …}``."""
        return {"event": self.name, "data": self.data}


class StreamEnded(AssertionError):
    """The server ended the stream."""


class EventReader:
    """Reads one stream. The body is pumped by a task of its own, so that a test that stops
    waiting (a timeout) does not cut the stream."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.text = ""
        self._buffer = ""
        self._chunks: asyncio.Queue[str | None] = asyncio.Queue()
        self._pump = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for chunk in self.response.aiter_text():
                self._chunks.put_nowait(chunk)
        finally:
            self._chunks.put_nowait(None)

    async def close(self) -> None:
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump

    async def next(self, timeout: float = 2.0) -> Event:
        """The next block, whatever it is; :class:`StreamEnded` when the stream ends first."""
        async with asyncio.timeout(timeout):
            while "\n\n" not in self._buffer:
                chunk = await self._chunks.get()
                if chunk is None:
                    self._chunks.put_nowait(None)  # it stays ended
                    raise StreamEnded(f"the stream ended; it said {self.text!r}")
                self.text += chunk
                self._buffer += chunk
        block, _, self._buffer = self._buffer.partition("\n\n")
        fields: dict[str, str] = {}
        comment = None
        for line in block.split("\n"):
            if line.startswith(":"):
                comment = line[1:].strip()
            else:
                name, _, value = line.partition(": ")
                fields[name] = value
        return Event(
            name=fields.get("event"),
            data=json.loads(fields["data"]) if "data" in fields else None,
            comment=comment,
            retry=int(fields["retry"]) if "retry" in fields else None,
        )

    async def next_event(self, timeout: float = 2.0) -> Event:
        """The next named event, past heartbeats."""
        async with asyncio.timeout(timeout):
            while (event := await self.next(timeout)).name is None:
                pass
        return event

    async def quiet_for(self, seconds: float) -> list[Event]:
        """Everything said for ``seconds``: the test asserts it holds no event."""
        said: list[Event] = []
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while (left := until - loop.time()) > 0:
            try:
                said.append(await self.next(left))
            except TimeoutError:
                break
        return said

    async def ends(self, timeout: float = 2.0) -> None:
        """The stream ends, with nothing more said."""
        try:
            event = await self.next(timeout)
        except StreamEnded:
            return
        raise AssertionError(f"the stream went on: {event}")


@asynccontextmanager
async def follow(
    app: ASGIApp, browser: Browser | None = None, *, headers: dict[str, str] | None = None
) -> AsyncIterator[EventReader]:
    """``GET /auth/session/events`` with ``browser``'s cookies, open for the block."""
    sent = {**SAME_ORIGIN, **(headers or {})}
    if browser is not None and browser.cookies:
        sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    transport = StreamingASGITransport(app)
    async with (
        httpx.AsyncClient(transport=transport, base_url=BFF) as client,
        client.stream("GET", EVENTS, headers=sent) as response,
    ):
        reader = EventReader(response)
        try:
            yield reader
        finally:
            await reader.close()
