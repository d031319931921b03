from __future__ import annotations

import httpx
import pytest

from tests.support.sandbox_app import ACME_RW, FLOWS_PATH, create_flow, flow_body, read_problem


async def flow_at_version_2(client: httpx.AsyncClient) -> str:
    url = f"{FLOWS_PATH}/{(await create_flow(client)).json()['id']}"
    response = await client.put(url, json=flow_body(name="v2"), headers=ACME_RW)
    assert response.headers["etag"] == '"2"'
    return url


@pytest.mark.parametrize("if_match", ['"2"', '"1", "2"', '"7" ,"2"', "*", ' "2" '])
async def test_put_with_a_matching_if_match_succeeds(
    client: httpx.AsyncClient, if_match: str
) -> None:
    url = await flow_at_version_2(client)
    response = await client.put(
        url, json=flow_body(name="v3"), headers={**ACME_RW, "If-Match": if_match}
    )
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"3"'


@pytest.mark.parametrize("if_match", ['"1"', 'W/"2"', "2", '"3"', "", "garbage", '"2'])
@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_a_stale_weak_or_malformed_if_match_is_412(
    client: httpx.AsyncClient, if_match: str, method: str
) -> None:
    url = await flow_at_version_2(client)
    response = await client.request(
        method,
        url,
        json=flow_body(name="lost-update") if method == "PUT" else None,
        headers={**ACME_RW, "If-Match": if_match},
    )
    assert response.status_code == 412
    assert read_problem(response)["type"].endswith("/precondition-failed")
    current = await client.get(url, headers=ACME_RW)
    assert current.json()["name"] == "v2"
    assert current.json()["version"] == 2


async def test_delete_with_a_matching_if_match_succeeds(client: httpx.AsyncClient) -> None:
    url = await flow_at_version_2(client)
    response = await client.delete(url, headers={**ACME_RW, "If-Match": '"2"'})
    assert response.status_code == 204
    assert (await client.get(url, headers=ACME_RW)).status_code == 404


async def test_if_match_on_a_missing_flow_is_404(client: httpx.AsyncClient) -> None:
    response = await client.delete(
        f"{FLOWS_PATH}/flow_01JD0000000000000000000000", headers={**ACME_RW, "If-Match": "*"}
    )
    assert response.status_code == 404


async def test_two_writers_from_the_same_version_one_loses(client: httpx.AsyncClient) -> None:
    url = f"{FLOWS_PATH}/{(await create_flow(client)).json()['id']}"
    etag = (await client.get(url, headers=ACME_RW)).headers["etag"]
    headers = {**ACME_RW, "If-Match": etag}
    first = await client.put(url, json=flow_body(name="alice"), headers=headers)
    second = await client.put(url, json=flow_body(name="bob"), headers=headers)
    assert (first.status_code, second.status_code) == (200, 412)
    assert (await client.get(url, headers=ACME_RW)).json()["name"] == "alice"


@pytest.mark.parametrize("if_none_match", ['"2"', 'W/"2"', '"1", "2"', "*"])
async def test_get_with_the_current_etag_in_if_none_match_is_304(
    client: httpx.AsyncClient, if_none_match: str
) -> None:
    url = await flow_at_version_2(client)
    response = await client.get(url, headers={**ACME_RW, "If-None-Match": if_none_match})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == '"2"'


@pytest.mark.parametrize("if_none_match", ['"1"', "garbage", ""])
async def test_get_with_a_stale_if_none_match_returns_the_flow(
    client: httpx.AsyncClient, if_none_match: str
) -> None:
    url = await flow_at_version_2(client)
    response = await client.get(url, headers={**ACME_RW, "If-None-Match": if_none_match})
    assert response.status_code == 200
    assert response.json()["name"] == "v2"
