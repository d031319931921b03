"""The sandbox backend flows API as a Starlette application.

Request path: :class:`~sandbox.request_context.RequestContextMiddleware` (request id,
last-resort 500) → :class:`~sandbox.dpop.NonceMiddleware` (the next ``DPoP-Nonce``, when one is
due) → Starlette's exception middleware (problems and routing errors →
problem+json) → one endpoint per path, which authenticates, checks tenant and scope,
validates, and calls the store from a worker thread.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any, TypeVar

import anyio.to_thread
import httpx
import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.auth import READ_SCOPES, WRITE_SCOPES, Authenticator, require_tenant_scope
from sandbox.config import SandboxSettings
from sandbox.dpop import NONCE_STATE, NonceMiddleware, request_uri
from sandbox.idempotency import Idempotency, Keyed
from sandbox.inputs import (
    JSON_MEDIA_TYPE,
    if_match,
    if_none_match,
    query_params,
    read_json,
)
from sandbox.pagination import CursorCodec, parse_limit
from sandbox.problems import FieldError, Problem, not_found, validation_problem
from sandbox.request_context import (
    RequestContextMiddleware,
    http_exception_handler,
    problem_handler,
)
from sandbox.store import FlowNotFound, FlowRecord, NameTaken, Store, VersionMismatch
from sandbox.validation import Catalog, parse_flow

Clock = Callable[[], float]
T = TypeVar("T")

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_READ = "read:delivery-flows"
_WRITE = "write:delivery-flows"
# Flows are listed newest first; the order is in the cursor's kind, so a cursor issued when the
# list was oldest first is refused (400) instead of resuming at the wrong place.
_FLOW_CURSOR_KIND = "delivery_flows.newest_first"


def create_app(
    settings: SandboxSettings,
    *,
    clock: Clock = time.time,
    jwks_transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """Build the sandbox application for ``settings``.

    The database is opened here, so the app works without its lifespan running (as under
    ``httpx.ASGITransport``); the lifespan closes it when a server shuts down. ``clock`` returns
    Unix time and drives timestamps, idempotency retention and token expiry; ``jwks_transport``
    lets tests serve JWKS documents.
    """
    store = Store(settings.db)
    api = _Api(
        settings,
        store=store,
        clock=clock,
        authenticator=Authenticator(settings, clock=clock, transport=jwks_transport),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            store.close()

    routes = [
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/v1/openapi.json", api.openapi, methods=["GET"]),
        Route("/v1/tenants/{tenant_id}/clusters", api.clusters, methods=["GET"]),
        Route("/v1/tenants/{tenant_id}/ingesters", api.ingesters, methods=["GET"]),
        Route("/v1/tenants/{tenant_id}/destinations", api.destinations, methods=["GET"]),
        Route(
            "/v1/tenants/{tenant_id}/delivery-flows",
            api.flows_collection,
            methods=["GET", "POST"],
        ),
        Route(
            "/v1/tenants/{tenant_id}/delivery-flows/{flow_id}",
            api.flow_item,
            methods=["GET", "PUT", "DELETE"],
        ),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestContextMiddleware), Middleware(NonceMiddleware)],
        exception_handlers={Problem: problem_handler, HTTPException: http_exception_handler},
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.settings = settings
    return app


class _Api:
    """The endpoints; one method per path, dispatching on the HTTP method."""

    def __init__(
        self,
        settings: SandboxSettings,
        *,
        store: Store,
        clock: Clock,
        authenticator: Authenticator,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.authenticator = authenticator
        self.catalog = Catalog(settings)
        self.cursors = CursorCodec(store.cursor_secret)
        self.idempotency = Idempotency(
            store, clock=clock, ttl_seconds=float(settings.idempotency_ttl_seconds)
        )
        self.openapi_document = resources.files("sandbox").joinpath("openapi.json").read_bytes()

    # -- ops -------------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def openapi(self, request: Request) -> Response:
        return Response(self.openapi_document, media_type=JSON_MEDIA_TYPE)

    # -- catalog lists ---------------------------------------------------------------------

    async def clusters(self, request: Request) -> Response:
        tenant_id = await self._authorize(request, write=False)
        query = query_params(request, ("limit", "cursor"))
        items = [
            {"id": c.id, "name": c.name, "region": c.region, "status": c.status}
            for c in self.settings.clusters
            if c.tenant_id == tenant_id
        ]
        return self._static_page("clusters", tenant_id, "", items, query)

    async def ingesters(self, request: Request) -> Response:
        tenant_id = await self._authorize(request, write=False)
        query = query_params(request, ("cluster_id", "limit", "cursor"))
        cluster_id = self._cluster_filter(tenant_id, query)
        items = [
            {"id": i.id, "name": i.name, "type": i.type, "cluster_id": i.cluster_id}
            for i in self.settings.ingesters
            if i.tenant_id == tenant_id and cluster_id in (None, i.cluster_id)
        ]
        return self._static_page("ingesters", tenant_id, cluster_id or "", items, query)

    async def destinations(self, request: Request) -> Response:
        tenant_id = await self._authorize(request, write=False)
        query = query_params(request, ("cluster_id", "limit", "cursor"))
        cluster_id = self._cluster_filter(tenant_id, query)
        items = [
            {"id": d.id, "name": d.name, "url": d.url, "cluster_id": d.cluster_id}
            for d in self.settings.destinations
            if d.tenant_id == tenant_id and cluster_id in (None, d.cluster_id)
        ]
        return self._static_page("destinations", tenant_id, cluster_id or "", items, query)

    def _static_page(
        self,
        kind: str,
        tenant_id: str,
        filter_key: str,
        items: list[dict[str, Any]],
        query: dict[str, str],
    ) -> Response:
        limit = parse_limit(query.get("limit"))
        items.sort(key=lambda item: str(item["id"]))
        if "cursor" in query:
            (after,) = self.cursors.decode(
                query["cursor"], kind=kind, tenant_id=tenant_id, filter_key=filter_key, arity=1
            )
            items = [item for item in items if item["id"] > after]
        page = items[:limit]
        next_cursor = None
        if len(items) > limit:
            next_cursor = self.cursors.encode(
                kind=kind, tenant_id=tenant_id, filter_key=filter_key, position=(page[-1]["id"],)
            )
        return _json({kind: page, "next_cursor": next_cursor})

    def _cluster_filter(self, tenant_id: str, query: dict[str, str]) -> str | None:
        cluster_id = query.get("cluster_id")
        if cluster_id is not None and not self.catalog.has_cluster(tenant_id, cluster_id):
            raise validation_problem([FieldError("cluster_id", "cluster not found", "not_found")])
        return cluster_id

    # -- delivery flows --------------------------------------------------------------------

    async def flows_collection(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._create_flow(request)
        return await self._list_flows(request)

    async def flow_item(self, request: Request) -> Response:
        if request.method == "PUT":
            return await self._replace_flow(request)
        if request.method == "DELETE":
            return await self._delete_flow(request)
        return await self._get_flow(request)

    async def _list_flows(self, request: Request) -> Response:
        tenant_id = await self._authorize(request, write=False)
        query = query_params(request, ("cluster_id", "limit", "cursor"))
        cluster_id = self._cluster_filter(tenant_id, query)
        limit = parse_limit(query.get("limit"))
        after: tuple[str, str] | None = None
        if "cursor" in query:
            created_at, flow_id = self.cursors.decode(
                query["cursor"],
                kind=_FLOW_CURSOR_KIND,
                tenant_id=tenant_id,
                filter_key=cluster_id or "",
                arity=2,
            )
            after = (created_at, flow_id)
        records = await anyio.to_thread.run_sync(
            lambda: self.store.list_flows(
                tenant_id, cluster_id=cluster_id, after=after, limit=limit + 1
            )
        )
        page = records[:limit]
        next_cursor = None
        if len(records) > limit:
            next_cursor = self.cursors.encode(
                kind=_FLOW_CURSOR_KIND,
                tenant_id=tenant_id,
                filter_key=cluster_id or "",
                position=(page[-1].created_at, page[-1].id),
            )
        return _json({"delivery_flows": [_flow_json(r) for r in page], "next_cursor": next_cursor})

    async def _get_flow(self, request: Request) -> Response:
        tenant_id = await self._authorize(request, write=False)
        query_params(request, ())
        flow_id = request.path_params["flow_id"]
        record = await self._run(lambda: self.store.get_flow(tenant_id, flow_id))
        if if_none_match(request, record.version):
            return Response(status_code=304, headers={"ETag": f'"{record.version}"'})
        return _flow_response(record, 200)

    async def _create_flow(self, request: Request) -> Response:
        tenant_id = await self._authorize(request, write=True)
        query_params(request, ())
        body = await read_json(request, self.settings.max_body_bytes)
        spec = parse_flow(body, self.catalog, tenant_id)
        now = self.clock()

        def created(record: FlowRecord | None) -> Response:
            assert record is not None
            response = _flow_response(record, 201)
            response.headers["Location"] = f"/v1/tenants/{tenant_id}/delivery-flows/{record.id}"
            return response

        async def create(keyed: Keyed | None) -> Response:
            flow_id = _new_flow_id(now)
            completion = keyed.completion(created) if keyed is not None else None
            record = await self._run(
                lambda: self.store.create_flow(
                    tenant_id, flow_id, spec, _timestamp(now), completion=completion
                )
            )
            return created(record)

        return await self.idempotency.run(request, tenant_id, body, create)

    async def _replace_flow(self, request: Request) -> Response:
        tenant_id = await self._authorize(request, write=True)
        query_params(request, ())
        flow_id = request.path_params["flow_id"]
        check = if_match(request)
        body = await read_json(request, self.settings.max_body_bytes)
        spec = parse_flow(body, self.catalog, tenant_id)
        now = self.clock()

        def keep_cluster(current: FlowRecord) -> None:
            if current.cluster_id != spec.cluster_id:
                raise validation_problem(
                    [FieldError("cluster_id", "cannot be changed; create a new flow", "immutable")]
                )

        def replaced(record: FlowRecord | None) -> Response:
            assert record is not None
            return _flow_response(record, 200)

        async def replace(keyed: Keyed | None) -> Response:
            completion = keyed.completion(replaced) if keyed is not None else None
            record = await self._run(
                lambda: self.store.replace_flow(
                    tenant_id,
                    flow_id,
                    spec,
                    _timestamp(now),
                    check=check,
                    before_write=keep_cluster,
                    completion=completion,
                )
            )
            return replaced(record)

        return await self.idempotency.run(request, tenant_id, body, replace)

    async def _delete_flow(self, request: Request) -> Response:
        tenant_id = await self._authorize(request, write=True)
        query_params(request, ())
        flow_id = request.path_params["flow_id"]
        check = if_match(request)

        def deleted(record: FlowRecord | None) -> Response:
            return Response(status_code=204)

        async def delete(keyed: Keyed | None) -> Response:
            completion = keyed.completion(deleted) if keyed is not None else None
            await self._run(
                lambda: self.store.delete_flow(
                    tenant_id, flow_id, check=check, completion=completion
                )
            )
            return deleted(None)

        return await self.idempotency.run(request, tenant_id, None, delete)

    # -- shared steps ----------------------------------------------------------------------

    async def _authorize(self, request: Request, *, write: bool) -> str:
        principal = await self.authenticator.authenticate(
            request.headers, method=request.method, uri=request_uri(request)
        )
        if principal.dpop_nonce is not None:
            setattr(request.state, NONCE_STATE, principal.dpop_nonce)
        tenant_id: str = request.path_params["tenant_id"]
        require_tenant_scope(
            principal,
            tenant_id,
            accepted=WRITE_SCOPES if write else READ_SCOPES,
            required=_WRITE if write else _READ,
        )
        return tenant_id

    async def _run(self, operation: Callable[[], T]) -> T:
        """Run a store call in a worker thread, mapping store errors to problems."""
        try:
            return await anyio.to_thread.run_sync(operation)
        except FlowNotFound as exc:
            raise not_found("The delivery flow does not exist.") from exc
        except NameTaken as exc:
            raise Problem(
                409,
                "conflict",
                "A delivery flow with this name already exists in the cluster.",
            ) from exc
        except VersionMismatch as exc:
            raise Problem(
                412,
                "precondition-failed",
                "The delivery flow has changed since it was read; fetch it and retry.",
            ) from exc


def _flow_json(record: FlowRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "tenant_id": record.tenant_id,
        "cluster_id": record.cluster_id,
        "name": record.name,
        "source_id": record.source_id,
        "destination_id": record.destination_id,
        "config": {
            "retry_policy": {
                "max_attempts": record.max_attempts,
                "backoff_seconds": record.backoff_seconds,
            }
        },
        "version": record.version,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def _flow_response(record: FlowRecord, status: int) -> Response:
    response = _json(_flow_json(record), status)
    response.headers["ETag"] = f'"{record.version}"'
    return response


def _json(document: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(document), status_code=status, media_type=JSON_MEDIA_TYPE)


def _timestamp(now: float) -> str:
    return datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _new_flow_id(now: float) -> str:
    """``flow_`` + a 26-character ULID: millisecond time, then 80 random bits."""
    value = (int(now * 1000) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "flow_" + "".join(reversed(chars))
