/**
 * The signed-in session, live: a typed helper over `EventSource` for
 * `GET /auth/session/events`, so that a tab hears at once when its session ends elsewhere (signed
 * out in another tab, everywhere from a phone, by the identity provider…), is renewed, or is
 * about to expire, instead of at its next call.
 *
 * ```ts
 * const stop = sessionEvents((event) => {
 *   switch (event.event) {
 *     case "ended": // the stream is closed already
 *       return showSignedOut(event.data.reason, api.signInUrl());
 *     case "expiring":
 *       return warnOfTheEnd(event.data.expiresAt);
 *     case "renewed":
 *       return dropTheWarning(event.data.expiresAt);
 *   }
 * }, { onClosed: () => askWhetherStillSignedIn() });
 * ```
 *
 * The browser sends the session cookie and `Sec-Fetch-Site: same-origin` by itself; the stream
 * needs no `X-CSRF` header (an `EventSource` cannot send one) and carries nothing but the
 * session's own state.
 */

import type { components } from "./api.js";
import { API_BASE } from "./client.js";

/** One event of the stream: `ended`, `renewed` or `expiring`, with its data. */
export type SessionEvent = components["schemas"]["SessionEvent"];

/** Why a session ended, as an `ended` event says. */
export type SessionEndReason = components["schemas"]["SessionEnded"]["reason"];

/** The path of the stream under the API. */
export const SESSION_EVENTS_PATH = "/auth/session/events";

const EVENT_NAMES = ["ended", "renewed", "expiring"] as const satisfies readonly SessionEvent[
  "event"
][];

export interface SessionEventsOptions {
  /** Where the API is; default {@link API_BASE} on this origin. */
  baseUrl?: string;
  /** The `EventSource` to use (a test's, say); default the browser's. */
  EventSource?: typeof EventSource;
  /**
   * The stream is closed and the browser will not open it again by itself: the gateway refused
   * it (401 signed out, 429 too many tabs, 503 an instance shutting down) or answered no event
   * stream. Ask `/auth/session` whether the user is still signed in; follow again later, after a
   * call the user makes rather than on a timer (opening the stream counts as using the session).
   */
  onClosed?: () => void;
}

/**
 * Follows the signed-in session: `onEvent` gets each event as the OpenAPI document types it.
 * After `ended` the stream is closed here (left open, the browser would open it again, to a
 * 401). Lost connections are reopened by the browser. Returns what stops following.
 */
export function sessionEvents(
  onEvent: (event: SessionEvent) => void,
  options: SessionEventsOptions = {},
): () => void {
  const Source = options.EventSource ?? EventSource;
  const source = new Source((options.baseUrl ?? API_BASE) + SESSION_EVENTS_PATH);
  for (const name of EVENT_NAMES) {
    source.addEventListener(name, (message: MessageEvent<string>) => {
      const data: unknown = JSON.parse(message.data);
      if (name === "ended") source.close();
      onEvent({ event: name, data } as SessionEvent);
    });
  }
  source.addEventListener("error", () => {
    if (source.readyState === Source.CLOSED) options.onClosed?.();
  });
  return () => source.close();
}
