// One approval (a tool call waiting for the operator) as a card: the tool, its arguments (a
// shell command shown whole; other long values folded), who asks and where, how long ago, and
// Approve / Approve for session / Deny (with an optional message for the model). The Approvals
// screen and the conversation view both draw it; once decided it says who decided what.
//
// Arguments, messages and reasons are text from the model or other operators: they reach the
// DOM only through textContent.

import { ago, announce, errorPanel, fill, h } from "./dom.js";

/** A string value longer than this (or with a line break) is folded behind <details>. */
const FOLD_CHARS = 160;

/** `apr_…` ids become element ids; anything else is reduced to what an id may hold. */
function idPart(id) {
  return String(id).replace(/[^A-Za-z0-9_-]/g, "_");
}

/** What the decision was, in words: `Approved by user:root`, `Denied by kaged: …`. */
export function resolvedText(a) {
  const who = a.decided_by || "someone";
  let text;
  if (a.state === "approved") {
    text =
      a.decision === "approve_session"
        ? `Approved for the rest of this session by ${who}`
        : `Approved by ${who}`;
  } else if (a.state === "denied") {
    text = `Denied by ${who}`;
  } else if (a.state === "cancelled") {
    text = `Cancelled by ${who}`;
  } else {
    return "Waiting for a decision";
  }
  if (a.message) text += `, with the message: ${a.message}`;
  if (a.reason) text += ` (${a.reason})`;
  return text;
}

/** A value as text: strings as they are, the rest as indented JSON. */
function shown(value) {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2) ?? String(value);
  } catch {
    return String(value);
  }
}

/** One argument: short values on their line, long ones folded behind <details>. */
function field(name, value) {
  const text = shown(value);
  const long = text.length > FOLD_CHARS || text.includes("\n");
  if (!long) {
    return h(
      "div",
      { class: "approval-field", dataset: { arg: name } },
      h("span", { class: "approval-key", text: `${name}: ` }),
      h("code", { class: "approval-value", text }),
    );
  }
  const lines = text.split("\n").length;
  const size = lines > 1 ? `${lines} lines` : `${text.length} characters`;
  return h(
    "details",
    { class: "approval-field folded", dataset: { arg: name } },
    h("summary", {}, h("span", { class: "approval-key", text: name }), ` (${size})`),
    h("pre", { class: "approval-value", text }),
  );
}

/** The arguments of a call: `shell.bash`'s command whole in a monospace block, the rest fields. */
export function argumentsView(tool, args) {
  const box = h("div", { class: "approval-args" });
  if (args === null || args === undefined) return box;
  if (typeof args !== "object" || Array.isArray(args)) {
    box.append(field("arguments", args));
    return box;
  }
  const rest = { ...args };
  if (tool === "shell.bash" && typeof rest.command === "string") {
    box.append(
      h(
        "pre",
        { class: "approval-command", "aria-label": "Command" },
        h("code", { text: rest.command }),
      ),
    );
    delete rest.command;
  }
  for (const [name, value] of Object.entries(rest)) box.append(field(name, value));
  return box;
}

/** The first 8 characters of a session id, as the lists show it. */
function shortId(id) {
  return String(id || "").slice(0, 8);
}

/**
 * A card for `approval` (the API's Approval: at least `id`, `tool`, `arguments`, `state`).
 * Options: `api` (none: no buttons), `readOnly`, `inline` (in a conversation: no project or
 * session line; once decided the card becomes one line), `onDecided(approval, conflict)` (after
 * this card's decision; `conflict`: a 409 said it was decided elsewhere first).
 */
export class ApprovalCard {
  constructor(approval, { api = null, readOnly = false, inline = false, onDecided = null } = {}) {
    this.approval = approval;
    this.api = api;
    this.inline = inline;
    this.onDecided = onDecided;
    this.busy = false;
    const id = approval.id;
    const key = idPart(id);
    this.badge = h("span", { class: "badge approval-badge", text: "waiting" });
    this.age = h("time", { class: "approval-age", dataset: { at: approval.requested_at_ms || "" } });
    this.problem = h("div", { class: "approval-problem", "aria-live": "polite" });
    this.outcome = h("p", { class: "approval-outcome", hidden: true, "aria-live": "polite" });
    const meta = [];
    if (approval.agent) meta.push(`agent ${approval.agent}`);
    if (approval.parent_call_id) meta.push("(a subagent)");
    if (!inline && approval.project) meta.push(`project ${approval.project}`);
    const where = h("p", { class: "approval-meta" }, meta.join(" · "));
    if (!inline && approval.session_id) {
      where.append(
        meta.length ? " · " : "",
        h("a", {
          href: `#/sessions/${approval.session_id}`,
          class: "approval-session",
          text: `session ${shortId(approval.session_id)}`,
        }),
      );
    }
    where.append(meta.length || !inline ? " · " : "", this.age);
    const titleId = `approval-title-${key}`;

    this.buttons = [];
    const button = (decision, label, cls, aria) => {
      const b = h("button", {
        type: "button",
        class: cls,
        text: label,
        "aria-label": aria,
        dataset: { decision },
      });
      this.buttons.push(b);
      return b;
    };
    const approve = button("approve", "Approve", "primary", `Approve ${approval.tool} once`);
    const session = button(
      "approve_session",
      "Approve for session",
      "",
      `Approve ${approval.tool} for the rest of this session`,
    );
    const deny = button("deny", "Deny…", "danger", `Deny ${approval.tool}`);
    this.actions = h("div", { class: "approval-actions" }, approve, session, deny);
    const messageId = `deny-message-${key}`;
    this.message = h("textarea", {
      id: messageId,
      rows: "2",
      maxlength: "4096",
      placeholder: "Why not, or what to do instead",
    });
    const confirm = button("deny-confirm", "Deny", "danger", `Deny ${approval.tool} now`);
    const cancel = h("button", { type: "button", text: "Cancel", class: "quiet" });
    this.buttons.push(cancel);
    this.denyForm = h(
      "form",
      { class: "approval-deny", hidden: true },
      h("label", { for: messageId, text: "Message to the model (optional)" }),
      this.message,
      h("div", { class: "approval-actions" }, confirm, cancel),
    );
    const interactive = api && !readOnly;
    if (!interactive) {
      this.actions.hidden = true;
    }

    this.el = h(
      "article",
      {
        class: `approval${inline ? " inline" : ""}`,
        dataset: { approval: id, state: approval.state || "pending", tool: approval.tool },
        "aria-labelledby": titleId,
      },
      h(
        "header",
        { class: "approval-head" },
        h(
          inline ? "h3" : "h2",
          { class: "approval-title", id: titleId },
          h("span", { class: "visually-hidden", text: "Approval needed: " }),
          h("span", { class: "approval-tool", text: approval.tool }),
        ),
        this.badge,
      ),
      where,
      argumentsView(approval.tool, approval.arguments),
      this.actions,
      this.denyForm,
      this.problem,
      this.outcome,
    );

    approve.addEventListener("click", () => this.decide("approve"));
    session.addEventListener("click", () => this.decide("approve_session"));
    deny.addEventListener("click", () => {
      this.actions.hidden = true;
      this.denyForm.hidden = false;
      this.message.focus();
    });
    cancel.addEventListener("click", () => {
      this.denyForm.hidden = true;
      this.actions.hidden = false;
      deny.focus();
    });
    this.denyForm.addEventListener("submit", (e) => {
      e.preventDefault();
      this.decide("deny", this.message.value.trim());
    });
    confirm.type = "submit";
    this.tick();
    if (approval.state && approval.state !== "pending") this.resolve(approval);
  }

  /** Refresh the age (`12 s ago`). */
  tick() {
    const at = this.approval.requested_at_ms;
    this.age.textContent = at ? `asked ${ago(at)}` : "";
    if (at) this.age.dateTime = new Date(at).toISOString();
  }

  get pending() {
    return this.el.dataset.state === "pending";
  }

  setBusy(busy) {
    this.busy = busy;
    for (const b of this.buttons) b.disabled = busy;
    this.el.toggleAttribute("aria-busy", busy);
  }

  /** Send the decision; on a 409, say who decided first and show that. */
  async decide(decision, message) {
    if (this.busy || !this.pending || !this.api) return;
    this.setBusy(true);
    fill(this.problem);
    const body = { decision };
    if (decision === "deny" && message) body.message = message;
    const id = this.approval.id;
    try {
      const done = await this.api.call("POST", `api/v1/approvals/${encodeURIComponent(id)}`, body);
      this.resolve(done && done.state ? done : { ...this.approval, state: "approved", decision });
      announce(this.outcome.textContent);
      if (this.onDecided) this.onDecided(this.approval);
    } catch (e) {
      if (e.status !== 409) {
        this.setBusy(false);
        fill(this.problem, errorPanel(e));
        return;
      }
      let current = null;
      try {
        current = await this.api.call("GET", `api/v1/approvals/${encodeURIComponent(id)}`);
      } catch {
        current = null;
      }
      const by = current && current.decided_by;
      const line = by ? `Already decided by ${by}.` : `Already decided: ${e.message}`;
      fill(this.problem, h("p", { class: "notice error approval-conflict", text: line }));
      announce(line);
      if (current && current.state !== "pending") this.resolve(current);
      else this.setBusy(false);
      if (this.onDecided) this.onDecided(current || this.approval, true);
    }
  }

  /**
   * The approval was decided (`a`: an Approval, or an `approval_decided` event's fields):
   * the buttons go, the outcome is said. Inline, the card becomes one line.
   */
  resolve(a) {
    const merged = { ...this.approval, ...a, id: this.approval.id };
    this.approval = merged;
    const state = merged.state || "approved";
    this.el.dataset.state = state;
    this.badge.textContent = state;
    this.badge.className = `badge approval-badge approval-${state}`;
    this.actions.hidden = true;
    this.denyForm.hidden = true;
    this.setBusy(false);
    for (const b of this.buttons) b.disabled = true;
    this.outcome.hidden = false;
    this.outcome.textContent = resolvedText(merged);
    const had = this.el.contains(document.activeElement);
    if (!this.inline && had) {
      // The button pressed is gone: keep the keyboard's place on what it did.
      this.outcome.tabIndex = -1;
      this.outcome.focus();
    }
    if (this.inline) {
      const problem = this.problem.childNodes.length ? this.problem : null;
      fill(
        this.el,
        h(
          "p",
          { class: "approval-line" },
          h("span", { class: "approval-tool", text: merged.tool || "tool" }),
          " ",
          this.outcome,
        ),
        problem,
      );
      this.el.classList.add("resolved");
      if (had) this.el.closest("[tabindex]")?.focus();
    }
  }
}
