from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import msgspec
import pytest
import respx

from tests.support.backend import CLUSTER, FLOWS_PATH, TENANT, MakeClient, flow_json
from upstream_client import (
    BackendClient,
    Cluster,
    Destination,
    Flow,
    FlowConfig,
    FlowCreate,
    FlowUpdate,
    Ingester,
    Limits,
    ResponseTooLargeError,
    ResponseValidationError,
    RetryPolicy,
)

CREATE = FlowCreate(
    name="stripe-to-app",
    cluster_id=CLUSTER,
    source_id="ing_stripe_prod",
    destination_id="dest_orders_api",
)


async def test_get_flow_sends_credentials_and_request_id(
    router: respx.Router, client: BackendClient
) -> None:
    route = router.get(f"{FLOWS_PATH}/flow_1").mock(
        return_value=httpx.Response(200, json=flow_json(version=4), headers={"ETag": '"4"'})
    )
    flow = await client.get_flow(TENANT, "flow_1", token="zen_key_dev_acme_ro", request_id="req_1")
    request = route.calls.last.request
    assert request.method == "GET"
    assert request.headers["Authorization"] == "Bearer zen_key_dev_acme_ro"
    assert request.headers["X-Request-ID"] == "req_1"
    assert request.headers["Accept"] == "application/json"
    assert "Idempotency-Key" not in request.headers
    assert "Cookie" not in request.headers
    assert flow.id == "flow_1"
    assert flow.etag == '"4"'
    assert flow.version == 4
    assert flow.created_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert flow.config.retry_policy == RetryPolicy(max_attempts=3, backoff_seconds=10)


async def test_etag_header_is_kept_verbatim(router: respx.Router, client: BackendClient) -> None:
    router.get(f"{FLOWS_PATH}/flow_1").mock(
        return_value=httpx.Response(200, json=flow_json(version=4), headers={"ETag": 'W/"abc"'})
    )
    flow = await client.get_flow(TENANT, "flow_1", token="t")
    assert flow.etag == 'W/"abc"'


async def test_etag_is_derived_from_version_without_the_header(
    router: respx.Router, client: BackendClient
) -> None:
    router.get(f"{FLOWS_PATH}/flow_1").mock(
        return_value=httpx.Response(200, json=flow_json(version=7))
    )
    flow = await client.get_flow(TENANT, "flow_1", token="t")
    assert flow.etag == '"7"'


async def test_an_etag_field_in_the_body_is_not_taken_for_the_header(
    router: respx.Router, client: BackendClient
) -> None:
    # "etag" is not a field of the contract: only the ETag header or the version may set it.
    forged = '"7"\r\nSet-Cookie: a=b'
    router.get(f"{FLOWS_PATH}/flow_1").mock(
        return_value=httpx.Response(200, json=flow_json(version=7, etag=forged))
    )
    router.get(FLOWS_PATH).mock(
        return_value=httpx.Response(
            200, json={"delivery_flows": [flow_json("flow_1", 3, etag=forged)]}
        )
    )
    flow = await client.get_flow(TENANT, "flow_1", token="t")
    page = await client.list_flows(TENANT, token="t")
    assert flow.etag == '"7"'
    assert [f.etag for f in page.delivery_flows] == ['"3"']


async def test_unknown_response_fields_are_ignored(
    router: respx.Router, client: BackendClient
) -> None:
    body = flow_json(labels={"a": "b"}, config={"retry_policy": {"max_attempts": 5, "jitter": 1}})
    router.get(f"{FLOWS_PATH}/flow_1").mock(return_value=httpx.Response(200, json=body))
    flow = await client.get_flow(TENANT, "flow_1", token="t")
    assert flow.config.retry_policy.max_attempts == 5
    assert flow.config.retry_policy.backoff_seconds == 10


async def test_create_flow_sends_the_body_and_an_idempotency_key(
    router: respx.Router, client: BackendClient
) -> None:
    route = router.post(FLOWS_PATH).mock(
        return_value=httpx.Response(201, json=flow_json(), headers={"ETag": '"1"'})
    )
    flow = await client.create_flow(TENANT, CREATE, token="t", request_id="req_2")
    request = route.calls.last.request
    assert request.headers["Content-Type"] == "application/json"
    assert len(request.headers["Idempotency-Key"]) >= 16
    assert json.loads(request.content) == {
        "name": "stripe-to-app",
        "cluster_id": CLUSTER,
        "source_id": "ing_stripe_prod",
        "destination_id": "dest_orders_api",
    }
    assert flow.etag == '"1"'


async def test_create_flow_with_config_sends_the_whole_retry_policy(
    router: respx.Router, client: BackendClient
) -> None:
    route = router.post(FLOWS_PATH).mock(return_value=httpx.Response(201, json=flow_json()))
    body = msgspec.structs.replace(
        CREATE, config=FlowConfig(retry_policy=RetryPolicy(max_attempts=5))
    )
    await client.create_flow(TENANT, body, token="t", idempotency_key="k1")
    sent = json.loads(route.calls.last.request.content)
    assert sent["config"] == {"retry_policy": {"max_attempts": 5, "backoff_seconds": 10}}
    assert route.calls.last.request.headers["Idempotency-Key"] == "k1"


def test_request_models_refuse_unknown_fields() -> None:
    raw = b'{"name":"n","cluster_id":"c","source_id":"s","destination_id":"d","fanout":["x"]}'
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(raw, type=FlowCreate)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(raw, type=FlowUpdate)


async def test_a_wrong_body_type_is_refused(client: BackendClient) -> None:
    with pytest.raises(TypeError):
        await client.create_flow(TENANT, {"name": "n"}, token="t")  # type: ignore[arg-type]


async def test_update_flow_sends_if_match(router: respx.Router, client: BackendClient) -> None:
    route = router.put(f"{FLOWS_PATH}/flow_1").mock(
        return_value=httpx.Response(200, json=flow_json(version=2), headers={"ETag": '"2"'})
    )
    update = FlowUpdate(name="x", cluster_id=CLUSTER, source_id="ing_a", destination_id="dest_a")
    flow = await client.update_flow(TENANT, "flow_1", update, if_match='"1"', token="t")
    request = route.calls.last.request
    assert request.headers["If-Match"] == '"1"'
    assert "Idempotency-Key" in request.headers
    assert json.loads(request.content)["name"] == "x"
    assert flow.etag == '"2"'


async def test_delete_flow(router: respx.Router, client: BackendClient) -> None:
    route = router.delete(f"{FLOWS_PATH}/flow_1").mock(return_value=httpx.Response(204))
    assert await client.delete_flow(TENANT, "flow_1", if_match='"3"', token="t") is None
    assert route.calls.last.request.headers["If-Match"] == '"3"'


async def test_list_flows_passes_filters_and_derives_etags(
    router: respx.Router, client: BackendClient
) -> None:
    route = router.get(FLOWS_PATH).mock(
        return_value=httpx.Response(
            200,
            json={
                "delivery_flows": [flow_json("flow_1", 3), flow_json("flow_2", 9)],
                "next_cursor": "c2",
            },
        )
    )
    page = await client.list_flows(TENANT, cluster_id=CLUSTER, limit=2, cursor="c1", token="t")
    params = route.calls.last.request.url.params
    assert dict(params) == {"cluster_id": CLUSTER, "limit": "2", "cursor": "c1"}
    assert [f.etag for f in page.delivery_flows] == ['"3"', '"9"']
    assert page.next_cursor == "c2"


async def test_iter_flows_walks_every_page(router: respx.Router, client: BackendClient) -> None:
    pages = {
        None: {"delivery_flows": [flow_json("flow_1"), flow_json("flow_2")], "next_cursor": "p2"},
        "p2": {"delivery_flows": [flow_json("flow_3")], "next_cursor": "p3"},
        "p3": {"delivery_flows": [], "next_cursor": None},
    }
    cursors: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        cursors.append(cursor)
        assert request.url.params["limit"] == "2"
        return httpx.Response(200, json=pages[cursor])

    router.get(FLOWS_PATH).mock(side_effect=handler)
    ids = [f.id async for f in client.iter_flows(TENANT, limit=2, token="t")]
    assert ids == ["flow_1", "flow_2", "flow_3"]
    assert cursors == [None, "p2", "p3"]


async def test_a_pagination_loop_is_detected(router: respx.Router, client: BackendClient) -> None:
    router.get(FLOWS_PATH).mock(
        return_value=httpx.Response(
            200, json={"delivery_flows": [flow_json()], "next_cursor": "same"}
        )
    )
    with pytest.raises(ResponseValidationError):
        async for _ in client.iter_flows(TENANT, token="t"):
            pass


@pytest.mark.parametrize(
    ("method", "collection", "items", "expected"),
    [
        (
            "list_clusters",
            "clusters",
            [{"id": "c1", "name": "C1", "region": "us-east-1", "status": "ready", "x": 1}],
            [Cluster(id="c1", name="C1", region="us-east-1", status="ready")],
        ),
        (
            "list_ingesters",
            "ingesters",
            [{"id": "ing_a", "name": "A", "type": "stripe", "cluster_id": CLUSTER}],
            [Ingester(id="ing_a", name="A", type="stripe", cluster_id=CLUSTER)],
        ),
        (
            "list_destinations",
            "destinations",
            [{"id": "dest_a", "name": "A", "url": "https://a.test", "cluster_id": CLUSTER}],
            [Destination(id="dest_a", name="A", url="https://a.test", cluster_id=CLUSTER)],
        ),
    ],
)
async def test_catalogue_lists_follow_every_cursor(
    router: respx.Router,
    client: BackendClient,
    method: str,
    collection: str,
    items: list[dict[str, object]],
    expected: list[object],
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("cursor") is None:
            return httpx.Response(200, json={collection: items, "next_cursor": "more"})
        assert request.url.params["cursor"] == "more"
        return httpx.Response(200, json={collection: items, "next_cursor": None})

    route = router.get(f"/v1/tenants/{TENANT}/{collection}").mock(side_effect=handler)
    result = await getattr(client, method)(TENANT, token="t", request_id="req_3")
    assert result == expected * 2
    assert route.call_count == 2
    assert route.calls.last.request.headers["X-Request-ID"] == "req_3"


@pytest.mark.parametrize("method", ["list_ingesters", "list_destinations"])
async def test_catalogue_lists_filter_by_cluster(
    router: respx.Router, client: BackendClient, method: str
) -> None:
    collection = method.removeprefix("list_")
    route = router.get(f"/v1/tenants/{TENANT}/{collection}").mock(
        return_value=httpx.Response(200, json={collection: []})
    )
    assert await getattr(client, method)(TENANT, cluster_id=CLUSTER, token="t") == []
    assert route.calls.last.request.url.params["cluster_id"] == CLUSTER


async def test_an_oversized_body_is_refused(router: respx.Router, make_client: MakeClient) -> None:
    page = {"delivery_flows": [flow_json(f"flow_{i}") for i in range(50)], "next_cursor": None}
    router.get(FLOWS_PATH).mock(return_value=httpx.Response(200, json=page))
    small = make_client(limits=Limits(max_response_bytes=1024))
    with pytest.raises(ResponseTooLargeError):
        await small.list_flows(TENANT, token="t")
    big = make_client()
    assert len((await big.list_flows(TENANT, token="t")).delivery_flows) == 50


async def test_an_oversized_body_without_content_length_is_cut(make_client: MakeClient) -> None:
    class Endless(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            while True:
                yield b" " * 1024

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Endless())

    client = make_client(
        transport=httpx.MockTransport(handler), limits=Limits(max_response_bytes=64 * 1024)
    )
    with pytest.raises(ResponseTooLargeError):
        await client.get_flow(TENANT, "flow_1", token="t")


async def test_a_gzip_bomb_is_cut_after_decompression(make_client: MakeClient) -> None:
    import gzip

    bomb = gzip.compress(b" " * (1024 * 1024))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=bomb, headers={"Content-Encoding": "gzip"})

    client = make_client(
        transport=httpx.MockTransport(handler), limits=Limits(max_response_bytes=64 * 1024)
    )
    assert len(bomb) < 64 * 1024
    with pytest.raises(ResponseTooLargeError):
        await client.get_flow(TENANT, "flow_1", token="t")


async def test_a_closed_client_refuses_calls(client: BackendClient) -> None:
    await client.aclose()
    with pytest.raises(RuntimeError):
        await client.get_flow(TENANT, "flow_1", token="t")


def test_flow_struct_decodes_to_typed_values() -> None:
    flow = msgspec.json.decode(msgspec.json.encode(flow_json(version=2)), type=Flow)
    assert isinstance(flow.updated_at, datetime)
    assert flow.etag == '"2"'


async def test_respx_global_mock_intercepts_the_httpcore_transport() -> None:
    """How tests that rely on ``respx.mock`` drive the client: pass httpx's own transport."""
    async with respx.mock(base_url="http://backend.test") as mock:
        route = mock.get(f"{FLOWS_PATH}/flow_1").mock(
            return_value=httpx.Response(200, json=flow_json())
        )
        async with BackendClient(
            "http://backend.test", transport=httpx.AsyncHTTPTransport()
        ) as client:
            flow = await client.get_flow(TENANT, "flow_1", token="t")
    assert flow.id == "flow_1"
    assert route.call_count == 1
