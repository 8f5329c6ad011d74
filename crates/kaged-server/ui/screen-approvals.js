// The Approvals screen (`#/approvals`, and `#/approvals/ID` from a notification's link): the
// pending approvals of every project, newest first, one card each (approval-card.js), kept live
// from the page's PendingApprovals (approvals.js). A card decided here or anywhere else shows
// its outcome for a few seconds, then leaves the list. "Notify me on this device" turns the
// browser's notifications on (notifications.js).

import { ApprovalCard } from "./approval-card.js";
import { announce, errorPanel, fill, h } from "./dom.js";
import {
  disableNotifications,
  enableNotifications,
  notificationState,
} from "./notifications.js";

/** How long a decided card stays, showing its outcome, before it leaves the list. */
const RESOLVED_MS = 5000;
/** How often the ages (`asked 2 min ago`) are redrawn. */
const TICK_MS = 15000;

const NOTIFY_TEXT = {
  unsupported: "This browser cannot show notifications.",
  insecure:
    "Browsers show notifications only to pages opened over HTTPS or on localhost; this one is neither.",
  blocked:
    "Notifications are blocked for this site: allow them in the browser's site settings, then reload.",
  on: "Notifications are on for this device: a new approval shows one while this page is hidden.",
  off: "",
};

/** The "Notify me on this device" control and what it says. */
function notifyControl() {
  const text = h("p", { class: "small muted", id: "notify-state", "aria-live": "polite" });
  const button = h("button", { type: "button", id: "notify-me" });
  const panel = h("div", { class: "notify" }, button, text);
  const render = () => {
    const state = notificationState();
    panel.dataset.state = state;
    text.textContent = NOTIFY_TEXT[state];
    button.hidden = state === "unsupported" || state === "insecure" || state === "blocked";
    button.textContent = state === "on" ? "Stop notifying this device" : "Notify me on this device";
  };
  button.addEventListener("click", async () => {
    if (notificationState() === "on") {
      disableNotifications();
      render();
      announce("Notifications off for this device");
      return;
    }
    button.disabled = true;
    try {
      const state = await enableNotifications();
      announce(state === "on" ? "Notifications on for this device" : NOTIFY_TEXT[state] || "");
    } finally {
      button.disabled = false;
      render();
    }
  });
  render();
  return panel;
}

export async function viewApprovals(ctx, view, main, focusId) {
  const store = ctx.approvals;
  const intro = h("p", {
    class: "lead",
    text: "Tool calls waiting for your decision, newest first, from every project.",
  });
  const count = h("p", { class: "muted small", id: "approvals-summary", "aria-live": "polite" });
  const problem = h("div", { id: "approvals-error" });
  const list = h("ul", { class: "approvals", id: "approval-list", "aria-label": "Approvals" });
  const empty = h("p", { class: "empty", id: "approvals-empty", text: "Nothing is waiting for you." });
  const single = h("div", { id: "approval-single" });
  main.append(
    h("h1", { text: "Approvals" }),
    intro,
    ctx.readOnly ? null : notifyControl(),
    single,
    problem,
    count,
    list,
    empty,
  );

  /** The cards shown, by approval id: `{card, li, leaving}`. */
  const shown = new Map();
  const newCard = (a) =>
    new ApprovalCard(a, {
      api: ctx.api,
      readOnly: ctx.readOnly,
      onDecided: (done, conflict) => {
        store.noteDecided(done);
        // A 409: what this page showed was out of date; list again.
        if (conflict) store.refresh();
      },
    });

  // `#/approvals/ID`: that one first, whatever its state (the notification's link).
  if (focusId) {
    try {
      const a = await ctx.api.call("GET", `api/v1/approvals/${encodeURIComponent(focusId)}`);
      if (!view.alive) return;
      const card = newCard(a);
      fill(single, card.el);
      shown.set(a.id, { card, li: null, leaving: false, pinned: true });
    } catch (e) {
      if (!view.alive) return;
      fill(single, errorPanel(e));
    }
  }

  const leave = (id) => {
    const entry = shown.get(id);
    if (!entry || !entry.li) return;
    shown.delete(id);
    const li = entry.li;
    if (li.contains(document.activeElement)) {
      // Keep the keyboard on the list: the next card's first button, or the heading.
      const next = li.nextElementSibling || li.previousElementSibling;
      const target = next && next.querySelector("button:not([disabled]), a[href]");
      if (target) target.focus();
      else main.querySelector("h1")?.focus();
    }
    li.remove();
    render();
  };

  const render = () => {
    if (!view.alive) return;
    if (store.error) fill(problem, errorPanel(store.error));
    else fill(problem);
    const pending = store.list();
    const ids = new Set(pending.map((a) => a.id));
    // Cards no longer pending: their outcome for a moment (when known), then gone.
    for (const [id, entry] of shown) {
      if (ids.has(id) || entry.leaving) continue;
      const decided = store.decided.get(id);
      if (entry.pinned) {
        if (decided) entry.card.resolve(decided);
        continue;
      }
      entry.leaving = true;
      if (decided) {
        entry.card.resolve(decided);
        const timer = setTimeout(() => leave(id), RESOLVED_MS);
        view.onDispose(() => clearTimeout(timer));
      } else {
        leave(id);
      }
    }
    for (const a of pending) {
      const entry = shown.get(a.id);
      if (entry && entry.pinned) continue;
      if (!entry) {
        const card = newCard(a);
        shown.set(a.id, { card, li: h("li", { class: "approval-item" }, card.el), leaving: false });
      }
    }
    // Newest first; a card in place is never moved (it may hold the focus or a typed message).
    const order = [...shown.values()]
      .filter((e) => e.li)
      .sort(
        (x, y) =>
          (y.card.approval.requested_at_ms || 0) - (x.card.approval.requested_at_ms || 0),
      );
    order.forEach((entry, i) => {
      if (list.children[i] !== entry.li) list.insertBefore(entry.li, list.children[i] || null);
    });
    const n = pending.length;
    count.textContent = store.loaded
      ? `${n} waiting${ctx.readOnly ? " (read-only: deciding is not possible here)" : ""}`
      : "Loading…";
    empty.hidden = !store.loaded || order.length > 0 || Boolean(store.error);
    list.hidden = order.length === 0;
  };

  view.onDispose(store.on(render));
  const ticker = setInterval(() => {
    for (const { card } of shown.values()) card.tick();
  }, TICK_MS);
  view.onDispose(() => clearInterval(ticker));
  render();
  await store.ready;
  if (view.alive) render();
}
