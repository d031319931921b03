/**
 * A small typed fetch wrapper for the Flows BFF API, for the dashboard's browser code.
 *
 * Every path, parameter, body and answer is typed from `api.d.ts`, which `make types` generates
 * from the gateway's `bff/openapi.json` (a test fails when it is stale). The wrapper does what
 * every call to the gateway needs and nothing else:
 *
 * - sends the session cookie (`credentials: "same-origin"`) and `X-CSRF: 1`, and JSON bodies as
 *   `application/json`;
 * - on a 401, calls `onSignInRequired` with the sign-in URL that brings the user back to the page
 *   they are on (by default the browser goes there), then throws;
 * - turns every other failure into a {@link ProblemError} that carries the RFC 9457 problem:
 *   `status`, `type`, `title`, `detail`, `instance` (the request id to quote) and field `errors`;
 *   a request that got no answer at all is a {@link NetworkError};
 * - `refresh` polls cheaply: it remembers each URL's last answer and sends its `ETag` back as
 *   `If-None-Match`, so an unchanged page comes back as a 304 with no body, and the answer
 *   remembered is returned again (`notModified: true`).
 *
 * ```ts
 * const api = createClient();
 * const { data } = await api.get("/tenants/{tid}/clusters/{cid}/delivery-flows", {
 *   path: { tid: "ten_acme", cid: "plane_dev_us_east_1" },
 *   query: { limit: 50 },
 * });
 * const created = await api.post("/tenants/{tid}/clusters/{cid}/delivery-flows", {
 *   path: { tid: "ten_acme", cid: "plane_dev_us_east_1" },
 *   body: { name: "stripe-to-orders", sourceId: "ing_stripe_prod", destinationId: "dest_orders_api" },
 *   headers: { "Idempotency-Key": newIdempotencyKey() }, // reuse it when retrying this create
 * });
 * const polled = await api.refresh("/tenants/{tid}/clusters/{cid}/delivery-flows", {
 *   path: { tid: "ten_acme", cid: "plane_dev_us_east_1" },
 * });
 * if (!polled.notModified) render(polled.data.items);
 * ```
 */

import type { components, paths } from "./api.js";

export type Schemas = components["schemas"];
export type Problem = Schemas["Problem"];
export type FieldError = Schemas["FieldError"];

/** Where the gateway serves its API on the dashboard's origin. */
export const API_BASE = "/api/bff/v1";

/** The problem type URIs start with this; the rest is the slug (`session-expired`, …). */
export const PROBLEM_TYPE_PREFIX = "https://api.zen-mesh.io/errors/";

export type Method = "get" | "post" | "put" | "delete";

/** The paths of the API that have an operation for `M`. */
export type PathsWith<M extends Method> = {
  [P in keyof paths]: paths[P][M] extends { responses: unknown } ? P : never;
}[keyof paths];

/** The paths whose GET answers 304 to `If-None-Match`: what {@link FlowsClient.refresh} takes. */
export type RevalidatedPaths = {
  [P in PathsWith<"get">]: paths[P]["get"] extends { responses: { 304: unknown } } ? P : never;
}[PathsWith<"get">];

/** How many URLs' last answers {@link FlowsClient.refresh} keeps (the least recent goes first). */
export const REMEMBERED_ANSWERS = 100;

type PathParams<O> = O extends { parameters: { path: infer T } } ? T : never;
type QueryParams<O> = O extends { parameters: { query?: infer Q } } ? Exclude<Q, undefined> : never;
type HeaderParams<O> = O extends { parameters: { header?: infer H } }
  ? Omit<Exclude<H, undefined>, "X-CSRF" | "If-None-Match">
  : never;
type RequestBodyOf<O> = O extends { requestBody?: infer R } ? Exclude<R, undefined> : never;
type JsonBody<O> = [RequestBodyOf<O>] extends [never]
  ? never
  : RequestBodyOf<O> extends { content: { "application/json": infer B } }
    ? B
    : never;

/** The JSON body of an operation's successful answer (`undefined` for 204 No Content). */
export type SuccessBody<O> = O extends { responses: infer R }
  ? R extends { 200: { content: { "application/json": infer T } } }
    ? T
    : R extends { 201: { content: { "application/json": infer T } } }
      ? T
      : R extends { 204: unknown }
        ? undefined
        : unknown
  : never;

/** What a call takes: path and query parameters, the body, headers such as `If-Match`. */
export type RequestOptions<O> = ([PathParams<O>] extends [never]
  ? { path?: undefined }
  : { path: PathParams<O> }) &
  ([QueryParams<O>] extends [never] ? { query?: undefined } : { query?: QueryParams<O> }) &
  ([JsonBody<O>] extends [never] ? { body?: undefined } : { body: JsonBody<O> }) & {
    headers?: [HeaderParams<O>] extends [never] ? undefined : HeaderParams<O>;
    signal?: AbortSignal;
  };

/** Options may be left out when the operation needs none. */
type OptionsArgument<O> = [PathParams<O>] extends [never]
  ? [JsonBody<O>] extends [never]
    ? [options?: RequestOptions<O>]
    : [options: RequestOptions<O>]
  : [options: RequestOptions<O>];

/** A successful answer: its body, and the headers a dashboard acts on. */
export interface ApiResponse<T> {
  data: T;
  status: number;
  /** The entity tag to send back as `If-Match` (flows). */
  etag: string | null;
  /** The gateway's request id (`req_…`), to quote when reporting a problem. */
  requestId: string | null;
  response: Response;
}

/** An answer of {@link FlowsClient.refresh}. */
export interface RefreshedResponse<T> extends ApiResponse<T> {
  /**
   * The gateway answered 304: the answer is unchanged since the last call of this URL, and
   * `data` is that answer's (`status` is 304, `requestId` and `response` this call's).
   */
  notModified: boolean;
}

/** The gateway answered with an error: the problem it sent, typed. */
export class ProblemError extends Error {
  readonly status: number;
  readonly type: string;
  readonly title: string;
  readonly detail: string;
  /** The request id (`req_…`): show it so that the user can quote it. */
  readonly instance: string | undefined;
  readonly errors: FieldError[];
  readonly problem: Problem;

  constructor(problem: Problem) {
    super(problem.detail || problem.title);
    this.name = "ProblemError";
    this.problem = problem;
    this.status = problem.status;
    this.type = problem.type;
    this.title = problem.title;
    this.detail = problem.detail;
    this.instance = problem.instance;
    this.errors = problem.errors ?? [];
  }

  /** The last part of `type`: `validation-error`, `session-expired`, `precondition-failed`, … */
  get slug(): string {
    return this.type.startsWith(PROBLEM_TYPE_PREFIX)
      ? this.type.slice(PROBLEM_TYPE_PREFIX.length)
      : this.type;
  }

  /** The message for one form field (`sourceId`, `retryPolicy.maxAttempts`), if any. */
  fieldError(field: string): string | undefined {
    const messages = this.errors.filter((e) => e.field === field).map((e) => e.message);
    return messages.length ? messages.join(" ") : undefined;
  }
}

/** The request got no answer (the network, or the gateway, is down). Retrying may help. */
export class NetworkError extends Error {
  constructor(cause: unknown) {
    super("The gateway did not answer.", { cause });
    this.name = "NetworkError";
  }
}

export interface ClientOptions {
  /** Where the API is; default {@link API_BASE} on this origin. */
  baseUrl?: string;
  /** The fetch to use (a test's, say); default the global one. */
  fetch?: typeof fetch;
  /**
   * Called with the sign-in URL when the gateway answers 401 (no session, or it ended); the call
   * then throws its {@link ProblemError}. Default: the browser goes to that URL.
   */
  onSignInRequired?: (signInUrl: string, error: ProblemError) => void;
  /** The local path to come back to after signing in; default the page's path and query. */
  returnTo?: () => string;
}

export interface FlowsClient {
  get<P extends PathsWith<"get">>(
    path: P,
    ...options: OptionsArgument<paths[P]["get"]>
  ): Promise<ApiResponse<SuccessBody<paths[P]["get"]>>>;
  post<P extends PathsWith<"post">>(
    path: P,
    ...options: OptionsArgument<paths[P]["post"]>
  ): Promise<ApiResponse<SuccessBody<paths[P]["post"]>>>;
  put<P extends PathsWith<"put">>(
    path: P,
    ...options: OptionsArgument<paths[P]["put"]>
  ): Promise<ApiResponse<SuccessBody<paths[P]["put"]>>>;
  delete<P extends PathsWith<"delete">>(
    path: P,
    ...options: OptionsArgument<paths[P]["delete"]>
  ): Promise<ApiResponse<SuccessBody<paths[P]["delete"]>>>;
  /**
   * A GET that remembers its answer per URL (path and query): the next call of the same URL sends
   * that answer's `ETag` as `If-None-Match`, and on 304 returns the answer again with
   * `notModified: true`, nothing downloaded. For polling a list.
   */
  refresh<P extends RevalidatedPaths>(
    path: P,
    ...options: OptionsArgument<paths[P]["get"]>
  ): Promise<RefreshedResponse<SuccessBody<paths[P]["get"]>>>;
  /** The sign-in URL that returns to `returnTo` (default: this page). */
  signInUrl(returnTo?: string): string;
}

/** A key for one write: send the same key when retrying that write, and it happens once. */
export function newIdempotencyKey(): string {
  return "dash-" + crypto.randomUUID();
}

/** `/tenants/{tid}/clusters` with `{tid: "ten_acme"}` → `/tenants/ten_acme/clusters`. */
export function fillPath(template: string, params: Record<string, string> | undefined): string {
  return template.replace(/\{([^}]+)\}/g, (_, name: string) => {
    const value = params?.[name];
    if (value === undefined) throw new TypeError(`missing path parameter ${name}`);
    return encodeURIComponent(value);
  });
}

function defaultReturnTo(): string {
  return typeof location === "undefined" ? "/" : location.pathname + location.search;
}

function defaultSignIn(url: string): void {
  if (typeof location !== "undefined") location.assign(url);
}

async function readProblem(response: Response): Promise<Problem> {
  const requestId = response.headers.get("X-Request-ID") ?? undefined;
  let body: unknown = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (body && typeof body === "object" && "status" in body && "title" in body) {
    const problem = body as Problem;
    return { ...problem, instance: problem.instance ?? requestId };
  }
  return {
    type: "about:blank",
    title: response.statusText || "Error",
    status: response.status,
    detail: `The gateway answered ${response.status}.`,
    instance: requestId,
  };
}

/** A client for the gateway's API on this origin (or `options.baseUrl`). */
export function createClient(options: ClientOptions = {}): FlowsClient {
  const baseUrl = options.baseUrl ?? API_BASE;
  const doFetch = options.fetch ?? ((input, init) => fetch(input, init));
  const returnTo = options.returnTo ?? defaultReturnTo;
  const onSignInRequired = options.onSignInRequired ?? defaultSignIn;

  const signInUrl = (to?: string): string =>
    `${baseUrl}/auth/login?returnTo=${encodeURIComponent(to ?? returnTo())}`;

  // refresh's last answer per URL, the most recently used last.
  const remembered = new Map<string, ApiResponse<unknown>>();
  const remember = (url: string, answer: ApiResponse<unknown>): void => {
    remembered.delete(url);
    remembered.set(url, answer);
    if (remembered.size > REMEMBERED_ANSWERS) {
      remembered.delete(remembered.keys().next().value as string);
    }
  };

  async function call(
    method: Method,
    template: string,
    given: {
      path?: Record<string, string>;
      query?: Record<string, string | number | boolean | undefined>;
      body?: unknown;
      headers?: Record<string, string | undefined>;
      signal?: AbortSignal;
    } = {},
    revalidate = false,
  ): Promise<RefreshedResponse<unknown>> {
    let url = baseUrl + fillPath(template, given.path);
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(given.query ?? {})) {
      if (value !== undefined) query.set(name, String(value));
    }
    if (query.size) url += "?" + query.toString();
    const headers = new Headers({ Accept: "application/json", "X-CSRF": "1" });
    for (const [name, value] of Object.entries(given.headers ?? {})) {
      if (value !== undefined) headers.set(name, value);
    }
    const previous = revalidate ? remembered.get(url) : undefined;
    if (previous?.etag) headers.set("If-None-Match", previous.etag);
    const init: RequestInit = {
      method: method.toUpperCase(),
      credentials: "same-origin",
      cache: "no-store",
      headers,
    };
    if (given.signal) init.signal = given.signal;
    if (given.body !== undefined) {
      headers.set("Content-Type", "application/json");
      init.body = JSON.stringify(given.body);
    }
    let response: Response;
    try {
      response = await doFetch(url, init);
    } catch (error) {
      if (error instanceof DOMException && error.name === "AbortError") throw error;
      throw new NetworkError(error);
    }
    const requestId = response.headers.get("X-Request-ID");
    if (response.status === 304 && previous) {
      remember(url, previous);
      const etag = response.headers.get("ETag") ?? previous.etag;
      return { ...previous, status: 304, etag, requestId, response, notModified: true };
    }
    if (!response.ok) {
      const error = new ProblemError(await readProblem(response));
      if (response.status === 401) onSignInRequired(signInUrl(), error);
      throw error;
    }
    const data: unknown = response.status === 204 ? undefined : await response.json();
    const etag = response.headers.get("ETag");
    const answer = { data, status: response.status, etag, requestId, response };
    if (revalidate) {
      if (etag) remember(url, answer);
      else remembered.delete(url);
    }
    return { ...answer, notModified: false };
  }

  // The typed surface is the interface above; the one implementation serves every method.
  const untyped = (method: Method) => (path: string, options?: object) =>
    call(method, path, options as Parameters<typeof call>[2]);
  return {
    get: untyped("get"),
    post: untyped("post"),
    put: untyped("put"),
    delete: untyped("delete"),
    refresh: (path: string, options?: object) =>
      call("get", path, options as Parameters<typeof call>[2], true),
    signInUrl,
  } as FlowsClient;
}
