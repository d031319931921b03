"""The delivery-flows surface of the dashboard: flows, the tenant's clusters, and form options.

Every handler reads top to bottom the same way: authorize (:meth:`Call.begin`), validate input,
check the cluster belongs to the tenant, call the upstream, reshape into a view.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import upstream_client as uc

from .paths import flow_path
from .principal import Action
from .problems import FieldError, ProblemError, not_found, validation_error
from .services import Call
from .views import (
    ID_PATTERN,
    BodyErrors,
    FlowWrite,
    cluster_list_view,
    flow_list_view,
    flow_view,
    options_view,
    parse_flow_write,
    upstream_body,
)

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_CURSOR = re.compile(r"[A-Za-z0-9_=.~-]{1,1024}")
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,255}")
_ENTITY_TAGS = re.compile(r'\*|(W/)?"[\x21\x23-\x7e]*"(\s*,\s*(W/)?"[\x21\x23-\x7e]*")*')
_JSON_MEDIA = re.compile(r"application/(?:[a-z0-9.+-]+\+)?json")


def json_response(
    content: msgspec.Struct, *, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        msgspec.json.encode(content),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


# --- input -------------------------------------------------------------------------------------


def _decimal(text: str, *, cap: int) -> int | None:
    """``text`` as a plain ASCII decimal, or None; any larger value comes back as ``cap``."""
    # isdigit() alone accepts "²", which int() refuses; int() also refuses over 4300 digits.
    if not (text.isascii() and text.isdigit()):
        return None
    significant = text.lstrip("0")
    if len(significant) > len(str(cap)):
        return cap
    return min(int(significant or "0"), cap)


def _list_query(request: Request) -> tuple[int, str | None]:
    errors: list[FieldError] = []
    seen: set[str] = set()
    for key, _ in request.query_params.multi_items():
        if key not in {"limit", "cursor"}:
            errors.append(FieldError(key, "Unknown query parameter.", "unknown_parameter"))
        elif key in seen:
            errors.append(FieldError(key, "Give this parameter once.", "repeated_parameter"))
        seen.add(key)
    limit = DEFAULT_LIMIT
    raw_limit = request.query_params.get("limit")
    if raw_limit is not None:
        parsed = _decimal(raw_limit, cap=MAX_LIMIT + 1)
        if parsed is not None and 1 <= parsed <= MAX_LIMIT:
            limit = parsed
        else:
            errors.append(
                FieldError("limit", f"Must be a whole number from 1 to {MAX_LIMIT}.", "invalid")
            )
    cursor = request.query_params.get("cursor")
    if cursor is not None and not _CURSOR.fullmatch(cursor):
        errors.append(FieldError("cursor", "Not a valid cursor.", "invalid"))
    if errors:
        raise validation_error(errors)
    return limit, cursor


def _no_query(request: Request) -> None:
    if request.query_params:
        raise validation_error(
            [
                FieldError(key, "Unknown query parameter.", "unknown_parameter")
                for key in request.query_params
            ]
        )


async def _read_flow_write(request: Request) -> FlowWrite:
    return _parse_write(await read_json(request))


def _parse_write(data: Any) -> FlowWrite:
    try:
        return parse_flow_write(data)
    except BodyErrors as exc:
        raise validation_error([FieldError(*error) for error in exc.errors]) from None


async def read_json(request: Request) -> Any:
    """The request body as JSON: 415 unless JSON, 413 past the size limit, 400 if malformed."""
    content_type = request.headers.get("content-type", "")
    media, *params = content_type.split(";")
    charsets = [
        value.strip().strip('"').lower()
        for name, _, value in (param.partition("=") for param in params)
        if name.strip().lower() == "charset"
    ]
    if not _JSON_MEDIA.fullmatch(media.strip().lower()) or charsets not in ([], ["utf-8"]):
        raise ProblemError(415, "unsupported-media-type", "Send the body as application/json.")
    limit = request.app.state.services.settings.bff.max_body_bytes
    too_large = ProblemError(
        413, "payload-too-large", f"The body must be at most {limit // 1024} KiB."
    )
    declared = _decimal(request.headers.get("content-length", ""), cap=limit + 1)
    if declared is not None and declared > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):  # nesting deeper than the decoder allows
        raise validation_error(
            [FieldError("", "The body is not valid JSON.", "malformed_json")],
            detail="The body is not valid JSON.",
        ) from None


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise validation_error(
            [FieldError("Idempotency-Key", "Use 1 to 255 letters, digits or _ . : -", "invalid")]
        )
    return key


def _if_match(request: Request) -> str | None:
    value = request.headers.get("if-match")
    if value is not None and not _ENTITY_TAGS.fullmatch(value.strip()):
        raise validation_error([FieldError("If-Match", "Not a valid entity tag.", "invalid")])
    return value.strip() if value else None


def _etag_matches(if_none_match: str, etag: str | None) -> bool:
    if etag is None:
        return False
    if if_none_match.strip() == "*":
        return True
    # If-None-Match uses the weak comparison: W/"x" matches "x".
    opaque = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == opaque for tag in if_none_match.split(","))


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
    limit, cursor = _list_query(request)
    await call.require_cluster()
    services = call.services

    async def load() -> object:
        return await services.client.list_flows(
            call.tenant_id,
            cluster_id=call.cluster_id,
            limit=limit,
            cursor=cursor,
            token=call.token,
            request_id=call.request_id,
        )

    key = (call.tenant_id, call.cluster_id, "flows", f"{limit}:{cursor or ''}")
    page, names = await asyncio.gather(services.responses.get(key, load), call.names())
    assert isinstance(page, uc.FlowPage)
    view = flow_list_view(page, limit=limit, names=names, permissions=call.permissions())
    return json_response(view)


async def get_flow(request: Request) -> Response:
    call = await Call.begin(request, Action.READ)
    _no_query(request)
    flow_id = request.path_params["fid"]
    await call.require_cluster()
    services = call.services

    async def load() -> object:
        return await services.client.get_flow(
            call.tenant_id, flow_id, token=call.token, request_id=call.request_id
        )

    flow = await services.responses.get((call.tenant_id, call.cluster_id, "flow", flow_id), load)
    assert isinstance(flow, uc.Flow)
    if flow.cluster_id != call.cluster_id:
        raise not_found()
    # The browser keeps a private copy and must revalidate it with If-None-Match every time.
    headers = {**_etag_headers(flow), "Cache-Control": "private, no-cache"}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and _etag_matches(if_none_match, flow.etag):
        return Response(status_code=304, headers=headers)
    return await _flow_response(call, flow, headers=headers)


async def create_flow(request: Request) -> Response:
    call = await Call.begin(request, Action.WRITE)
    _no_query(request)
    write = await _read_flow_write(request)
    idempotency_key = _idempotency_key(request)
    await call.require_cluster()
    services = call.services
    try:
        flow = await services.client.create_flow(
            call.tenant_id,
            upstream_body(write, call.cluster_id, uc.FlowCreate),
            idempotency_key=idempotency_key,
            token=call.token,
            request_id=call.request_id,
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


async def _require_flow_in_cluster(call: Call, flow_id: str) -> None:
    current = await call.services.client.get_flow(
        call.tenant_id, flow_id, token=call.token, request_id=call.request_id
    )
    if current.cluster_id != call.cluster_id:
        raise not_found()


async def update_flow(request: Request) -> Response:
    call = await Call.begin(request, Action.WRITE)
    _no_query(request)
    write = await _read_flow_write(request)
    if_match = _if_match(request)
    idempotency_key = _idempotency_key(request)
    flow_id = request.path_params["fid"]
    await call.require_cluster()
    await _require_flow_in_cluster(call, flow_id)
    services = call.services
    try:
        flow = await services.client.update_flow(
            call.tenant_id,
            flow_id,
            upstream_body(write, call.cluster_id, uc.FlowUpdate),
            if_match=if_match,
            idempotency_key=idempotency_key,
            token=call.token,
            request_id=call.request_id,
        )
    finally:
        await call.written()
    return await _flow_response(call, flow, headers=_etag_headers(flow))


async def delete_flow(request: Request) -> Response:
    call = await Call.begin(request, Action.WRITE)
    _no_query(request)
    if_match = _if_match(request)
    idempotency_key = _idempotency_key(request)
    flow_id = request.path_params["fid"]
    await call.require_cluster()
    await _require_flow_in_cluster(call, flow_id)
    try:
        await call.services.client.delete_flow(
            call.tenant_id,
            flow_id,
            if_match=if_match,
            idempotency_key=idempotency_key,
            token=call.token,
            request_id=call.request_id,
        )
    finally:
        await call.written()
    return Response(status_code=204)


async def list_clusters(request: Request) -> Response:
    call = await Call.begin(request, Action.READ)
    _no_query(request)
    clusters = await call.services.catalog.clusters(
        call.tenant_id, token=call.token, request_id=call.request_id
    )
    return json_response(cluster_list_view(clusters))


async def flow_options(request: Request) -> Response:
    call = await Call.begin(request, Action.READ)
    _no_query(request)
    await call.require_cluster()
    ingesters, destinations = await call.services.catalog.endpoints(
        call.tenant_id, call.cluster_id, token=call.token, request_id=call.request_id
    )
    view = options_view(call.cluster_id, ingesters, destinations, call.permissions())
    return json_response(view)


Handler = Callable[[Request], Awaitable[Response]]


def _resource(path: str, **handlers: Handler) -> Route:
    """One route per path, so that a 405 lists every method the path allows."""
    by_method = {method.upper(): handler for method, handler in handlers.items()}
    if "GET" in by_method:
        by_method["HEAD"] = by_method["GET"]

    async def endpoint(request: Request) -> Response:
        return await by_method[request.method](request)

    return Route(path, endpoint, methods=list(handlers), name=path)


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
