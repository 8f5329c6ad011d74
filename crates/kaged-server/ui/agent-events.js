// A model agent's event log, live: the WebSocket `api/v1/sessions/ID/events?after=SEQ`
// (docs/agent-protocol.md). Each server frame is one JSON record; the caller says which seq it
// has drawn last (`lastSeq()`), and every (re)connection asks for what comes after it, so a
// drop loses nothing and shows nothing twice. The socket is opened exactly like the PTY's
// (`wsUrl`, the page's cookie and Origin: the same checks on the server, no second sign-in).
//
// Close codes: 4000 (this client fell behind) → reconnect at once; 1008 for a revoked token →
// stop; 1008 "past the last event" → the log is not the one drawn: start over from 0; anything
// else (network, 1001 kaged stopping) → reconnect with back-off.

import { wsUrl } from "./api.js";

const TOO_SLOW = 4000;
const POLICY = 1008;

export class AgentEvents {
  /**
   * `api`: the ApiClient (to recheck sign-in when reconnecting keeps failing); `hooks`:
   * `lastSeq()`, `onRecord(record)`, `onReset()` (draw from scratch), `onStatus(kind, text)`.
   */
  constructor(id, api, hooks) {
    this.id = id;
    this.api = api;
    this.hooks = hooks;
    this.ws = null;
    this.timer = null;
    this.failures = 0;
    this.closed = false;
    this.stopped = false;
    this.resets = 0;
  }

  connect() {
    if (this.closed || this.stopped || this.ws) return;
    clearTimeout(this.timer);
    this.timer = null;
    const after = this.hooks.lastSeq();
    const ws = new WebSocket(wsUrl(`api/v1/sessions/${this.id}/events?after=${after}`));
    this.ws = ws;
    this.hooks.onStatus("connecting", this.failures ? "reconnecting…" : "connecting…");
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.failures = 0;
      this.hooks.onStatus("live", "connected");
    };
    ws.onmessage = (m) => {
      if (ws !== this.ws || typeof m.data !== "string") return;
      let record;
      try {
        record = JSON.parse(m.data);
      } catch {
        return;
      }
      this.hooks.onRecord(record);
    };
    ws.onclose = (e) => {
      if (ws !== this.ws) return;
      this.onClose(e);
    };
  }

  onClose(e) {
    this.ws = null;
    if (this.closed) return;
    if (e.code === TOO_SLOW) {
      // We fell behind: the server says to come back from our last seq, now.
      this.connect();
      return;
    }
    if (e.code === POLICY) {
      if (/revoked/.test(e.reason || "")) {
        this.stopped = true;
        this.hooks.onStatus("down", "disconnected: the credential was revoked");
        return;
      }
      if (/past the last event/.test(e.reason || "") && this.resets < 1) {
        // What is drawn is not this session's log (cannot happen): draw it again from 0.
        this.resets += 1;
        this.hooks.onReset();
        this.connect();
        return;
      }
      this.stopped = true;
      this.hooks.onStatus("down", `disconnected: ${e.reason || "refused"}`);
      return;
    }
    this.failures += 1;
    // A refused upgrade looks like any other drop: ask whether we are still signed in.
    if (this.failures >= 2) this.api.recheck();
    const delay = Math.min(5000, 250 * 2 ** Math.min(this.failures - 1, 5));
    this.hooks.onStatus(
      "reconnecting",
      e.code === 1001
        ? "kaged is stopping; reconnecting…"
        : `connection lost (${e.code}${e.reason ? `: ${e.reason}` : ""}); reconnecting…`,
    );
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, delay);
  }

  /** Reconnect now (network back, tab visible again). */
  nudge() {
    if (!this.ws && !this.closed && !this.stopped) this.connect();
  }

  dispose() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
  }
}

/**
 * The whole log over plain HTTP (`api/v1/sessions/ID/conversation`), page by page from
 * `after`: for read-only access, where no WebSocket is served. Calls `onRecord` for each.
 */
export async function readLog(api, id, after, onRecord, alive) {
  let from = after;
  for (;;) {
    const page = await api.call("GET", `api/v1/sessions/${id}/conversation?after=${from}`);
    if (!alive()) return;
    const events = (page && page.events) || [];
    for (const record of events) onRecord(record);
    if (events.length === 0) return;
    from = events[events.length - 1].seq;
    if (from >= page.last_seq) return;
  }
}
