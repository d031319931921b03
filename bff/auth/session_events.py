"""``GET /auth/session/events``: the signed-in session, live, as Server-Sent Events.

A dashboard tab opens one ``EventSource`` here and hears at once what happens to its session
elsewhere, instead of at its next call, in the middle of a form. The events (``data`` is JSON):

- ``ended`` ``{"reason": …}`` (:data:`~bff.state.sessions.Ending`: signed out in another tab,
  signed out everywhere, ended from the list of sessions, back-channel logout, refresh refused,
  signed in again, timed out); the stream then ends;
- ``renewed`` ``{"expiresAt": …}``: the session now ends later (its tokens were refreshed, or a
  call from another tab kept it alive);
- ``expiring`` ``{"expiresAt": …}``: it ends within ``[session_events].expiring_seconds``.

A quiet stream carries a comment line (``: heartbeat``) every ``heartbeat_seconds``.

Where the news comes from: the session store announces every change or end of a session, an end
with why (:data:`~bff.state.sessions.Announce`), to this process and, through Redis, to every
instance (:mod:`bff.state.invalidation`, the channel that also drops the instances' copies of
session records). :class:`SessionEvents` is this instance's watcher: it wakes the streams of the
sessions named. A stream also looks at its session itself, without that counting as activity:
when told it changed, when the channel comes back after a loss (a message may have been missed),
and as its end comes near.

How it is protected. ``EventSource`` cannot send ``X-CSRF: 1``, so the stream is guarded
otherwise: ``Sec-Fetch-Site: same-origin`` is required, so a request that another site (or no
page at all) started is refused with 403 before the session is looked at; the session cookie is
``SameSite=Strict`` and HttpOnly, so another site's page cannot make the browser send it, and,
with no CORS headers, no other origin could read the answer anyway; and the stream carries
nothing but the session's own state (an event name, a reason, a time): never a token, a session
id or handle, nor anything of another session or user. It changes nothing.

Bounds: ``max_streams_per_session`` (one browser's tabs) and ``max_streams`` (this instance);
past them, 429. At shutdown (:meth:`SessionEvents.close`: on SIGTERM, before the server stops
accepting, and at the end of the lifespan) every stream ends cleanly and the browser reconnects,
to an instance still serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections.abc import AsyncIterator, Callable, Sequence

import msgspec
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ..http import rfc3339
from ..problems import ProblemError, authentication_required
from ..settings import Settings
from ..state.sessions import Ending, Session, SessionStore
from .authenticators import SessionAuthenticator

logger = logging.getLogger("bff.session_events")

FILES_BESIDE_STREAMS = 256
"""Open files an instance needs beside its streams: the upstream and Redis pools, the other
requests' connections, its logs."""
MEDIA_TYPE = "text/event-stream"
RECONNECT_MS = 3000
"""How long a browser waits before it opens the stream again after the connection ended (the
stream's ``retry`` field): after a shutdown, say."""
RETRY_AFTER_SECONDS = 30
"""Past a bound, when to try again (``Retry-After``)."""
_HEARTBEAT = b": heartbeat\n\n"


class _Ended(msgspec.Struct):
    reason: str


class _Expiry(msgspec.Struct, rename="camel"):
    expires_at: str


class _Follower:
    """One open stream: whose session it follows, and what it was told since it last looked."""

    __slots__ = ("ending", "handle", "look", "sub", "wake")

    def __init__(self, handle: str, sub: str) -> None:
        self.handle = handle
        self.sub = sub
        self.ending: Ending | None = None
        self.look = False
        self.wake = asyncio.Event()

    def tell(self, ending: Ending | None) -> None:
        if ending is not None:
            self.ending = ending
        self.look = True
        self.wake.set()


class SessionEvents:
    """The event streams of this instance: opened by :meth:`stream`, told what the session store
    announces (:meth:`changed`, :meth:`missed`: the :class:`bff.state.invalidation.SessionWatch`
    of this instance), ended by :meth:`close`.

    ``ends_at`` says when a session stops working (what ``/auth/session`` says as
    ``expiresAt``); ``clock`` is the sessions' clock (epoch seconds).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        session_auth: SessionAuthenticator,
        store: SessionStore,
        ends_at: Callable[[Session], float],
        clock: Callable[[], float] = time.time,
    ) -> None:
        config = settings.session_events
        self._heartbeat = config.heartbeat_seconds
        self._expiring = config.expiring_seconds
        self._per_session = config.max_streams_per_session
        self._max_streams = config.max_streams
        self._session_auth = session_auth
        self._store = store
        self._ends_at = ends_at
        self._clock = clock
        self._followers: dict[str, set[_Follower]] = {}
        self._open = 0
        self._closing = False
        _warn_unless_files_suffice(self._max_streams)

    @property
    def open_streams(self) -> int:
        return self._open

    def changed(self, handles: Sequence[str], ending: Ending | None) -> None:
        for handle in handles:
            for follower in self._followers.get(handle, ()):
                follower.tell(ending)

    def missed(self) -> None:
        for followers in self._followers.values():
            for follower in followers:
                follower.tell(None)

    def close(self) -> None:
        """End every stream now, and refuse new ones (503): the instance is shutting down."""
        self._closing = True
        for followers in self._followers.values():
            for follower in followers:
                follower.wake.set()

    async def stream(self, request: Request) -> Response:
        if request.headers.get("sec-fetch-site") != "same-origin":
            raise ProblemError(
                403,
                "csrf-check-failed",
                "Open the session's event stream from the dashboard's own pages "
                "(the browser then sends Sec-Fetch-Site: same-origin).",
            )
        raw_id = request.cookies.get(self._session_auth.cookies.session)
        if not raw_id:
            raise authentication_required()
        session = await self._store.get(raw_id)
        handle = self._store.handle(raw_id)
        if session is None or handle is None:
            raise self._session_auth.ended()
        follower = self._follow(handle, session.sub)
        return _EventStream(
            self._events(follower, self._ends_at(session)), release=lambda: self._let_go(follower)
        )

    def _follow(self, handle: str, sub: str) -> _Follower:
        if self._closing:
            raise ProblemError(
                503,
                "service-unavailable",
                "The gateway is restarting; open the stream again shortly.",
                headers={"Retry-After": "1"},
            )
        if len(self._followers.get(handle, ())) >= self._per_session:
            raise _too_many(
                f"This session already has {self._per_session} event streams open, as many as "
                "it may: close a tab of the dashboard, or follow the session from fewer tabs."
            )
        if self._open >= self._max_streams:
            raise _too_many("This gateway follows as many sessions as it may; try again shortly.")
        follower = _Follower(handle, sub)
        self._followers.setdefault(handle, set()).add(follower)
        self._open += 1
        return follower

    def _let_go(self, follower: _Follower) -> None:
        followers = self._followers.get(follower.handle)
        if followers is None or follower not in followers:
            return
        followers.discard(follower)
        if not followers:
            del self._followers[follower.handle]
        self._open -= 1

    async def _events(self, follower: _Follower, ends: float) -> AsyncIterator[bytes]:
        """What one stream says, from the session's end as it was when the stream opened."""
        yield b"retry: %d\n\n" % RECONNECT_MS
        told = ends  # the end the browser knows (what /auth/session said, or the last event)
        warned = False  # told "expiring" for the end it knows
        paused = False  # a look failed (the store is away): the next waits for a heartbeat
        beat = time.monotonic() + self._heartbeat
        while True:
            due = told if warned else told - self._expiring
            wait = beat - time.monotonic()
            if not paused:
                wait = min(wait, due - self._clock())
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await follower.wake.wait()
            follower.wake.clear()
            if self._closing:
                return
            if follower.ending is not None:
                yield _event("ended", _Ended(follower.ending))
                return
            beating = time.monotonic() >= beat
            if beating:
                yield _HEARTBEAT
                beat = time.monotonic() + self._heartbeat
                paused = False
            if paused or not (follower.look or self._clock() >= due or (warned and beating)):
                continue
            follower.look = False
            try:
                session = await self._peek(follower)
            except RedisError:
                follower.look = paused = True
                continue
            now = self._clock()
            if session is None:
                # Gone, and no word of why reached this stream: timed out, if its time was up.
                why = follower.ending or ("expired" if now >= told else "unknown")
                yield _event("ended", _Ended(why))
                return
            end = self._ends_at(session)
            if end <= now:
                yield _event("ended", _Ended("expired"))
                return
            if end - now <= self._expiring:
                if not warned or end != told:
                    yield _event("expiring", _Expiry(_iso(end)))
                warned = True
            elif warned or end > told:
                yield _event("renewed", _Expiry(_iso(end)))
                warned = False
            told = end

    async def _peek(self, follower: _Follower) -> Session | None:
        """The session as the store has it, read without counting as its activity."""
        for handle, session in await self._store.sessions_of(follower.sub):
            if handle == follower.handle:
                return session
        return None


class _EventStream(StreamingResponse):
    """The stream as the browser gets it; its follower is let go however it ends (the browser
    gone, shutdown, the session ended, an error)."""

    def __init__(self, events: AsyncIterator[bytes], *, release: Callable[[], None]) -> None:
        super().__init__(
            events,
            media_type=MEDIA_TYPE,
            # No proxy may hold events back (nginx buffers unless told) or keep a copy.
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def _event(name: str, data: msgspec.Struct) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (name.encode(), msgspec.json.encode(data))


def _iso(epoch: float) -> str:
    return rfc3339(epoch, millis=False)


def _too_many(detail: str) -> ProblemError:
    return ProblemError(
        429, "rate-limited", detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


def _warn_unless_files_suffice(max_streams: int) -> None:
    """Each stream holds a connection, a file of this process. The soft open-files limit is
    raised towards the hard one as far as ``max_streams`` needs (as the Go runtime does at every
    start); past the hard limit, a warning at start, since connections would then be refused
    before the bound answers 429."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_streams + FILES_BESIDE_STREAMS
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return
    raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        soft = raised
    if needed > soft:
        logger.warning(
            "[session_events].max_streams (%d) and about %d other open files exceed this "
            "process's open-files limit (%d): raise it (ulimit -n, LimitNOFILE=) or lower "
            "max_streams, or connections will be refused before the bound answers 429",
            max_streams,
            FILES_BESIDE_STREAMS,
            soft,
        )
