// Checked by `tsc --noEmit` (make lint), never run: the client's types accept what the gateway's
// API takes and refuse what it does not. Each @ts-expect-error fails the check if the line
// below it stops being an error.
import { createClient, type FlowView, newIdempotencyKey, ProblemError } from "../src/index.js";

export async function typed(): Promise<void> {
  const api = createClient({ onSignInRequired: () => undefined });
  const path = { tid: "ten_acme", cid: "plane_dev_us_east_1" };

  const page = await api.get("/tenants/{tid}/clusters/{cid}/delivery-flows", {
    path,
    query: { limit: 50 },
  });
  const first: FlowView | undefined = page.data.items[0];
  const next: string | null = page.data.page.nextCursor;
  const session = await api.get("/auth/session");
  const write: boolean | undefined = session.data.tenants[0]?.permissions.write;

  const created = await api.post("/tenants/{tid}/clusters/{cid}/delivery-flows", {
    path,
    body: { name: "n", sourceId: "ing_a", destinationId: "dest_b" },
    headers: { "Idempotency-Key": newIdempotencyKey() },
  });
  await api.put("/tenants/{tid}/clusters/{cid}/delivery-flows/{fid}", {
    path: { ...path, fid: created.data.id },
    body: { name: "n2", sourceId: "ing_a", destinationId: "dest_b" },
    headers: { "If-Match": created.etag ?? "" },
  });
  const deleted = await api.delete("/tenants/{tid}/clusters/{cid}/delivery-flows/{fid}", {
    path: { ...path, fid: created.data.id },
  });
  const nothing: undefined = deleted.data;
  const ended = await api.delete("/auth/sessions");
  const revoked: number = ended.data.revoked;
  const polled = await api.refresh("/tenants/{tid}/clusters/{cid}/delivery-flows", { path });
  const unchanged: boolean = polled.notModified;
  const polledFirst: FlowView | undefined = polled.data.items[0];

  // @ts-expect-error: no such path
  await api.get("/tenants/{tid}/flows", { path });
  // @ts-expect-error: the cluster id is missing
  await api.get("/tenants/{tid}/clusters/{cid}/delivery-flows", { path: { tid: "ten_acme" } });
  // @ts-expect-error: a flow needs a source
  await api.post("/tenants/{tid}/clusters/{cid}/delivery-flows", { path, body: { name: "n", destinationId: "d" } });
  // @ts-expect-error: the list takes no body
  await api.get("/tenants/{tid}/clusters/{cid}/delivery-flows", { path, body: {} });
  // @ts-expect-error: flows cannot be created with PUT on the collection
  await api.put("/tenants/{tid}/clusters/{cid}/delivery-flows", { path });
  // @ts-expect-error: no such field on a flow
  void page.data.items[0]?.sourceId;
  // @ts-expect-error: the clusters answer no 304, so there is nothing to refresh
  await api.refresh("/tenants/{tid}/clusters", { path: { tid: "ten_acme" } });
  // @ts-expect-error: refresh sends If-None-Match itself
  await api.get("/tenants/{tid}/clusters/{cid}/delivery-flows", { path, headers: { "If-None-Match": "*" } });

  try {
    await api.get("/auth/sessions");
  } catch (error) {
    if (error instanceof ProblemError) {
      const requestId: string | undefined = error.instance;
      const field: string | undefined = error.fieldError("name");
      void [requestId, field, error.slug, error.status, error.title, error.detail];
    }
  }
  void [first, next, write, nothing, revoked, unchanged, polledFirst];
}
