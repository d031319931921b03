from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import respx

from tests.support.backend import CLUSTER, TENANT, MakeClient, flow_json
from upstream_client import BackendClient, FlowCreate, FlowUpdate, InvalidIdError

HOSTILE_IDS = [
    "..",
    ".",
    "%2e%2e",
    "%2E%2E",
    "a/b",
    "a%2Fb",
    "%2F",
    "a\r\nX-Injected: 1",
    "a\nb",
    "\u2024\u2024",  # one dot leader, twice
    "\uff0e\uff0e",  # fullwidth full stop, twice
    "ten_acme\u0338",
    "",
    " ten_acme",
    "ten_acme ",
    "ten_acme\n",
    "-leading-dash",
    "_leading_underscore",
    "a?b=c",
    "a#b",
    "a;b",
    "a\\b",
    "a" * 65,
]

BODY = FlowCreate(name="n", cluster_id=CLUSTER, source_id="ing_a", destination_id="dest_a")
UPDATE = FlowUpdate(name="n", cluster_id=CLUSTER, source_id="ing_a", destination_id="dest_a")

Call = Callable[[BackendClient, str], Awaitable[Any]]

TENANT_CALLS: dict[str, Call] = {
    "list_flows": lambda c, bad: c.list_flows(bad, token="t"),
    "get_flow": lambda c, bad: c.get_flow(bad, "flow_1", token="t"),
    "create_flow": lambda c, bad: c.create_flow(bad, BODY, token="t"),
    "update_flow": lambda c, bad: c.update_flow(bad, "flow_1", UPDATE, token="t"),
    "delete_flow": lambda c, bad: c.delete_flow(bad, "flow_1", token="t"),
    "list_clusters": lambda c, bad: c.list_clusters(bad, token="t"),
    "list_ingesters": lambda c, bad: c.list_ingesters(bad, token="t"),
    "list_destinations": lambda c, bad: c.list_destinations(bad, token="t"),
}

OTHER_ID_CALLS: dict[str, Call] = {
    "get_flow(flow_id)": lambda c, bad: c.get_flow(TENANT, bad, token="t"),
    "update_flow(flow_id)": lambda c, bad: c.update_flow(TENANT, bad, UPDATE, token="t"),
    "delete_flow(flow_id)": lambda c, bad: c.delete_flow(TENANT, bad, token="t"),
    "list_flows(cluster_id)": lambda c, bad: c.list_flows(TENANT, cluster_id=bad, token="t"),
    "list_ingesters(cluster_id)": lambda c, bad: c.list_ingesters(
        TENANT, cluster_id=bad, token="t"
    ),
    "list_destinations(cluster_id)": lambda c, bad: c.list_destinations(
        TENANT, cluster_id=bad, token="t"
    ),
}


@pytest.fixture
def anything(router: respx.Router) -> respx.Route:
    return router.route().mock(return_value=httpx.Response(200, json=flow_json()))


@pytest.mark.parametrize("bad", HOSTILE_IDS)
@pytest.mark.parametrize("call", list(TENANT_CALLS), ids=str)
async def test_hostile_tenant_id_is_refused_before_any_io(
    anything: respx.Route, client: BackendClient, call: str, bad: str
) -> None:
    with pytest.raises(InvalidIdError):
        await TENANT_CALLS[call](client, bad)
    assert anything.call_count == 0


@pytest.mark.parametrize("bad", HOSTILE_IDS)
@pytest.mark.parametrize("call", list(OTHER_ID_CALLS), ids=str)
async def test_hostile_flow_and_cluster_ids_are_refused_before_any_io(
    anything: respx.Route, client: BackendClient, call: str, bad: str
) -> None:
    with pytest.raises(InvalidIdError):
        await OTHER_ID_CALLS[call](client, bad)
    assert anything.call_count == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"token": "t\r\nX-Injected: 1"},
        {"token": ""},
        {"token": "t\u00e9"},
        {"request_id": "req\nX-Injected: 1"},
        {"if_match": '"1"\r\nX-Injected: 1'},
        {"idempotency_key": "k\r\n"},
    ],
)
async def test_header_injection_is_refused_before_any_io(
    anything: respx.Route, client: BackendClient, kwargs: dict[str, str]
) -> None:
    kwargs = {"token": "t", **kwargs}
    with pytest.raises(ValueError):
        await client.delete_flow(TENANT, "flow_1", **kwargs)
    assert anything.call_count == 0


async def test_well_formed_ids_reach_exactly_the_intended_path(
    anything: respx.Route, client: BackendClient
) -> None:
    await client.get_flow("Ten-1_a", "flow_01JD-x_Y", token="t")
    assert anything.calls.last.request.url.raw_path == (
        b"/v1/tenants/Ten-1_a/delivery-flows/flow_01JD-x_Y"
    )


async def test_base_url_path_prefix_is_kept(make_client: MakeClient) -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json=flow_json())

    client = BackendClient("http://backend.test/api/", transport=httpx.MockTransport(handler))
    async with client:
        await client.get_flow(TENANT, "flow_1", token="t")
    assert str(seen[0]) == "http://backend.test/api/v1/tenants/ten_acme/delivery-flows/flow_1"


async def test_cursor_is_percent_encoded_into_the_query(
    router: respx.Router, client: BackendClient
) -> None:
    route = router.get("/v1/tenants/ten_acme/delivery-flows").mock(
        return_value=httpx.Response(200, json={"delivery_flows": [], "next_cursor": None})
    )
    await client.list_flows(TENANT, cursor="a/../b&limit=1000#x", limit=5, token="t")
    request = route.calls.last.request
    assert request.url.path == "/v1/tenants/ten_acme/delivery-flows"
    assert request.url.params.get_list("limit") == ["5"]
    assert request.url.params["cursor"] == "a/../b&limit=1000#x"


@pytest.mark.parametrize(
    "base_url",
    ["ftp://backend.test", "backend.test", "http://user:pw@backend.test", "http://b.test/?x=1"],
)
def test_unsafe_base_urls_are_refused(base_url: str) -> None:
    with pytest.raises(ValueError):
        BackendClient(base_url, transport=httpx.MockTransport(lambda r: httpx.Response(200)))
