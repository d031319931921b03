// Runtime tests of the typed client (src/client.ts, compiled by tests/clients/test_typescript.py),
// against a fake fetch: what it sends, what it returns, and how it fails.
import assert from "node:assert/strict";
import { test } from "node:test";

import { createClient, NetworkError, ProblemError } from "./client.js";

function fakeFetch(answer) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, init });
    return typeof answer === "function" ? answer(url, init) : answer.clone();
  };
  return { fetch, calls };
}

const json = (status, body, headers = {}) =>
  new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json", ...headers },
  });

const path = { tid: "ten_acme", cid: "plane/dev" };

test("a call sends the CSRF header and the cookie, with the path filled in", async () => {
  const { fetch, calls } = fakeFetch(
    json(200, { items: [], page: { limit: 5, nextCursor: null, hasMore: false } }, {
      ETag: '"1"',
      "X-Request-ID": "req_0123456789abcdef01234567",
    }),
  );
  const api = createClient({ fetch });
  const answer = await api.get("/tenants/{tid}/clusters/{cid}/delivery-flows", {
    path,
    query: { limit: 5, cursor: undefined },
  });
  assert.equal(calls.length, 1);
  assert.equal(calls[0].url, "/api/bff/v1/tenants/ten_acme/clusters/plane%2Fdev/delivery-flows?limit=5");
  assert.equal(calls[0].init.method, "GET");
  assert.equal(calls[0].init.credentials, "same-origin");
  assert.equal(calls[0].init.headers.get("X-CSRF"), "1");
  assert.equal(calls[0].init.body, undefined);
  assert.deepEqual(answer.data.items, []);
  assert.equal(answer.etag, '"1"');
  assert.equal(answer.requestId, "req_0123456789abcdef01234567");
});

test("refresh sends the ETag of the URL's last answer and gives that answer back on 304", async () => {
  const page = { items: [{ id: "flow_1" }], page: { limit: 20, nextCursor: "c1", hasMore: true } };
  const answers = [
    json(200, page, { ETag: '"p1"', "X-Request-ID": "req_1" }),
    new Response(null, { status: 304, headers: { ETag: '"p1"', "X-Request-ID": "req_2" } }),
    json(200, { items: [], page: { limit: 20, nextCursor: null, hasMore: false } }, { ETag: '"p2"' }),
  ];
  const { fetch, calls } = fakeFetch(() => answers.shift());
  const api = createClient({ fetch });
  const list = "/tenants/{tid}/clusters/{cid}/delivery-flows";
  const first = await api.refresh(list, { path });
  const again = await api.refresh(list, { path });
  const next = await api.refresh(list, { path, query: { cursor: "c1" } });
  assert.deepEqual(
    calls.map((call) => call.init.headers.get("If-None-Match")),
    [null, '"p1"', null],
    "only a URL answered before is revalidated",
  );
  assert.equal(first.notModified, false);
  assert.deepEqual(first.data, page);
  assert.equal(again.notModified, true);
  assert.equal(again.status, 304);
  assert.deepEqual(again.data, page);
  assert.equal(again.etag, '"p1"');
  assert.equal(again.requestId, "req_2");
  assert.equal(next.notModified, false);
  assert.deepEqual(next.data.items, []);
});

test("refresh remembers a changed answer in place of the old one; get remembers nothing", async () => {
  const answers = [
    json(200, { items: [{ id: "a" }] }, { ETag: '"v1"' }),
    json(200, { items: [{ id: "b" }] }, { ETag: '"v2"' }),
    new Response(null, { status: 304, headers: { ETag: '"v2"' } }),
    json(200, { items: [{ id: "b" }] }, { ETag: '"v2"' }),
  ];
  const { fetch, calls } = fakeFetch(() => answers.shift());
  const api = createClient({ fetch });
  const list = "/tenants/{tid}/clusters/{cid}/delivery-flows";
  await api.refresh(list, { path });
  const changed = await api.refresh(list, { path });
  const same = await api.refresh(list, { path });
  const plain = await api.get(list, { path });
  assert.deepEqual(
    calls.map((call) => call.init.headers.get("If-None-Match")),
    [null, '"v1"', '"v2"', null],
  );
  assert.equal(changed.notModified, false);
  assert.deepEqual(changed.data.items, [{ id: "b" }]);
  assert.equal(same.notModified, true);
  assert.deepEqual(same.data.items, [{ id: "b" }]);
  assert.equal(plain.status, 200);
});

test("a write sends JSON and the headers it was given", async () => {
  const flow = { id: "flow_1", name: "n" };
  const { fetch, calls } = fakeFetch(json(201, flow));
  const api = createClient({ fetch });
  const answer = await api.post("/tenants/{tid}/clusters/{cid}/delivery-flows", {
    path,
    body: { name: "n", sourceId: "ing_a", destinationId: "dest_b" },
    headers: { "Idempotency-Key": "key-1" },
  });
  assert.equal(calls[0].init.method, "POST");
  assert.equal(calls[0].init.headers.get("Content-Type"), "application/json");
  assert.equal(calls[0].init.headers.get("Idempotency-Key"), "key-1");
  assert.deepEqual(JSON.parse(calls[0].init.body), { name: "n", sourceId: "ing_a", destinationId: "dest_b" });
  assert.deepEqual(answer.data, flow);
  assert.equal(answer.status, 201);
});

test("204 No Content has no data", async () => {
  const { fetch } = fakeFetch(new Response(null, { status: 204 }));
  const answer = await createClient({ fetch }).delete(
    "/tenants/{tid}/clusters/{cid}/delivery-flows/{fid}",
    { path: { ...path, fid: "flow_1" } },
  );
  assert.equal(answer.data, undefined);
});

test("401 asks for a sign-in that returns to the page, then throws the problem", async () => {
  const problem = {
    type: "https://api.zen-mesh.io/errors/session-expired",
    title: "Session Expired",
    status: 401,
    detail: "The session has ended.",
    instance: "req_aaaaaaaaaaaaaaaaaaaaaaaa",
  };
  const { fetch } = fakeFetch(json(401, problem));
  const signIns = [];
  const api = createClient({
    fetch,
    returnTo: () => "/flows?tenant=ten_acme",
    onSignInRequired: (url, error) => signIns.push([url, error.slug]),
  });
  await assert.rejects(api.get("/auth/session"), (error) => {
    assert.ok(error instanceof ProblemError);
    assert.equal(error.status, 401);
    assert.equal(error.slug, "session-expired");
    assert.equal(error.instance, "req_aaaaaaaaaaaaaaaaaaaaaaaa");
    return true;
  });
  assert.deepEqual(signIns, [
    ["/api/bff/v1/auth/login?returnTo=%2Fflows%3Ftenant%3Dten_acme", "session-expired"],
  ]);
});

test("a problem is exposed with its type, title, detail, request id and field errors", async () => {
  const problem = {
    type: "https://api.zen-mesh.io/errors/validation-error",
    title: "Validation Error",
    status: 400,
    detail: "name: Enter a name.",
    instance: "req_bbbbbbbbbbbbbbbbbbbbbbbb",
    errors: [{ field: "name", message: "Enter a name.", code: "required" }],
  };
  const { fetch } = fakeFetch(json(400, problem));
  const signIns = [];
  const api = createClient({ fetch, onSignInRequired: (url) => signIns.push(url) });
  await assert.rejects(
    api.post("/tenants/{tid}/clusters/{cid}/delivery-flows", { path, body: {} }),
    (error) => {
      assert.ok(error instanceof ProblemError);
      assert.equal(error.type, problem.type);
      assert.equal(error.slug, "validation-error");
      assert.equal(error.title, "Validation Error");
      assert.equal(error.detail, "name: Enter a name.");
      assert.equal(error.instance, "req_bbbbbbbbbbbbbbbbbbbbbbbb");
      assert.equal(error.fieldError("name"), "Enter a name.");
      assert.equal(error.fieldError("sourceId"), undefined);
      assert.deepEqual(error.problem, problem);
      return true;
    },
  );
  assert.deepEqual(signIns, [], "only a 401 asks for a sign-in");
});

test("an answer that is not a problem still becomes one, with the request id", async () => {
  const { fetch } = fakeFetch(
    new Response("<html>Bad gateway</html>", {
      status: 502,
      statusText: "Bad Gateway",
      headers: { "Content-Type": "text/html", "X-Request-ID": "req_cccccccccccccccccccccccc" },
    }),
  );
  await assert.rejects(createClient({ fetch }).get("/auth/sessions"), (error) => {
    assert.ok(error instanceof ProblemError);
    assert.equal(error.status, 502);
    assert.equal(error.type, "about:blank");
    assert.equal(error.title, "Bad Gateway");
    assert.equal(error.instance, "req_cccccccccccccccccccccccc");
    return true;
  });
});

test("no answer at all is a NetworkError", async () => {
  const fetch = async () => {
    throw new TypeError("fetch failed");
  };
  await assert.rejects(createClient({ fetch }).get("/auth/sessions"), NetworkError);
});

test("a missing path parameter is refused before anything is sent", async () => {
  const { fetch, calls } = fakeFetch(json(200, {}));
  await assert.rejects(
    createClient({ fetch }).get("/tenants/{tid}/clusters", { path: {} }),
    /missing path parameter tid/,
  );
  assert.equal(calls.length, 0);
});
