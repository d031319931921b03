from __future__ import annotations

import email.utils
import time

import httpx
import pytest
import respx

from tests.support.backend import FLOWS_PATH, TENANT, MakeClient, problem_response
from upstream_client import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BackendClient,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    RateLimitError,
    ResponseValidationError,
    RetryConfig,
    UnprocessableEntityError,
)

NO_RETRY = RetryConfig(max_attempts=1)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (412, PreconditionFailedError),
        (422, UnprocessableEntityError),
        (429, RateLimitError),
        (500, InternalServerError),
        (502, InternalServerError),
        (503, InternalServerError),
        (504, InternalServerError),
        (418, APIStatusError),
        (408, APIStatusError),
        (302, APIStatusError),
    ],
)
async def test_status_maps_to_exception(
    router: respx.Router, make_client: MakeClient, status: int, error: type[APIStatusError]
) -> None:
    router.get(f"{FLOWS_PATH}/flow_1").mock(return_value=problem_response(status, "some-problem"))
    client = make_client(retries=NO_RETRY)
    with pytest.raises(APIStatusError) as caught:
        await client.get_flow(TENANT, "flow_1", token="t")
    assert type(caught.value) is error
    assert caught.value.status_code == status
    assert caught.value.problem is not None
    assert caught.value.problem.type == "https://api.zen-mesh.io/errors/some-problem"
    assert caught.value.problem.detail == "some-problem happened"


async def test_permission_denied_carries_required_scope(
    router: respx.Router, client: BackendClient
) -> None:
    router.post(FLOWS_PATH).mock(
        return_value=problem_response(
            403, "insufficient-scope", required_scope="write:delivery-flows"
        )
    )
    from upstream_client import FlowCreate

    body = FlowCreate(name="n", cluster_id="c", source_id="ing_a", destination_id="dest_a")
    with pytest.raises(PermissionDeniedError) as caught:
        await client.create_flow(TENANT, body, token="t")
    assert caught.value.required_scope == "write:delivery-flows"
    assert caught.value.problem is not None
    assert caught.value.problem.title == "Insufficient Scope"


async def test_validation_problem_field_errors_are_decoded(
    router: respx.Router, client: BackendClient
) -> None:
    errors = [
        {"field": "config.retry_policy.max_attempts", "message": "must be 1 to 10", "code": "range"}
    ]
    router.get(f"{FLOWS_PATH}/flow_1").mock(
        return_value=problem_response(
            400, "validation-error", errors=errors, unknown_extra={"x": 1}
        )
    )
    with pytest.raises(BadRequestError) as caught:
        await client.get_flow(TENANT, "flow_1", token="t")
    assert caught.value.problem is not None
    assert caught.value.problem.errors is not None
    field_error = caught.value.problem.errors[0]
    assert field_error.field == "config.retry_policy.max_attempts"
    assert field_error.code == "range"


async def test_request_id_prefers_the_upstream_header(
    router: respx.Router, client: BackendClient
) -> None:
    response = problem_response(404, "not-found")
    response.headers["X-Request-ID"] = "req_from_header"
    router.get(f"{FLOWS_PATH}/flow_1").mock(return_value=response)
    with pytest.raises(NotFoundError) as caught:
        await client.get_flow(TENANT, "flow_1", token="t", request_id="req_mine")
    assert caught.value.request_id == "req_from_header"


async def test_request_id_falls_back_to_problem_instance_then_ours(
    router: respx.Router, client: BackendClient
) -> None:
    router.get(f"{FLOWS_PATH}/flow_1").mock(return_value=problem_response(404, "not-found"))
    router.get(f"{FLOWS_PATH}/flow_2").mock(return_value=httpx.Response(404, text="nope"))
    with pytest.raises(NotFoundError) as first:
        await client.get_flow(TENANT, "flow_1", token="t", request_id="req_mine")
    assert first.value.request_id == "req_upstream"
    with pytest.raises(NotFoundError) as second:
        await client.get_flow(TENANT, "flow_2", token="t", request_id="req_mine")
    assert second.value.request_id == "req_mine"
    assert second.value.problem is None


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"", b"[1,2]", b'{"status": "x"}'])
async def test_a_non_problem_error_body_still_raises_the_status_error(
    router: respx.Router, make_client: MakeClient, body: bytes
) -> None:
    router.get(f"{FLOWS_PATH}/flow_1").mock(return_value=httpx.Response(502, content=body))
    with pytest.raises(InternalServerError) as caught:
        await make_client(retries=NO_RETRY).get_flow(TENANT, "flow_1", token="t")
    assert caught.value.status_code == 502
    assert caught.value.problem is None


@pytest.mark.parametrize("status", [503, 400, 429])
async def test_retry_after_is_parsed_for_every_status(
    router: respx.Router, make_client: MakeClient, status: int
) -> None:
    response = problem_response(status, "x")
    response.headers["Retry-After"] = "7"
    router.get(f"{FLOWS_PATH}/flow_1").mock(return_value=response)
    with pytest.raises(APIStatusError) as caught:
        await make_client(retries=NO_RETRY).get_flow(TENANT, "flow_1", token="t")
    assert caught.value.retry_after == 7.0
    assert caught.value.headers["retry-after"] == "7"


async def test_retry_after_http_date(router: respx.Router, make_client: MakeClient) -> None:
    response = problem_response(503, "upstream-unavailable")
    response.headers["Retry-After"] = email.utils.formatdate(time.time() + 120, usegmt=True)
    router.get(f"{FLOWS_PATH}/flow_1").mock(return_value=response)
    with pytest.raises(InternalServerError) as caught:
        await make_client(retries=NO_RETRY).get_flow(TENANT, "flow_1", token="t")
    assert caught.value.retry_after is not None
    assert 110 <= caught.value.retry_after <= 121


async def test_garbage_retry_after_is_ignored(
    router: respx.Router, make_client: MakeClient
) -> None:
    response = problem_response(503, "upstream-unavailable")
    response.headers["Retry-After"] = "soon"
    router.get(f"{FLOWS_PATH}/flow_1").mock(return_value=response)
    with pytest.raises(InternalServerError) as caught:
        await make_client(retries=NO_RETRY).get_flow(TENANT, "flow_1", token="t")
    assert caught.value.retry_after is None


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"id": "flow_1"}',
        b'{"delivery_flows": "nope"}',
    ],
)
async def test_a_2xx_body_off_contract_raises_response_validation_error(
    router: respx.Router, client: BackendClient, body: bytes
) -> None:
    router.get(f"{FLOWS_PATH}/flow_1").mock(return_value=httpx.Response(200, content=body))
    with pytest.raises(ResponseValidationError):
        await client.get_flow(TENANT, "flow_1", token="t")


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (httpx.ConnectError("refused"), APIConnectionError),
        (httpx.ReadError("reset"), APIConnectionError),
        (httpx.RemoteProtocolError("garbage"), APIConnectionError),
        (httpx.ConnectTimeout("slow"), APITimeoutError),
        (httpx.ReadTimeout("slow"), APITimeoutError),
        (httpx.PoolTimeout("full"), APITimeoutError),
        (ConnectionResetError("reset"), APIConnectionError),
    ],
)
async def test_transport_errors_are_translated(
    router: respx.Router, make_client: MakeClient, raised: Exception, expected: type[Exception]
) -> None:
    router.get(f"{FLOWS_PATH}/flow_1").mock(side_effect=raised)
    with pytest.raises(expected) as caught:
        await make_client(retries=NO_RETRY).get_flow(TENANT, "flow_1", token="t")
    assert type(caught.value) is expected
    assert caught.value.__cause__ is raised


@pytest.mark.parametrize("value", ["\u00b2", "9" * 400])
async def test_hostile_retry_after_is_ignored(
    router: respx.Router, make_client: MakeClient, value: str
) -> None:
    # A superscript digit passes str.isdigit() but not float(); 400 nines overflow to inf.
    response = httpx.Response(503, headers=[(b"Retry-After", value.encode("latin-1"))])
    router.get(f"{FLOWS_PATH}/flow_1").mock(return_value=response)
    with pytest.raises(InternalServerError) as caught:
        await make_client(retries=NO_RETRY).get_flow(TENANT, "flow_1", token="t")
    assert caught.value.retry_after is None


DEEP = b"[" * 5000 + b"]" * 5000


async def test_a_2xx_body_nested_too_deep_is_a_response_validation_error(
    router: respx.Router, make_client: MakeClient
) -> None:
    body = b'{"delivery_flows": [], "extra": ' + DEEP + b"}"
    router.get(FLOWS_PATH).mock(return_value=httpx.Response(200, content=body))
    with pytest.raises(ResponseValidationError):
        await make_client(retries=NO_RETRY).list_flows(TENANT, token="t")


async def test_a_problem_nested_too_deep_still_maps_the_status(
    router: respx.Router, make_client: MakeClient
) -> None:
    body = b'{"title": "x", "extra": ' + DEEP + b"}"
    router.get(f"{FLOWS_PATH}/flow_1").mock(return_value=httpx.Response(404, content=body))
    with pytest.raises(NotFoundError) as caught:
        await make_client(retries=NO_RETRY).get_flow(TENANT, "flow_1", token="t")
    assert caught.value.problem is None
