"""Every client method against the real sandbox app, in process over ``httpx.ASGITransport``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

import sandbox
from sandbox.config import Ingester as SandboxIngester
from upstream_client import (
    AuthenticationError,
    BackendClient,
    BadRequestError,
    ConflictError,
    FlowConfig,
    FlowCreate,
    FlowUpdate,
    NotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    RetryConfig,
    RetryPolicy,
    UnprocessableEntityError,
)

DEV_CONFIG = Path(__file__).resolve().parents[2] / "config" / "dev.toml"
TENANT = "ten_acme"
CLUSTER = "plane_dev_us_east_1"
RW = "zen_key_dev_acme_rw"
RO = "zen_key_dev_acme_ro"
GLOBEX = "zen_key_dev_globex_rw"

Asgi = Callable[..., Any]


def flow_create(name: str = "stripe-to-orders", **changes: Any) -> FlowCreate:
    body = FlowCreate(
        name=name,
        cluster_id=CLUSTER,
        source_id="ing_stripe_prod",
        destination_id="dest_orders_api",
    )
    return msgspec.structs.replace(body, **changes)


def as_update(body: FlowCreate, **changes: Any) -> FlowUpdate:
    return FlowUpdate(**{**msgspec.structs.asdict(body), **changes})


class Sandbox:
    """Builds clients over fresh in-memory sandbox apps and closes them all."""

    def __init__(self) -> None:
        self.apps: list[Any] = []
        self.clients: list[BackendClient] = []

    def app(self, settings: Any = None) -> Any:
        app = sandbox.create_app(settings or sandbox.load_settings(DEV_CONFIG, db=":memory:"))
        self.apps.append(app)
        return app

    def client(self, asgi: Asgi | None = None, **options: Any) -> BackendClient:
        transport = httpx.ASGITransport(app=asgi or self.app())
        client = BackendClient("http://sandbox.test", transport=transport, **options)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()
        for app in self.apps:
            app.state.store.close()


@pytest.fixture
async def env() -> AsyncIterator[Sandbox]:
    environment = Sandbox()
    yield environment
    await environment.close()


@pytest.fixture
def client(env: Sandbox) -> BackendClient:
    return env.client()


async def test_list_clusters(client: BackendClient) -> None:
    clusters = await client.list_clusters(TENANT, token=RO, request_id="req_clusters")
    assert {c.id for c in clusters} == {"plane_dev_us_east_1", "plane_dev_eu_west_1"}
    assert {c.region for c in clusters} == {"us-east-1", "eu-west-1"}


async def test_list_ingesters_and_destinations_of_a_cluster(client: BackendClient) -> None:
    ingesters = await client.list_ingesters(TENANT, cluster_id=CLUSTER, token=RO)
    destinations = await client.list_destinations(TENANT, cluster_id=CLUSTER, token=RO)
    assert sorted(i.id for i in ingesters) == ["ing_github_ci", "ing_stripe_prod"]
    assert all(i.cluster_id == CLUSTER for i in ingesters)
    assert sorted(d.id for d in destinations) == ["dest_billing_svc", "dest_orders_api"]
    everything = await client.list_ingesters(TENANT, token=RO)
    assert len(everything) > len(ingesters)


async def test_catalogue_lists_return_every_page(env: Sandbox) -> None:
    settings = sandbox.load_settings(DEV_CONFIG, db=":memory:")
    extra = tuple(
        SandboxIngester(
            id=f"ing_extra_{i:03d}",
            tenant_id=TENANT,
            cluster_id=CLUSTER,
            name=f"Extra {i}",
            type="http",
        )
        for i in range(45)
    )
    settings = msgspec.structs.replace(settings, ingesters=(*settings.ingesters, *extra))
    client = env.client(env.app(settings))
    ingesters = await client.list_ingesters(TENANT, cluster_id=CLUSTER, token=RO)
    assert len(ingesters) == 47
    assert len({i.id for i in ingesters}) == 47


async def test_flow_lifecycle(client: BackendClient) -> None:
    created = await client.create_flow(TENANT, flow_create(), token=RW, request_id="req_create")
    assert created.id.startswith("flow_")
    assert created.etag == f'"{created.version}"'
    assert created.config.retry_policy == RetryPolicy(max_attempts=3, backoff_seconds=10)

    fetched = await client.get_flow(TENANT, created.id, token=RO)
    assert fetched == created

    update = as_update(
        flow_create(),
        name="renamed",
        config=FlowConfig(retry_policy=RetryPolicy(max_attempts=7, backoff_seconds=30)),
    )
    updated = await client.update_flow(TENANT, created.id, update, if_match=fetched.etag, token=RW)
    assert updated.name == "renamed"
    assert updated.version == created.version + 1
    assert updated.etag == f'"{updated.version}"'
    assert updated.config.retry_policy.max_attempts == 7

    await client.delete_flow(TENANT, created.id, if_match=updated.etag, token=RW)
    with pytest.raises(NotFoundError) as caught:
        await client.get_flow(TENANT, created.id, token=RO)
    assert caught.value.problem is not None
    assert caught.value.request_id is not None


async def test_iter_flows_pages_through_everything(client: BackendClient) -> None:
    names = [f"flow-{i}" for i in range(7)]
    for name in names:
        await client.create_flow(TENANT, flow_create(name), token=RW)
    first = await client.list_flows(TENANT, cluster_id=CLUSTER, limit=3, token=RO)
    assert len(first.delivery_flows) == 3
    assert first.next_cursor is not None
    seen = [f.name async for f in client.iter_flows(TENANT, cluster_id=CLUSTER, limit=3, token=RO)]
    assert sorted(seen) == sorted(names)
    assert len(seen) == len(set(seen))
    assert all(f.etag == f'"{f.version}"' for f in first.delivery_flows)


async def test_idempotent_replay_returns_the_first_flow(client: BackendClient) -> None:
    first = await client.create_flow(TENANT, flow_create(), idempotency_key="idem-1", token=RW)
    again = await client.create_flow(TENANT, flow_create(), idempotency_key="idem-1", token=RW)
    assert again.id == first.id
    page = await client.list_flows(TENANT, token=RO)
    assert [f.id for f in page.delivery_flows] == [first.id]
    with pytest.raises(UnprocessableEntityError):
        await client.create_flow(TENANT, flow_create("other"), idempotency_key="idem-1", token=RW)


async def test_a_lost_answer_is_retried_without_a_duplicate_write(env: Sandbox) -> None:
    app = env.app()
    lost = 0

    async def loses_first_answer(scope: Any, receive: Any, send: Any) -> None:
        """Lets the write happen, then replaces its answer with a 503, once."""
        nonlocal lost
        if scope["type"] != "http" or scope["method"] != "POST" or lost:
            await app(scope, receive, send)
            return
        lost += 1

        async def swallow(message: Any) -> None:
            pass

        await app(scope, receive, swallow)
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sleeps: list[float] = []

    async def no_wait(seconds: float) -> None:
        sleeps.append(seconds)

    client = env.client(loses_first_answer, sleep=no_wait, retries=RetryConfig(jitter=0.0))
    created = await client.create_flow(TENANT, flow_create(), token=RW)
    assert lost == 1
    assert len(sleeps) == 1
    page = await client.list_flows(TENANT, token=RO)
    assert [f.id for f in page.delivery_flows] == [created.id]


async def test_stale_if_match_is_a_precondition_failure(client: BackendClient) -> None:
    created = await client.create_flow(TENANT, flow_create(), token=RW)
    stale = created.etag
    await client.update_flow(
        TENANT, created.id, as_update(flow_create(), name="v2"), if_match=stale, token=RW
    )
    with pytest.raises(PreconditionFailedError) as caught:
        await client.update_flow(
            TENANT, created.id, as_update(flow_create(), name="v3"), if_match=stale, token=RW
        )
    assert caught.value.status_code == 412
    with pytest.raises(PreconditionFailedError):
        await client.delete_flow(TENANT, created.id, if_match=stale, token=RW)
    assert (await client.get_flow(TENANT, created.id, token=RO)).name == "v2"


async def test_read_only_key_cannot_write(client: BackendClient) -> None:
    with pytest.raises(PermissionDeniedError) as caught:
        await client.create_flow(TENANT, flow_create(), token=RO)
    assert caught.value.required_scope == "write:delivery-flows"


async def test_another_tenants_key_is_refused(client: BackendClient) -> None:
    with pytest.raises(PermissionDeniedError):
        await client.list_flows(TENANT, token=GLOBEX)


async def test_unknown_key_is_unauthenticated(client: BackendClient) -> None:
    with pytest.raises(AuthenticationError) as caught:
        await client.list_clusters(TENANT, token="zen_key_nope")
    assert caught.value.status_code == 401


async def test_duplicate_name_is_a_conflict(client: BackendClient) -> None:
    await client.create_flow(TENANT, flow_create(), token=RW)
    with pytest.raises(ConflictError):
        await client.create_flow(TENANT, flow_create(), token=RW)


async def test_validation_errors_come_back_as_bad_request(client: BackendClient) -> None:
    with pytest.raises(BadRequestError) as caught:
        await client.create_flow(TENANT, flow_create(source_id="ing_nope"), token=RW)
    problem = caught.value.problem
    assert problem is not None
    assert problem.type == "https://api.zen-mesh.io/errors/validation-error"
    assert "source_id" in (problem.detail or "") or any(
        e.field == "source_id" for e in problem.errors or []
    )


async def test_a_bad_cursor_is_a_bad_request(client: BackendClient) -> None:
    with pytest.raises(BadRequestError):
        await client.list_flows(TENANT, cursor="not-a-cursor", token=RO)


async def test_request_id_round_trips(client: BackendClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        await client.get_flow(TENANT, "flow_missing", token=RO, request_id="req_trace_1")
    assert caught.value.request_id == "req_trace_1"
