// Runtime tests of the session events helper (src/session_events.ts, compiled by
// tests/clients/test_typescript.py), against a fake EventSource: what it opens, what it hands
// over, and when it closes.
import assert from "node:assert/strict";
import { test } from "node:test";

import { sessionEvents } from "./session_events.js";

class FakeEventSource extends EventTarget {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;
  static opened = [];

  constructor(url) {
    super();
    this.url = url;
    this.readyState = FakeEventSource.CONNECTING;
    FakeEventSource.opened.push(this);
  }

  close() {
    this.readyState = FakeEventSource.CLOSED;
  }

  /** What the gateway sends: an event with JSON data. */
  say(name, data) {
    this.readyState = FakeEventSource.OPEN;
    const message = new Event(name);
    message.data = JSON.stringify(data);
    this.dispatchEvent(message);
  }

  /** The connection failed: the browser reconnects (CONNECTING) or gives up (CLOSED). */
  fail(readyState) {
    this.readyState = readyState;
    this.dispatchEvent(new Event("error"));
  }
}

function follow(options = {}) {
  const events = [];
  const stop = sessionEvents((event) => events.push(event), {
    EventSource: FakeEventSource,
    ...options,
  });
  return { events, stop, source: FakeEventSource.opened.at(-1) };
}

test("it follows the session's stream and hands over each event typed, closing after ended", () => {
  const { events, source } = follow();
  assert.equal(source.url, "/api/bff/v1/auth/session/events");
  source.say("expiring", { expiresAt: "2026-12-05T10:30:00Z" });
  source.say("renewed", { expiresAt: "2026-12-05T11:00:00Z" });
  assert.equal(source.readyState, FakeEventSource.OPEN);
  source.say("ended", { reason: "signed-out-everywhere" });
  assert.deepEqual(events, [
    { event: "expiring", data: { expiresAt: "2026-12-05T10:30:00Z" } },
    { event: "renewed", data: { expiresAt: "2026-12-05T11:00:00Z" } },
    { event: "ended", data: { reason: "signed-out-everywhere" } },
  ]);
  assert.equal(source.readyState, FakeEventSource.CLOSED, "not reopened to a 401");
});

test("it says when the stream is closed for good, not when the browser reconnects", () => {
  let closed = 0;
  const { source, stop } = follow({ baseUrl: "/gw", onClosed: () => (closed += 1) });
  assert.equal(source.url, "/gw/auth/session/events");
  source.fail(FakeEventSource.CONNECTING);
  assert.equal(closed, 0);
  source.fail(FakeEventSource.CLOSED);
  assert.equal(closed, 1);

  const second = follow();
  second.stop();
  assert.equal(second.source.readyState, FakeEventSource.CLOSED);
  assert.equal(stop instanceof Function, true);
});
