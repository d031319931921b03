from __future__ import annotations

import httpx
import pytest
import respx

from tests.support.backend import (
    CLUSTER,
    FLOWS_PATH,
    TENANT,
    MakeClient,
    flow_json,
    problem_response,
)
from tests.support.clock import FakeClock
from upstream_client import (
    APIConnectionError,
    APIStatusError,
    BackendClient,
    BadRequestError,
    BreakerConfig,
    ConflictError,
    FlowCreate,
    FlowUpdate,
    InternalServerError,
    RateLimitError,
    RetryConfig,
    Timeout,
)

BODY = FlowCreate(name="n", cluster_id=CLUSTER, source_id="ing_a", destination_id="dest_a")
PATIENT = BreakerConfig(failure_threshold=100)
UPDATE = FlowUpdate(name="n", cluster_id=CLUSTER, source_id="ing_a", destination_id="dest_a")


class Recorder:
    """A side effect that fails with the given answers, then succeeds, recording requests."""

    def __init__(self, *failures: httpx.Response | Exception, success: httpx.Response) -> None:
        self.failures = list(failures)
        self.success = success
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        return self.success


def ok_flow(status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=flow_json(), headers={"ETag": '"1"'})


async def call(client: BackendClient, method: str, idempotency_key: str | None = None) -> object:
    if method == "GET":
        return await client.get_flow(TENANT, "flow_1", token="t")
    if method == "POST":
        return await client.create_flow(TENANT, BODY, token="t", idempotency_key=idempotency_key)
    if method == "PUT":
        return await client.update_flow(
            TENANT, "flow_1", UPDATE, token="t", idempotency_key=idempotency_key
        )
    return await client.delete_flow(TENANT, "flow_1", token="t", idempotency_key=idempotency_key)


def route(router: respx.Router, method: str, recorder: Recorder) -> None:
    path = FLOWS_PATH if method == "POST" else f"{FLOWS_PATH}/flow_1"
    router.route(method=method, path=path).mock(side_effect=recorder)


def success_for(method: str) -> httpx.Response:
    return {"POST": ok_flow(201), "DELETE": httpx.Response(204)}.get(method, ok_flow())


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
@pytest.mark.parametrize("status", [408, 429, 502, 503, 504])
async def test_retryable_status_is_retried_then_succeeds(
    router: respx.Router, client: BackendClient, method: str, status: int
) -> None:
    recorder = Recorder(
        problem_response(status, "x"), problem_response(status, "x"), success=success_for(method)
    )
    route(router, method, recorder)
    await call(client, method)
    assert len(recorder.requests) == 3


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
async def test_connection_errors_are_retried(
    router: respx.Router, client: BackendClient, method: str
) -> None:
    recorder = Recorder(
        httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), success=success_for(method)
    )
    route(router, method, recorder)
    await call(client, method)
    assert len(recorder.requests) == 3


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
async def test_attempts_stop_at_max_attempts(
    router: respx.Router, client: BackendClient, method: str
) -> None:
    recorder = Recorder(*[problem_response(503, "x")] * 5, success=success_for(method))
    route(router, method, recorder)
    with pytest.raises(InternalServerError):
        await call(client, method)
    assert len(recorder.requests) == 3


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 412, 422, 500])
async def test_other_statuses_are_not_retried(
    router: respx.Router, client: BackendClient, method: str, status: int
) -> None:
    recorder = Recorder(problem_response(status, "x"), success=success_for(method))
    route(router, method, recorder)
    with pytest.raises(APIStatusError):
        await call(client, method)
    assert len(recorder.requests) == 1


async def test_one_attempt_when_retries_are_disabled(
    router: respx.Router, make_client: MakeClient
) -> None:
    recorder = Recorder(problem_response(503, "x"), success=ok_flow())
    route(router, "GET", recorder)
    with pytest.raises(InternalServerError):
        await call(make_client(retries=RetryConfig(max_attempts=1)), "GET")
    assert len(recorder.requests) == 1


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_generated_idempotency_key_is_reused_on_every_attempt(
    router: respx.Router, client: BackendClient, method: str
) -> None:
    recorder = Recorder(
        problem_response(503, "x"), httpx.ConnectError("refused"), success=success_for(method)
    )
    route(router, method, recorder)
    await call(client, method)
    keys = {request.headers.get("Idempotency-Key") for request in recorder.requests}
    assert len(recorder.requests) == 3
    assert len(keys) == 1
    assert None not in keys


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_each_logical_write_gets_its_own_key(
    router: respx.Router, client: BackendClient, method: str
) -> None:
    recorder = Recorder(success=success_for(method))
    route(router, method, recorder)
    await call(client, method)
    await call(client, method)
    first, second = (request.headers["Idempotency-Key"] for request in recorder.requests)
    assert first != second


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_callers_idempotency_key_is_sent_on_every_attempt(
    router: respx.Router, client: BackendClient, method: str
) -> None:
    recorder = Recorder(problem_response(502, "x"), success=success_for(method))
    route(router, method, recorder)
    await call(client, method, idempotency_key="idem-123")
    assert [r.headers["Idempotency-Key"] for r in recorder.requests] == ["idem-123"] * 2


async def test_retried_post_resends_the_same_body(
    router: respx.Router, client: BackendClient
) -> None:
    recorder = Recorder(problem_response(503, "x"), success=ok_flow(201))
    route(router, "POST", recorder)
    await call(client, "POST")
    assert recorder.requests[0].content == recorder.requests[1].content
    assert b'"name":"n"' in recorder.requests[0].content


async def test_backoff_is_exponential_and_capped(
    router: respx.Router, make_client: MakeClient, fake_time: FakeClock
) -> None:
    retries = RetryConfig(max_attempts=6, backoff_base=0.5, backoff_max=3.0, jitter=0.0)
    recorder = Recorder(*[problem_response(503, "x")] * 5, success=ok_flow())
    route(router, "GET", recorder)
    await call(make_client(retries=retries, timeout=Timeout(total=60), breaker=PATIENT), "GET")
    assert fake_time.sleeps == [0.5, 1.0, 2.0, 3.0, 3.0]


async def test_jitter_only_shortens_the_backoff(
    router: respx.Router, make_client: MakeClient, fake_time: FakeClock
) -> None:
    retries = RetryConfig(max_attempts=30, backoff_base=1.0, backoff_max=1.0, jitter=0.5)
    recorder = Recorder(*[problem_response(503, "x")] * 29, success=ok_flow())
    route(router, "GET", recorder)
    await call(make_client(retries=retries, timeout=Timeout(total=600), breaker=PATIENT), "GET")
    assert all(0.5 <= s <= 1.0 for s in fake_time.sleeps)
    assert len(set(fake_time.sleeps)) > 1


async def test_retry_after_replaces_the_backoff(
    router: respx.Router, client: BackendClient, fake_time: FakeClock
) -> None:
    limited = problem_response(429, "rate-limited")
    limited.headers["Retry-After"] = "2"
    recorder = Recorder(limited, success=ok_flow())
    route(router, "GET", recorder)
    await call(client, "GET")
    assert fake_time.sleeps == [2.0]
    assert len(recorder.requests) == 2


async def test_retry_after_beyond_the_cap_stops_retrying(
    router: respx.Router, make_client: MakeClient, fake_time: FakeClock
) -> None:
    limited = problem_response(429, "rate-limited")
    limited.headers["Retry-After"] = "120"
    recorder = Recorder(limited, success=ok_flow())
    route(router, "GET", recorder)
    client = make_client(retries=RetryConfig(retry_after_max=5.0, jitter=0.0))
    with pytest.raises(RateLimitError) as caught:
        await call(client, "GET")
    assert caught.value.retry_after == 120.0
    assert fake_time.sleeps == []
    assert len(recorder.requests) == 1


async def test_no_retry_when_the_wait_would_pass_the_deadline(
    router: respx.Router, make_client: MakeClient, fake_time: FakeClock
) -> None:
    unavailable = problem_response(503, "upstream-unavailable")
    unavailable.headers["Retry-After"] = "4"
    recorder = Recorder(unavailable, success=ok_flow())
    route(router, "GET", recorder)
    client = make_client(
        timeout=Timeout(total=3.0), retries=RetryConfig(retry_after_max=10.0, jitter=0.0)
    )
    with pytest.raises(InternalServerError) as caught:
        await call(client, "GET")
    assert caught.value.retry_after == 4.0
    assert len(recorder.requests) == 1
    assert fake_time.sleeps == []


async def test_backoffs_of_one_call_share_its_deadline(
    router: respx.Router, make_client: MakeClient, fake_time: FakeClock
) -> None:
    retries = RetryConfig(max_attempts=10, backoff_base=1.0, backoff_max=1.0, jitter=0.0)
    recorder = Recorder(*[httpx.ConnectError("refused")] * 10, success=ok_flow())
    route(router, "GET", recorder)
    with pytest.raises(APIConnectionError):
        await call(make_client(retries=retries, timeout=Timeout(total=3.5)), "GET")
    assert fake_time.sleeps == [1.0, 1.0, 1.0]
    assert len(recorder.requests) == 4


async def test_conflict_is_not_retried_even_with_retry_after(
    router: respx.Router, client: BackendClient
) -> None:
    conflict = problem_response(409, "conflict")
    conflict.headers["Retry-After"] = "1"
    recorder = Recorder(conflict, success=ok_flow(201))
    route(router, "POST", recorder)
    with pytest.raises(ConflictError):
        await call(client, "POST")
    assert len(recorder.requests) == 1


async def test_bad_request_is_not_retried(router: respx.Router, client: BackendClient) -> None:
    recorder = Recorder(problem_response(400, "validation-error"), success=ok_flow())
    route(router, "GET", recorder)
    with pytest.raises(BadRequestError):
        await call(client, "GET")
    assert len(recorder.requests) == 1
