// The body of a conversation's session screen (`#/sessions/ID` of a model agent): its event
// log drawn live (`Conversation` on `AgentEvents`), the message box (Enter sends, Shift+Enter is
// a new line) and Abort, which ends the turn in flight (the session keeps running; the
// session's kill is the header's End). Sending to an ended conversation resumes it (the server
// starts a new cage); the screen says so until it runs again.

import { AgentEvents, readLog } from "./agent-events.js";
import { Conversation, isSendKey, usageText } from "./conversation.js";
import { announce, errorPanel, fill, h } from "./dom.js";
import { endedText, isLive } from "./screen-sessions.js";

/** How close to the bottom (px) still counts as following the conversation. */
const STICK_PX = 48;

/**
 * Draw the conversation of `session` in `host`; returns `update(session)`, which the session
 * screen calls whenever the session's state changes.
 */
export function mountConversation(ctx, view, host, session, status) {
  const { api } = ctx;
  const id = session.id;
  const mountedAt = Date.now();
  const log = h("div", { class: "conversation-log", id: "conversation-log" });
  const pendingHost = h("div", { class: "pending", id: "pending-messages" });
  const scroller = h(
    "section",
    {
      class: "conversation",
      id: "conversation",
      role: "log",
      "aria-live": "off",
      "aria-label": "Conversation",
      tabindex: "0",
    },
    log,
    pendingHost,
  );
  const totals = h("p", { class: "conversation-usage small muted", id: "conversation-usage" });
  const turnState = h("span", { class: "turn-state", id: "turn-state", "aria-live": "polite" });
  const note = h("div", { class: "composer-note", id: "composer-note", "aria-live": "polite" });
  const problem = h("div", { id: "composer-error" });
  const box = h("textarea", {
    id: "message",
    rows: "2",
    placeholder: "Message the agent (Enter sends, Shift+Enter: new line)",
    autocomplete: "off",
  });
  const send = h("button", { type: "submit", class: "primary", id: "send", text: "Send" });
  const abort = h("button", {
    type: "button",
    class: "danger",
    id: "abort-turn",
    text: "Abort",
    "aria-label": "Abort the turn in flight",
    disabled: true,
  });
  const form = h(
    "form",
    { class: "composer", id: "composer", "aria-label": "Message" },
    note,
    problem,
    h("label", { class: "visually-hidden", for: "message", text: "Message to the agent" }),
    box,
    h("div", { class: "composer-actions" }, turnState, abort, send),
  );
  host.append(scroller, totals, form);

  const conversation = new Conversation(log, { api, readOnly: ctx.readOnly });
  /** Messages sent and not yet taken by the agent (no `user_message` record yet). */
  let pending = [];
  /** The operator's messages taken while a send was in flight (its answer may come after). */
  let takenDuringSend = [];
  let resuming = false;
  let sending = false;

  const nearBottom = () =>
    scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight <= STICK_PX;
  let stick = true;
  let frame = null;

  const renderState = () => {
    const ended = !isLive(session.state);
    if (resuming && session.state === "running") resuming = false;
    const running = conversation.running;
    let state;
    if (ended && !resuming) state = "ended";
    else if (resuming || session.state === "queued" || session.state === "starting") {
      state = "starting";
    } else if (running) state = "running";
    else state = "idle";
    document.body.dataset.conversation = state;
    const turn = conversation.turn;
    const waiting = conversation.waiting;
    turnState.textContent = {
      ended: "Ended",
      starting: resuming ? "Resuming…" : "Starting…",
      running: waiting
        ? `Turn ${turn}: waiting for your approval`
        : `Turn ${turn} running…`,
      idle: "Waiting for your message",
    }[state];
    turnState.dataset.waiting = waiting ? "approval" : "";
    turnState.dataset.state = state;
    if (document.activeElement === abort && !running) box.focus();
    abort.disabled = !running;
    send.disabled = sending || ctx.readOnly;
    if (state === "ended") {
      const why = endedText(session);
      const text =
        "The conversation has ended; a message resumes it (a new cage, the whole history).";
      const line = why ? `${why}. ${text}` : text;
      fill(note, h("p", { class: "notice", id: "ended-note", text: line }));
      box.placeholder = "Message to resume the conversation";
    } else if (resuming) {
      const text = "Resuming: starting a new cage…";
      fill(note, h("p", { class: "notice", id: "resuming-note", text }));
    } else if (note.querySelector("#ended-note, #resuming-note")) {
      fill(note);
      box.placeholder = "Message the agent (Enter sends, Shift+Enter: new line)";
    }
    const t = conversation.totals;
    totals.textContent = t.calls
      ? `${t.calls} model call${t.calls === 1 ? "" : "s"}: ${usageText(t)}`
      : "";
  };

  const draw = () => {
    frame = null;
    if (!view.alive) return;
    conversation.flush();
    if (stick) scroller.scrollTop = scroller.scrollHeight;
    renderState();
  };
  const later = () => {
    if (frame) return;
    stick = nearBottom();
    frame = requestAnimationFrame(draw);
  };
  view.onDispose(() => {
    if (frame) cancelAnimationFrame(frame);
    delete document.body.dataset.conversation;
  });
  // The ages on approval cards (`asked 2 min ago`).
  const ticker = setInterval(() => {
    for (const card of conversation.approvals.values()) if (card.pending) card.tick();
  }, 15000);
  view.onDispose(() => clearInterval(ticker));

  const onRecord = (record) => {
    if (!view.alive) return;
    later();
    if (!conversation.apply(record)) return;
    const event = record.event || {};
    if (record.parent_call_id) return;
    if (event.type === "user_message") {
      const i = pending.findIndex((p) => p.text === event.text);
      if (i >= 0) {
        pending[i].el.remove();
        pending.splice(i, 1);
        // Taken: "Queued" no longer holds.
        if (pending.length === 0) note.querySelector("#queued-note")?.remove();
      } else if (sending) {
        takenDuringSend.push(event.text);
      }
    }
    // Say what happened now, not what the replay of older records draws.
    if (record.at_ms >= mountedAt - 1000) {
      if (event.type === "turn_ended") announce(`Turn ended: ${event.reason}`);
      if (event.type === "error") announce(`Error: ${event.code}: ${event.message}`);
      if (event.type === "approval_requested") announce(`Approval needed: ${event.tool}`);
    }
  };

  const setStatus = (kind, text) => {
    status.textContent = text;
    status.dataset.kind = kind;
  };

  if (ctx.readOnly) {
    form.hidden = true;
    setStatus("transcript", "read-only: the conversation so far");
    readLog(api, id, 0, onRecord, () => view.alive).catch((e) => {
      if (view.alive) fill(problem, errorPanel(e));
      form.hidden = false;
    });
  } else {
    const events = new AgentEvents(id, api, {
      lastSeq: () => conversation.lastSeq,
      onRecord,
      onReset: () => conversation.reset(),
      onStatus: setStatus,
    });
    view.onDispose(() => events.dispose());
    const nudge = () => events.nudge();
    window.addEventListener("online", nudge);
    document.addEventListener("visibilitychange", nudge);
    view.onDispose(() => {
      window.removeEventListener("online", nudge);
      document.removeEventListener("visibilitychange", nudge);
    });
    events.connect();
  }

  const submit = async () => {
    const text = box.value;
    if (!text.trim() || sending) return;
    sending = true;
    takenDuringSend = [];
    fill(problem);
    renderState();
    try {
      const res = await api.call("POST", `api/v1/sessions/${id}/messages`, { text });
      if (!view.alive) return;
      box.value = "";
      const taken = takenDuringSend.indexOf(text);
      if (taken >= 0) takenDuringSend.splice(taken, 1);
      const el = h(
        "div",
        { class: "msg user pending", dataset: { role: "user" } },
        h("p", { class: "who", text: "You (sent, not taken yet)" }),
        h("div", { class: "text", text }),
      );
      // Shown as waiting, unless the agent took it before this answer came.
      if (taken < 0) {
        pending.push({ text, el });
        pendingHost.append(el);
      }
      stick = true;
      if (res && res.resumed) {
        resuming = true;
        announce("Sent; resuming the conversation");
      } else if (conversation.running) {
        const queued = "Queued: the agent takes it at its next model call.";
        fill(note, h("p", { class: "muted small", id: "queued-note", text: queued }));
        announce("Sent; queued for the next model call");
      } else {
        fill(note);
        announce("Sent");
      }
    } catch (e) {
      if (view.alive) fill(problem, errorPanel(e));
    } finally {
      sending = false;
      if (view.alive) {
        renderState();
        later();
      }
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    submit();
  });
  box.addEventListener("keydown", (e) => {
    if (!isSendKey(e)) return;
    e.preventDefault();
    submit();
  });
  abort.addEventListener("click", async () => {
    abort.disabled = true;
    fill(problem);
    try {
      const res = await api.call("POST", `api/v1/sessions/${id}/abort`);
      if (!view.alive) return;
      announce(res && res.aborted ? "Turn aborted" : "No turn was running");
    } catch (e) {
      if (view.alive) fill(problem, errorPanel(e));
    } finally {
      if (view.alive) renderState();
    }
  });

  renderState();
  // Ready to type at once, except on touch screens (focus would pop the keyboard up over it).
  if (!ctx.readOnly && !window.matchMedia("(pointer: coarse)").matches) box.focus();

  return (next) => {
    session = next;
    renderState();
  };
}
