// A model agent's conversation drawn from its event log (docs/agent-protocol.md): the records
// `{seq, at_ms, parent_call_id?, event}` go into `Conversation.apply` one by one, in seq order,
// and the DOM follows: the operator's messages, the model's text as it streams in (drawn as
// Markdown, markdown.js), tool calls as collapsed <details> blocks (arguments, output, result),
// an approval card where a call waits for the operator (approval-card.js), usage, turn
// boundaries, errors. A subagent's records (`parent_call_id`) nest inside the parent's block.
//
// Rendering only: no timers, and no network except an approval card's buttons (when given an
// API client); the browser tests feed it recorded logs directly. Everything the model, a tool
// or the log says is text: it reaches the DOM only through textContent and Text nodes, never as
// HTML (Markdown is parsed into elements by markdown.js, which never parses HTML).

import { ApprovalCard } from "./approval-card.js";
import { h } from "./dom.js";
import { renderMarkdown } from "./markdown.js";

/** The longest argument summary shown on a collapsed tool call. */
const SUMMARY_CHARS = 80;

const END_REASONS = {
  end_turn: "the model finished",
  max_steps: "the agent's max_steps were used up",
  max_output_tokens: "the agent's max_output_tokens were used up",
  aborted: "aborted",
  error: "an error",
};

/** `text` cut to `max` characters, with an ellipsis when cut. */
function cut(text, max) {
  const s = String(text).replace(/\s+/g, " ").trim();
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** One line saying what a tool call is about: `path: README.md, offset: 3`. */
export function argumentSummary(args) {
  if (args === null || args === undefined) return "";
  if (typeof args !== "object") return cut(args, SUMMARY_CHARS);
  if (Array.isArray(args)) return cut(JSON.stringify(args), SUMMARY_CHARS);
  const parts = Object.entries(args).map(([key, value]) => {
    const shown = typeof value === "string" ? value : JSON.stringify(value);
    return `${key}: ${shown}`;
  });
  return cut(parts.join(", "), SUMMARY_CHARS);
}

/** Arguments pretty-printed (a string: what the model sent when it was not JSON). */
function prettyArguments(args) {
  if (typeof args === "string") return args;
  try {
    return JSON.stringify(args, null, 2);
  } catch {
    return String(args);
  }
}

function fmtCount(n) {
  return Number(n || 0).toLocaleString("en-US");
}

/** `cost` (the currency of the operator's prices) with enough digits for small amounts. */
export function fmtCost(cost) {
  if (typeof cost !== "number" || !Number.isFinite(cost)) return "";
  if (cost === 0) return "$0";
  return cost >= 0.01 ? `$${cost.toFixed(2)}` : `$${cost.toPrecision(2)}`;
}

/** Usage in words: `1,204 in · 38 out · 1,024 cached tokens · $0.0013`. */
export function usageText(u) {
  const parts = [`${fmtCount(u.input_tokens)} in`, `${fmtCount(u.output_tokens)} out`];
  let text = parts.join(" · ");
  text += u.cached_tokens ? ` · ${fmtCount(u.cached_tokens)} cached tokens` : " tokens";
  const cost = fmtCost(u.cost);
  return cost ? `${text} · ${cost}` : text;
}

/** A tool call's block: collapsed by default; its parts appear as the call goes on. */
class ToolBlock {
  constructor(callId, name, args, nested) {
    this.callId = callId;
    this.status = h("span", { class: "badge tool-status", text: "running" });
    this.truncated = h("span", { class: "badge tool-truncated", text: "truncated", hidden: true });
    this.outputText = document.createTextNode("");
    this.output = h("pre", { class: "tool-output" }, this.outputText);
    this.outputPart = h(
      "div",
      { class: "tool-part", hidden: true },
      h("p", { class: "label", text: "Output" }),
      this.output,
    );
    this.result = h("pre", { class: "tool-result" });
    this.resultPart = h(
      "div",
      { class: "tool-part", hidden: true },
      h("p", { class: "label" }, "Result ", this.truncated),
      this.result,
    );
    /** Where a subagent's records go (the agent this call runs). */
    this.nested = h("div", { class: "subagent", hidden: true });
    this.nestedPart = h(
      "div",
      { class: "tool-part", hidden: true },
      h("p", { class: "label", text: "Subagent" }),
      this.nested,
    );
    const summary = argumentSummary(args);
    this.el = h(
      "details",
      {
        class: `tool${nested ? " nested" : ""}`,
        dataset: { callId, tool: name, status: "running" },
      },
      h(
        "summary",
        {},
        h("span", { class: "tool-name", text: name }),
        summary ? h("span", { class: "tool-args", text: summary }) : null,
        this.status,
      ),
      h(
        "div",
        { class: "tool-body" },
        h(
          "div",
          { class: "tool-part" },
          h("p", { class: "label", text: "Arguments" }),
          h("pre", { class: "tool-arguments", text: prettyArguments(args) }),
        ),
        this.nestedPart,
        this.outputPart,
        this.resultPart,
      ),
    );
  }

  /** Running, or waiting for the operator's approval. */
  get running() {
    return this.el.dataset.status === "running" || this.el.dataset.status === "approval";
  }

  setStatus(status, label) {
    this.el.dataset.status = status;
    this.status.textContent = label;
    this.status.className = `badge tool-status tool-${status}`;
  }

  appendOutput(chunk) {
    this.outputPart.hidden = false;
    this.outputText.appendData(chunk);
  }

  finish(ok, content, truncated) {
    this.setStatus(ok ? "ok" : "error", ok ? "ok" : "error");
    this.resultPart.hidden = false;
    this.result.textContent = content;
    this.truncated.hidden = !truncated;
  }

  /** The turn ended with this call unanswered (aborted, or the daemon stopped). */
  abandon() {
    this.setStatus("cancelled", "no result");
  }

  nestHost() {
    this.nestedPart.hidden = false;
    this.nested.hidden = false;
    return this.nested;
  }
}

/**
 * One message: the operator's (plain text) or a model's (Markdown, drawn again whenever its text
 * changed: at once when it ends, else at the next `Conversation.flush`).
 */
class Message {
  constructor(el, body, markdown, dirty) {
    this.el = el;
    this.body = body;
    this.markdown = markdown;
    this.dirty = dirty;
    this.source = "";
    this.plain = document.createTextNode("");
    if (!markdown) body.append(this.plain);
  }

  append(chunk) {
    if (!chunk) return;
    this.source += chunk;
    if (this.markdown) this.dirty.add(this);
    else this.plain.appendData(chunk);
  }

  set(text) {
    if (text === this.source) return;
    this.source = text;
    if (this.markdown) this.dirty.add(this);
    else this.plain.data = text;
  }

  draw() {
    this.dirty.delete(this);
    if (this.markdown) renderMarkdown(this.body, this.source);
  }
}

/**
 * One agent's part of the log: the root conversation, or a subagent's inside its parent's call.
 * It knows the message being streamed and its calls still running.
 */
class Scope {
  constructor(host, nested, dirty) {
    this.host = host;
    this.nested = nested;
    this.dirty = dirty;
    this.message = null;
    this.turn = null;
    this.calls = [];
    /** The thought being streamed (its text element), if any. */
    this.thought = null;
    /** The plan shown last: a new one replaces it. */
    this.plan = null;
  }

  add(el) {
    this.host.append(el);
    return el;
  }

  startMessage(role) {
    this.endMessage();
    const user = role === "user";
    let who = this.nested ? "Subagent" : "Model";
    if (user) who = this.nested ? "Task" : "You";
    const body = h("div", { class: user ? "text" : "text md" });
    const el = this.add(
      h(
        "div",
        {
          class: `msg ${user ? "user" : "assistant"}`,
          dataset: { role, streaming: "true" },
        },
        h("p", { class: "who", text: who }),
        body,
      ),
    );
    this.message = new Message(el, body, !user, this.dirty);
    return this.message;
  }

  endMessage() {
    if (this.message) {
      delete this.message.el.dataset.streaming;
      this.message.draw();
    }
    this.message = null;
  }
}

export class Conversation {
  /**
   * `host`: the element the conversation is drawn in (emptied). `options.api` (an ApiClient)
   * gives approval cards their buttons (none without it, or with `options.readOnly`).
   */
  constructor(host, options = {}) {
    this.host = host;
    this.options = options;
    this.reset();
  }

  /** Start over with an empty log. */
  reset() {
    this.host.replaceChildren();
    this.lastSeq = 0;
    /** Model messages whose text changed since they were last drawn. */
    this.dirty = new Set();
    this.root = new Scope(this.host, false, this.dirty);
    /** Approval cards by approval id, and the <details> opened to show a pending one. */
    this.approvals = new Map();
    this.opened = new Map();
    /** Scopes of subagents, by the parent's call id. */
    this.scopes = new Map();
    /** Tool-call blocks by call id (a subagent's calls too). */
    this.calls = new Map();
    /** The root agent's turn in progress (its number), or null. */
    this.turn = null;
    this.totals = { input_tokens: 0, output_tokens: 0, cached_tokens: 0, cost: null, calls: 0 };
  }

  /** Whether a turn of the root agent is running (started and not ended). */
  get running() {
    return this.turn !== null;
  }

  /** How many approvals shown wait for a decision. */
  get waiting() {
    let n = 0;
    for (const card of this.approvals.values()) if (card.pending) n += 1;
    return n;
  }

  /** Draw the Markdown of the messages still streaming (once a frame is enough). */
  flush() {
    for (const message of [...this.dirty]) message.draw();
  }

  scopeFor(parentCallId) {
    if (!parentCallId) return this.root;
    let scope = this.scopes.get(parentCallId);
    if (scope) return scope;
    let block = this.calls.get(parentCallId);
    if (!block) {
      // The parent's call is not in what we have (cannot happen with a whole log): show the
      // subagent's records in a block of their own rather than losing them.
      block = new ToolBlock(parentCallId, "subagent", null, false);
      this.calls.set(parentCallId, block);
      this.root.add(block.el);
    }
    scope = new Scope(block.nestHost(), true, this.dirty);
    this.scopes.set(parentCallId, scope);
    return scope;
  }

  /** A tool call's block, made up if the log does not have the call (never with a whole log). */
  block(scope, callId) {
    let block = this.calls.get(callId);
    if (!block) {
      block = new ToolBlock(callId, "tool", null, scope.nested);
      this.calls.set(callId, block);
      scope.calls.push(block);
      scope.add(block.el);
    }
    return block;
  }

  /** A call waits for the operator: its card, where the turn paused. */
  approvalRequested(scope, event, at) {
    const id = event.approval_id;
    if (typeof id !== "string" || this.approvals.has(id)) return;
    const block = this.calls.get(event.call_id);
    if (block && block.running) block.setStatus("approval", "waiting for approval");
    const card = new ApprovalCard(
      {
        id,
        tool: event.tool || (block && block.el.dataset.tool) || "tool",
        arguments: event.arguments,
        call_id: event.call_id,
        state: "pending",
        requested_at_ms: at,
      },
      { api: this.options.api || null, readOnly: this.options.readOnly, inline: true },
    );
    this.approvals.set(id, card);
    scope.add(card.el);
    // A subagent's call: open the blocks around it so the card is seen.
    const opened = [];
    for (let d = card.el.parentElement?.closest("details"); d; ) {
      if (!d.open) {
        d.open = true;
        opened.push(d);
      }
      d = d.parentElement?.closest("details");
    }
    if (opened.length) this.opened.set(id, opened);
  }

  /** The decision: the card becomes a line saying it; an approved call runs on. */
  approvalDecided(scope, event) {
    const id = event.approval_id;
    const decided = {
      state: event.state,
      decision: event.decision ?? null,
      message: event.message ?? null,
      decided_by: event.decided_by ?? null,
      reason: event.reason ?? null,
    };
    let card = this.approvals.get(id);
    if (!card) {
      // The request is not in what we were given: the outcome alone.
      card = new ApprovalCard(
        { id, tool: "tool", call_id: event.call_id, ...decided },
        { inline: true },
      );
      this.approvals.set(id, card);
      scope.add(card.el);
    }
    card.resolve(decided);
    for (const d of this.opened.get(id) || []) d.open = false;
    this.opened.delete(id);
    const block = this.calls.get(event.call_id);
    if (block && block.el.dataset.status === "approval") {
      block.setStatus("running", event.state === "approved" ? "running" : event.state);
    }
  }

  /**
   * Draw one record. Records at or below the last seq drawn are ignored (a reconnect never
   * shows anything twice); returns whether the record was drawn.
   */
  apply(record) {
    if (!record || typeof record.seq !== "number" || record.seq <= this.lastSeq) return false;
    this.lastSeq = record.seq;
    const event = record.event || {};
    const scope = this.scopeFor(record.parent_call_id);
    const at = record.at_ms;
    if (event.type !== "thought_delta") scope.thought = null;
    switch (event.type) {
      case "user_message": {
        const m = scope.startMessage("user");
        m.append(event.text || "");
        scope.endMessage();
        break;
      }
      case "turn_started":
        scope.endMessage();
        scope.turn = event.turn;
        if (scope === this.root) this.turn = event.turn;
        scope.add(
          h("p", {
            class: "turn-mark",
            dataset: { turn: event.turn },
            text: `${scope.nested ? "Subagent turn" : "Turn"} ${event.turn}`,
            title: at ? new Date(at).toLocaleString() : undefined,
          }),
        );
        break;
      case "message_started":
        scope.startMessage(event.role === "user" ? "user" : "assistant");
        break;
      case "text_delta":
        (scope.message || scope.startMessage("assistant")).append(event.text || "");
        break;
      case "message_completed": {
        const m = scope.message || scope.startMessage("assistant");
        // The whole text is the reference: the deltas of a message that began before what we
        // were given are not missing from it.
        if (typeof event.text === "string") m.set(event.text);
        scope.endMessage();
        break;
      }
      case "tool_call": {
        scope.endMessage();
        const block = new ToolBlock(event.call_id, event.name, event.arguments, scope.nested);
        this.calls.set(event.call_id, block);
        scope.calls.push(block);
        scope.add(block.el);
        break;
      }
      case "tool_output":
        this.block(scope, event.call_id).appendOutput(event.chunk || "");
        break;
      case "tool_result": {
        const block = this.block(scope, event.call_id);
        block.finish(event.ok === true, event.content || "", event.truncated === true);
        scope.calls = scope.calls.filter((b) => b !== block);
        break;
      }
      case "usage":
        scope.endMessage();
        this.totals.input_tokens += event.input_tokens || 0;
        this.totals.output_tokens += event.output_tokens || 0;
        this.totals.cached_tokens += event.cached_tokens || 0;
        this.totals.calls += 1;
        if (typeof event.cost === "number") this.totals.cost = (this.totals.cost || 0) + event.cost;
        scope.add(h("p", { class: "usage", text: usageText(event) }));
        break;
      case "turn_ended": {
        scope.endMessage();
        for (const block of scope.calls) if (block.running) block.abandon();
        scope.calls = [];
        const reason = event.reason || "end_turn";
        const turn = scope.turn;
        scope.turn = null;
        if (scope === this.root) this.turn = null;
        scope.add(
          h("p", {
            class: `turn-end reason-${reason}`,
            dataset: { reason },
            text: `${turn ? `Turn ${turn}` : "Turn"} ended: ${END_REASONS[reason] || reason}`,
          }),
        );
        break;
      }
      case "thought_delta": {
        // An agent's reasoning (ACP thought chunks): plain text, folded away.
        scope.endMessage();
        if (!scope.thought) {
          const text = h("pre", { class: "thought-text" });
          scope.add(h("details", { class: "thought" }, h("summary", { text: "Thinking" }), text));
          scope.thought = text;
        }
        scope.thought.append(event.text || "");
        break;
      }
      case "plan": {
        scope.endMessage();
        const entries = Array.isArray(event.entries) ? event.entries : [];
        const el = h(
          "div",
          { class: "plan" },
          h("p", { class: "who", text: "Plan" }),
          h(
            "ol",
            {},
            ...entries.map((e) =>
              h("li", {
                class: `plan-${String(e.status || "pending").replace(/[^a-z_]/g, "")}`,
                dataset: { status: e.status || "pending" },
                text: `${e.content || ""}${e.status ? ` (${String(e.status).replace("_", " ")})` : ""}`,
              }),
            ),
          ),
        );
        if (scope.plan) scope.plan.remove();
        scope.plan = scope.add(el);
        break;
      }
      case "approval_requested":
        scope.endMessage();
        this.approvalRequested(scope, event, at);
        break;
      case "approval_decided":
        this.approvalDecided(scope, event);
        break;
      case "error":
        scope.endMessage();
        scope.add(
          h(
            "div",
            { class: "notice error agent-error", dataset: { code: event.code || "" } },
            h("strong", { text: `${event.code || "error"}: ` }),
            event.message || "",
          ),
        );
        break;
      default:
        // A type a newer daemon added: ignored, as the protocol asks.
        return true;
    }
    return true;
  }
}

/** The operator's message box: Enter sends, Shift+Enter is a new line. */
export function isSendKey(e) {
  return e.key === "Enter" && !e.shiftKey && !e.altKey && !e.isComposing;
}
