// The events WebSocket (`api/v1/events`): session state changes, live. Reconnects with
// back-off and resumes after the last event seen; after a gap it tells listeners
// `{type: "reconnected"}` so views re-read what they show. Every connection (the first too) is
// `{type: "connected"}`: messages that are live only (approvals) are listed again then.

import { wsUrl } from "./api.js";

export class EventStream {
  /** `api`: the ApiClient, to ask whether we are still signed in when the stream keeps failing. */
  constructor(api) {
    this.api = api;
    this.cursor = null;
    this.listeners = new Set();
    this.failures = 0;
    this.ws = null;
    this.timer = null;
    this.stopped = false;
    this.everConnected = false;
  }

  on(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(event) {
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch (e) {
        console.error(e);
      }
    }
  }

  start() {
    if (this.stopped || this.ws) return;
    const since = this.cursor != null ? `?since=${encodeURIComponent(this.cursor)}` : "";
    const ws = new WebSocket(wsUrl(`api/v1/events${since}`));
    this.ws = ws;
    ws.onmessage = (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (event.type === "hello") {
        const again = this.everConnected;
        this.everConnected = true;
        this.failures = 0;
        document.body.dataset.events = "live";
        // Every connection: what is not replayed (approvals) is listed again.
        this.emit({ type: "connected" });
        // After a gap, views re-read what they show (the replay covers transitions only).
        if (again) this.emit({ type: "reconnected" });
        return;
      }
      if (typeof event.cursor === "number") this.cursor = event.cursor;
      this.emit(event);
    };
    ws.onclose = () => {
      this.ws = null;
      document.body.dataset.events = "down";
      if (this.stopped) return;
      this.failures += 1;
      // A refused upgrade looks like any other drop: ask whether we are still signed in.
      if (this.failures >= 2) this.api.recheck();
      const delay = Math.min(10000, 500 * 2 ** Math.min(this.failures, 5));
      this.timer = setTimeout(() => {
        this.timer = null;
        this.start();
      }, delay);
    };
  }

  /** Reconnect now (the network came back, the tab became visible). */
  nudge() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.timer);
    this.timer = null;
    this.start();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
  }
}
