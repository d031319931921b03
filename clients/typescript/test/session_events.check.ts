// Checked by `tsc --noEmit` (make lint), never run: each event of the session's stream is typed
// by its name. Each @ts-expect-error fails the check if the line below it stops being an error.
import { type SessionEndReason, sessionEvents } from "../src/index.js";

export function typed(): void {
  const stop = sessionEvents((event) => {
    if (event.event === "ended") {
      const reason: SessionEndReason = event.data.reason;
      // @ts-expect-error: an ended session has no expiry
      void event.data.expiresAt;
      void reason;
    } else {
      const expiresAt: string = event.data.expiresAt;
      // @ts-expect-error: only an ended session says why
      void event.data.reason;
      void expiresAt;
    }
  });
  // @ts-expect-error: no such reason
  const wrong: SessionEndReason = "logged-out";
  void [stop, wrong];
}
