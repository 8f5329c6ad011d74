// The pending approvals of every project, kept live for the whole page: listed with
// `GET api/v1/approvals?state=pending` at start and at every (re)connection of the events
// stream (its approval messages are live only, never replayed), then followed through its
// `approval.requested` and `approval.decided` messages. The nav badge, the page title, the
// Approvals screen and the browser notifications all read it.

/** The most approvals one listing asks for (the API's maximum). */
const LIST_LIMIT = 1000;
/** How many decided approvals are remembered (a late listing must not bring one back). */
const DECIDED_KEPT = 500;

export class PendingApprovals {
  /** `api`: the ApiClient; `events`: the EventStream (null: no live updates, read-only). */
  constructor(api, events) {
    this.api = api;
    this.events = events;
    /** Pending approvals by id. */
    this.pending = new Map();
    /** Approvals seen decided, by id (the newest last). */
    this.decided = new Map();
    this.listeners = new Set();
    /** Ids added by the stream while a listing was in flight. */
    this.addedDuring = null;
    this.generation = 0;
    this.error = null;
    this.loaded = false;
    this.ready = new Promise((resolve) => {
      this.markReady = resolve;
    });
  }

  start() {
    if (this.events) {
      this.events.on((e) => this.onEvent(e));
    }
    this.refresh();
  }

  /** `fn(change)` on every change: `{kind: "requested"|"decided"|"listed", approval?, live?}`. */
  on(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  emit(change) {
    for (const fn of [...this.listeners]) {
      try {
        fn(change);
      } catch (e) {
        console.error(e);
      }
    }
  }

  get count() {
    return this.pending.size;
  }

  /** Pending approvals, newest first. */
  list() {
    return [...this.pending.values()].sort(
      (a, b) => (b.requested_at_ms || 0) - (a.requested_at_ms || 0) || (a.id < b.id ? 1 : -1),
    );
  }

  onEvent(e) {
    if (e.type === "connected") {
      this.refresh();
      return;
    }
    const a = e.approval;
    if (!a || typeof a.id !== "string") return;
    if (e.type === "approval.requested") {
      if (this.decided.has(a.id) || a.state !== "pending") return;
      const fresh = !this.pending.has(a.id);
      this.pending.set(a.id, a);
      if (this.addedDuring) this.addedDuring.add(a.id);
      this.emit({ kind: "requested", approval: a, live: fresh });
    } else if (e.type === "approval.decided") {
      this.noteDecided(a);
    }
  }

  /** `a` is decided (a stream message, or this page's own decision). */
  noteDecided(a) {
    if (!a || !a.id || a.state === "pending") return;
    this.decided.delete(a.id);
    this.decided.set(a.id, a);
    while (this.decided.size > DECIDED_KEPT) {
      this.decided.delete(this.decided.keys().next().value);
    }
    this.pending.delete(a.id);
    this.emit({ kind: "decided", approval: a });
  }

  /** List the pending approvals again; what the stream said meanwhile is kept. */
  async refresh() {
    const generation = ++this.generation;
    const added = new Set();
    this.addedDuring = added;
    let body;
    try {
      body = await this.api.call("GET", `api/v1/approvals?state=pending&limit=${LIST_LIMIT}`);
    } catch (e) {
      if (generation !== this.generation) return;
      this.addedDuring = null;
      this.error = e;
      this.loaded = true;
      this.markReady();
      this.emit({ kind: "listed" });
      return;
    }
    if (generation !== this.generation) return;
    this.addedDuring = null;
    this.error = null;
    const next = new Map();
    for (const a of (body && body.approvals) || []) {
      if (a && a.state === "pending" && !this.decided.has(a.id)) next.set(a.id, a);
    }
    for (const id of added) {
      if (this.pending.has(id)) next.set(id, this.pending.get(id));
    }
    this.pending = next;
    this.loaded = true;
    this.markReady();
    this.emit({ kind: "listed" });
  }
}
