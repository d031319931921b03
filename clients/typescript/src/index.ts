/** The Flows BFF API for the dashboard: generated types and the typed fetch wrapper. */
export type { components, operations, paths } from "./api.js";
export {
  API_BASE,
  type ApiResponse,
  type ClientOptions,
  createClient,
  type FieldError,
  fillPath,
  type FlowsClient,
  type Method,
  NetworkError,
  newIdempotencyKey,
  type PathsWith,
  type Problem,
  PROBLEM_TYPE_PREFIX,
  ProblemError,
  type RefreshedResponse,
  REMEMBERED_ANSWERS,
  type RequestOptions,
  type RevalidatedPaths,
  type Schemas,
  type SuccessBody,
} from "./client.js";
export {
  SESSION_EVENTS_PATH,
  type SessionEndReason,
  type SessionEvent,
  sessionEvents,
  type SessionEventsOptions,
} from "./session_events.js";

import type { components } from "./api.js";

export type FlowView = components["schemas"]["FlowView"];
export type FlowWrite = components["schemas"]["FlowWrite"];
export type FlowList = components["schemas"]["FlowList"];
export type FlowOptions = components["schemas"]["FlowOptions"];
export type Cluster = components["schemas"]["Cluster"];
export type SessionView = components["schemas"]["SessionView"];
export type SessionSummary = components["schemas"]["SessionSummary"];
