"""``Idempotency-Key`` handling for writes.

A key belongs to a tenant (not to a credential) and lives ``idempotency_ttl_seconds``. The
request fingerprint is method + path + the canonical (key-sorted) JSON body. The first request
claims the key in the database; a retry of the same request replays the stored response with
``Idempotency-Replayed: true``; a different request with the key is a 422; a retry while the
first is still running is a 409. Validation and authorization failures happen before the claim,
so they do not consume the key; server errors release it.

A write records its response in its own transaction (:class:`sandbox.store.Completion`): a crash
cannot leave a write done whose retry would do it again. A claim left by a crash before the write
goes stale after ``IN_FLIGHT_STALE_SECONDS`` and the retry then runs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
import msgspec
from starlette.requests import Request
from starlette.responses import Response

from sandbox.problems import FieldError, Problem, validation_problem
from sandbox.request_context import request_id
from sandbox.store import (
    Claimed,
    Completion,
    FlowRecord,
    IdempotencyInFlight,
    IdempotencyKeyReused,
    Store,
    StoredResponse,
)

_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


class Keyed:
    """The claimed key of one request, for the operation to complete with its write."""

    def __init__(self, tenant_id: str, key: str) -> None:
        self.tenant_id = tenant_id
        self.key = key
        self.made: Completion | None = None

    def completion(self, respond: Callable[[FlowRecord | None], Response]) -> Completion:
        """What the store runs in the write's transaction: ``respond``'s answer, recorded."""
        self.made = Completion(
            self.tenant_id, self.key, lambda record: stored_response(respond(record))
        )
        return self.made


Operation = Callable[[Keyed | None], Awaitable[Response]]
"""A write: given the claimed key (``None`` without one), it passes ``keyed.completion(…)`` to
the store call that writes, so that the response is recorded in the same transaction."""


def stored_response(response: Response) -> StoredResponse:
    kept = {
        name: response.headers[name]
        for name in ("content-type", "etag", "location")
        if name in response.headers
    }
    return StoredResponse(status=response.status_code, body=bytes(response.body), headers=kept)


class Idempotency:
    """Runs writes at most once per ``(tenant, Idempotency-Key)``."""

    def __init__(self, store: Store, *, clock: Callable[[], float], ttl_seconds: float) -> None:
        self._store = store
        self._clock = clock
        self._ttl = ttl_seconds

    async def run(
        self,
        request: Request,
        tenant_id: str,
        body: Any,
        operation: Operation,
    ) -> Response:
        """Run ``operation`` once per ``Idempotency-Key`` and replay its response after."""
        key = request.headers.get("idempotency-key")
        if key is None:
            return await respond(request, lambda: operation(None))
        if not _IDEMPOTENCY_KEY.fullmatch(key):
            raise validation_problem(
                [
                    FieldError(
                        "Idempotency-Key",
                        "must be 1 to 255 visible ASCII characters",
                        "invalid",
                    )
                ]
            )
        fingerprint = hashlib.sha256(
            b"\n".join(
                [
                    request.method.encode(),
                    request.url.path.encode(),
                    msgspec.json.encode(body, order="sorted"),
                ]
            )
        ).hexdigest()
        now, ttl = self._clock(), self._ttl
        try:
            outcome = await anyio.to_thread.run_sync(
                lambda: self._store.claim_idempotency_key(
                    tenant_id, key, fingerprint, now=now, ttl=ttl
                )
            )
        except IdempotencyKeyReused as exc:
            raise Problem(
                422,
                "idempotency-key-reused",
                "This Idempotency-Key was already used for a different request.",
            ) from exc
        except IdempotencyInFlight as exc:
            raise Problem(
                409,
                "conflict",
                "A request with this Idempotency-Key is still in progress; retry later.",
            ) from exc
        if isinstance(outcome, StoredResponse):
            headers = {**outcome.headers, "Idempotency-Replayed": "true"}
            return Response(outcome.body, status_code=outcome.status, headers=headers)
        assert isinstance(outcome, Claimed)
        keyed = Keyed(tenant_id, key)
        try:
            response = await respond(request, lambda: operation(keyed))
        except BaseException:
            if keyed.made is None or not keyed.made.done:
                await self._release(tenant_id, key)
            raise
        if keyed.made is not None and keyed.made.done:
            return response  # recorded with the write
        if response.status_code >= 500:
            await self._release(tenant_id, key)
            return response
        # Refused without writing (a 412, a 409 name clash…): replayed to retries all the same.
        stored = stored_response(response)
        await anyio.to_thread.run_sync(
            lambda: self._store.complete_idempotency_key(tenant_id, key, stored)
        )
        return response

    async def _release(self, tenant_id: str, key: str) -> None:
        await anyio.to_thread.run_sync(lambda: self._store.release_idempotency_key(tenant_id, key))


async def respond(request: Request, operation: Callable[[], Awaitable[Response]]) -> Response:
    """Await ``operation``, turning a raised :class:`Problem` into its response."""
    # Problems raised by the operation are responses too: an idempotent retry must see them.
    try:
        return await operation()
    except Problem as problem:
        return problem.response(request_id(request))
