"""The delivery-flows surface of the dashboard: flows, the tenant's clusters, and form options.

Every handler reads top to bottom the same way: authorize (:meth:`Call.begin`), validate input,
check the cluster belongs to the tenant, call the upstream, reshape into a view.
"""

from __future__ import annotations

import asyncio

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

import upstream_client as uc

from . import inputs
from .auth import Action
from .http import Handler
from .paths import ID_PATTERN, flow_path
from .problems import not_found
from .services import Call, PageKey, audited_write
from .views import (
    changed_fields,
    cluster_list_view,
    flow_view,
    options_view,
    upstream_body,
)


def json_response(
    content: msgspec.Struct, *, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        msgspec.json.encode(content),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


async def _flow_response(
    call: Call, flow: uc.Flow, *, status_code: int = 200, headers: dict[str, str]
) -> Response:
    view = flow_view(flow, await call.names(), call.permissions())
    return json_response(view, status_code=status_code, headers=headers)


def _etag_headers(flow: uc.Flow) -> dict[str, str]:
    return {"ETag": flow.etag} if flow.etag else {}


# --- handlers ----------------------------------------------------------------------------------


async def list_flows(request: Request) -> Response:
    call = await Call.begin(request, Action.READ)
    limit, cursor = inputs.list_query(request)
    await call.require_cluster()
    services = call.services
    key = (call.tenant_id, call.cluster_id, limit, cursor or "")
    page = services.responses.pages.peek(key)
    names = services.catalog.cached_names(call.tenant_id, call.cluster_id)
    if page is None and names is None:
        page, names = await asyncio.gather(_page(call, key), call.names())  # both at once
    if page is None:
        page = await _page(call, key)
    if names is None:
        names = await call.names()
    body, etag = services.responses.render_page(key, page, names, call.permissions())
    # Kept by no cache (the edge's no-store): a dashboard that polls sends the tag back itself.
    if inputs.not_modified(request, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return Response(body, media_type="application/json", headers={"ETag": etag})


async def _page(call: Call, key: PageKey) -> uc.FlowPage:
    """The page from the micro-cache, or loaded (once for every caller waiting on it)."""
    services = call.services
    _, _, limit, cursor = key

    async def load() -> uc.FlowPage:
        return await services.client.list_flows(
            call.tenant_id,
            cluster_id=call.cluster_id,
            limit=limit,
            cursor=cursor or None,
            token=call.token,
            request_id=call.request_id,
        )

    return await services.responses.pages.get(key, load)


async def get_flow(request: Request) -> Response:
    call = await Call.begin(request, Action.READ)
    inputs.no_query(request)
    flow_id = request.path_params["fid"]
    await call.require_cluster()
    services = call.services

    async def load() -> uc.Flow:
        return await services.client.get_flow(
            call.tenant_id, flow_id, token=call.token, request_id=call.request_id
        )

    flow = await services.responses.flows.get((call.tenant_id, call.cluster_id, flow_id), load)
    if flow.cluster_id != call.cluster_id:
        raise not_found()
    # The browser keeps a private copy and must revalidate it with If-None-Match every time.
    headers = {**_etag_headers(flow), "Cache-Control": "private, no-cache"}
    if inputs.not_modified(request, flow.etag):
        return Response(status_code=304, headers=headers)
    return await _flow_response(call, flow, headers=headers)


@audited_write("delivery_flow.create")
async def create_flow(request: Request) -> Response:
    call = await Call.begin(request, Action.WRITE)
    inputs.no_query(request)
    write = await inputs.read_flow_write(request)
    idempotency_key = inputs.idempotency_key(request)
    await call.require_cluster()
    services = call.services
    try:
        flow = await call.audited(
            request,
            "delivery_flow.create",
            lambda: services.client.create_flow(
                call.tenant_id,
                upstream_body(write, call.cluster_id, uc.FlowCreate),
                idempotency_key=idempotency_key,
                token=call.token,
                request_id=call.request_id,
            ),
            idempotency_key=idempotency_key,
            status=201,
            flow_id_of=lambda created: created.id,
        )
    finally:
        # Even a failed or timed-out write may have landed upstream.
        await call.written()
    if not ID_PATTERN.fullmatch(flow.id):
        # It would become our Location header: no line breaks, no dot segments.
        raise uc.ResponseValidationError(f"the created flow's id is not an id: {flow.id!r}")
    location = flow_path(call.tenant_id, call.cluster_id, flow.id)
    headers = {**_etag_headers(flow), "Location": location}
    return await _flow_response(call, flow, status_code=201, headers=headers)


async def _require_flow_in_cluster(call: Call, flow_id: str) -> uc.Flow:
    current = await call.services.client.get_flow(
        call.tenant_id, flow_id, token=call.token, request_id=call.request_id
    )
    if current.cluster_id != call.cluster_id:
        raise not_found()
    return current


@audited_write("delivery_flow.update")
async def update_flow(request: Request) -> Response:
    call = await Call.begin(request, Action.WRITE)
    inputs.no_query(request)
    write = await inputs.read_flow_write(request)
    if_match = inputs.if_match(request)
    idempotency_key = inputs.idempotency_key(request)
    flow_id = request.path_params["fid"]
    await call.require_cluster()
    current = await _require_flow_in_cluster(call, flow_id)
    services = call.services
    try:
        flow = await call.audited(
            request,
            "delivery_flow.update",
            lambda: services.client.update_flow(
                call.tenant_id,
                flow_id,
                upstream_body(write, call.cluster_id, uc.FlowUpdate),
                if_match=if_match,
                idempotency_key=idempotency_key,
                token=call.token,
                request_id=call.request_id,
            ),
            flow_id=flow_id,
            idempotency_key=idempotency_key,
            changes=changed_fields(current, write),
        )
    finally:
        await call.written()
    return await _flow_response(call, flow, headers=_etag_headers(flow))


@audited_write("delivery_flow.delete")
async def delete_flow(request: Request) -> Response:
    call = await Call.begin(request, Action.WRITE)
    inputs.no_query(request)
    if_match = inputs.if_match(request)
    idempotency_key = inputs.idempotency_key(request)
    flow_id = request.path_params["fid"]
    await call.require_cluster()
    await _require_flow_in_cluster(call, flow_id)
    try:
        await call.audited(
            request,
            "delivery_flow.delete",
            lambda: call.services.client.delete_flow(
                call.tenant_id,
                flow_id,
                if_match=if_match,
                idempotency_key=idempotency_key,
                token=call.token,
                request_id=call.request_id,
            ),
            flow_id=flow_id,
            idempotency_key=idempotency_key,
            status=204,
        )
    finally:
        await call.written()
    return Response(status_code=204)


async def list_clusters(request: Request) -> Response:
    call = await Call.begin(request, Action.READ)
    inputs.no_query(request)
    clusters = await call.services.catalog.clusters(
        call.tenant_id, token=lambda: call.token, request_id=call.request_id
    )
    return json_response(cluster_list_view(clusters))


async def flow_options(request: Request) -> Response:
    call = await Call.begin(request, Action.READ)
    inputs.no_query(request)
    await call.require_cluster()
    ingesters, destinations = await call.services.catalog.endpoints(
        call.tenant_id, call.cluster_id, token=lambda: call.token, request_id=call.request_id
    )
    view = options_view(call.cluster_id, ingesters, destinations, call.permissions())
    return json_response(view)


class _Resource:
    """One path's handlers as a plain ASGI app. What they raise goes to the app's exception
    handlers (``app.py``), which turn it into problem+json, without the second layer of exception
    handling that Starlette puts around each function endpoint."""

    __slots__ = ("_handlers",)

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self._handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._handlers[scope["method"]](Request(scope, receive, send))
        await response(scope, receive, send)


def _resource(path: str, **handlers: Handler) -> Route:
    """One route per path, so that a 405 lists every method the path allows."""
    by_method = {method.upper(): handler for method, handler in handlers.items()}
    if "GET" in by_method:
        by_method["HEAD"] = by_method["GET"]
    return Route(path, _Resource(by_method), methods=list(handlers), name=path)


_TENANT = "/tenants/{tid}"
_CLUSTER = _TENANT + "/clusters/{cid}"

routes = [
    _resource(_TENANT + "/clusters", get=list_clusters),
    _resource(_CLUSTER + "/delivery-flows", get=list_flows, post=create_flow),
    _resource(
        _CLUSTER + "/delivery-flows/{fid}", get=get_flow, put=update_flow, delete=delete_flow
    ),
    _resource(_CLUSTER + "/delivery-flow-options", get=flow_options),
]
