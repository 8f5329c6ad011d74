// A session's screen (`#/sessions/ID`): a live run's terminal on the PTY WebSocket with its
// keys and Abort, or an ended run's transcript in a read-only terminal; a model agent's
// conversation (screen-conversation.js) instead of a terminal; its state changes.

import { syncScriptStyles } from "./csp.js";
import { announce, errorPanel, factRows, fill, fmtBytes, fmtTime, fmtWhen, h } from "./dom.js";
import { PtyView } from "./pty.js";
import { mountConversation } from "./screen-conversation.js";
import { abortSession, endedText, isLive, sessionTitle, stateBadge } from "./screen-sessions.js";
import { clipboardButtons, keyButtons, newTerminal, termToolbar } from "./terminal.js";

export async function viewSession(ctx, view, main, id) {
  const { api } = ctx;
  const body = await api.call("GET", `api/v1/sessions/${id}`);
  if (!view.alive) return;
  let session = body.session;
  // A model agent's session has no terminal: its conversation takes the terminal's place.
  const conversation = session.conversation === true;
  let onSession = () => {};
  document.body.classList.add("session-page");
  view.onDispose(() => document.body.classList.remove("session-page"));

  const badgeHost = h("span", { id: "session-state", "aria-live": "polite" });
  const endedLine = h("p", { class: "ended-line", id: "session-ended", hidden: true });
  const status = h("span", { class: "conn", id: "conn", "aria-live": "polite" });
  const notice = h("div", { id: "session-notice" });
  const abort = h("button", {
    type: "button",
    class: "danger",
    id: conversation ? "end-session" : "abort",
    text: conversation ? "End" : "Abort",
    "aria-label": conversation
      ? "End this conversation now (a message resumes it)"
      : "Abort this run now",
  });
  const termHost = conversation
    ? h("div", { class: "conversation-host", id: "conversation-host" })
    : h("div", { class: "term", id: "terminal" });
  const tools = h("div", { class: "term-tools" });
  const history = h("ol", { class: "history" });

  const title = h("h1", {}, sessionTitle(session), " ", badgeHost);
  const render = () => {
    fill(badgeHost, stateBadge(session));
    const live = isLive(session.state);
    const hide = !live || session.state === "stopping";
    if (hide && document.activeElement === abort) {
      // Keep the keyboard's place when the button it was on goes away.
      title.setAttribute("tabindex", "-1");
      title.focus();
    }
    abort.hidden = hide;
    const why = endedText(session);
    endedLine.hidden = !why;
    endedLine.textContent = why;
    document.body.dataset.sessionState = session.state;
    onSession(session);
  };

  abort.addEventListener("click", async () => {
    abort.disabled = true;
    fill(notice);
    try {
      await abortSession(api, id);
      if (isLive(session.state)) {
        session = { ...session, state: "stopping", reason: ctx.who && ctx.who.id };
        render();
      }
    } catch (e) {
      fill(notice, errorPanel(e));
    } finally {
      abort.disabled = false;
    }
  });

  const meta = [
    `started by ${session.created_by}`,
    fmtWhen(session.created_at_ms),
    session.caged ? "caged" : "UNCAGED",
  ];
  if (conversation) meta.unshift("conversation");
  main.append(
    h(
      "div",
      { class: "session-head" },
      h(
        "div",
        { class: "title" },
        h(
          "nav",
          { class: "crumbs", "aria-label": "Breadcrumb" },
          h("a", { href: "#/projects", text: "Projects" }),
          " / ",
          h("a", {
            href: `#/projects/${encodeURIComponent(session.project)}`,
            text: session.project,
          }),
          " /",
        ),
        title,
        h("p", { class: "meta" }, meta.join(" · "), " · ", status),
      ),
      abort,
    ),
    endedLine,
    notice,
    termHost,
    ...(conversation ? [] : [tools]),
    h(
      "details",
      { class: "more" },
      h("summary", { text: "Details" }),
      h(
        "dl",
        { class: "facts" },
        factRows([
          ["Session", session.id, "mono"],
          [conversation ? "Tool executor" : "Command", (session.command || []).join(" "), "mono"],
          ["Project", session.project],
        ]),
      ),
      h("h2", { text: "State changes" }),
      history,
      h(
        "p",
        {},
        h("a", {
          href: `api/v1/sessions/${id}/transcript`,
          download: `kaged-${id}.out`,
          text: conversation
            ? "Download the tool executor's log (raw bytes)"
            : "Download the transcript (raw bytes)",
        }),
      ),
    ),
  );
  const renderHistory = (transitions) => {
    fill(history,
      ...transitions.map((t) =>
        h(
          "li",
          {},
          h("time", { datetime: new Date(t.at_ms).toISOString(), text: fmtTime(t.at_ms) }),
          ` ${t.state}`,
          t.actor ? ` (${t.actor})` : "",
        ),
      ),
    );
  };
  renderHistory(body.transitions || []);
  render();

  // Several state changes come close together (queued, starting, running): only the answer to
  // the latest read counts, so an older one landing last cannot bring back an older state.
  let reads = 0;
  const refreshSession = async () => {
    reads += 1;
    const mine = reads;
    try {
      const b = await api.call("GET", `api/v1/sessions/${id}`);
      if (!view.alive || mine !== reads) return;
      session = b.session;
      renderHistory(b.transitions || []);
      render();
    } catch {
      /* shown elsewhere */
    }
  };
  view.onEvent((e) => {
    if (e.type === "reconnected" || e.session === id) refreshSession();
  });

  if (conversation) {
    onSession = mountConversation(ctx, view, termHost, session, status);
    return;
  }

  if (!isLive(session.state) || ctx.readOnly) {
    if (ctx.readOnly && isLive(session.state)) {
      fill(
        notice,
        h("p", {
          class: "notice",
          text: "Read-only access (--insecure-readonly): the live terminal needs signing in; this is the output so far.",
        }),
      );
    }
    await replayTranscript(api, view, termHost, tools, status, session);
    return;
  }

  // Live: attach.
  const pty = new PtyView(termHost, id, api, {
    onState: (msg) => {
      session = {
        ...session,
        state: msg.state,
        exit_code: msg.code ?? session.exit_code,
        reason: msg.by || msg.reason || session.reason,
      };
      render();
      if (!isLive(msg.state)) {
        pty.finish();
        tools.classList.add("ended");
        announce(endedText(session));
        refreshSession();
      }
    },
    onExit: (code) => {
      session = { ...session, state: "exited", exit_code: code };
      render();
      pty.finish();
      tools.classList.add("ended");
    },
    onStatus: (kind, text) => {
      status.textContent = text;
      status.dataset.kind = kind;
      if (kind === "notice") fill(notice, h("p", { class: "notice", text }));
    },
  });
  view.onDispose(() => pty.dispose());
  tools.append(
    termToolbar([
      keyButtons(pty),
      clipboardButtons(
        () => pty.term,
        (text) => pty.term.paste(text),
      ),
    ]),
  );
  const nudge = () => pty.nudge();
  window.addEventListener("online", nudge);
  document.addEventListener("visibilitychange", nudge);
  view.onDispose(() => {
    window.removeEventListener("online", nudge);
    document.removeEventListener("visibilitychange", nudge);
  });
  pty.connect();
  // Ready to type at once, except on touch screens (focus would pop the keyboard up over it).
  if (!window.matchMedia("(pointer: coarse)").matches) pty.term.focus();
}

/** An ended run: its transcript in a read-only terminal. */
async function replayTranscript(api, view, termHost, tools, status, session) {
  const MAX = 8 * 1024 * 1024;
  const total = session.output_bytes || 0;
  const start = Math.max(0, total - MAX);
  const { term, fit } = newTerminal(termHost, true);
  termHost.classList.add("readonly");
  const observer = new ResizeObserver(() => {
    try {
      fit.fit();
    } catch {
      /* hidden */
    }
  });
  observer.observe(termHost);
  view.onDispose(() => {
    observer.disconnect();
    term.dispose();
    syncScriptStyles();
  });
  tools.append(termToolbar(clipboardButtons(() => term, null)));
  status.dataset.kind = "transcript";
  status.textContent =
    start > 0
      ? `transcript: the last ${fmtBytes(total - start)} of ${fmtBytes(total)}`
      : `transcript (${fmtBytes(total)})`;
  fit.fit();
  const response = await api.call("GET", `api/v1/sessions/${session.id}/transcript?start=${start}`);
  if (!view.alive || !response) return;
  const bytes = new Uint8Array(await response.arrayBuffer());
  if (!view.alive) return;
  await new Promise((resolve) => term.write(bytes, resolve));
  termHost.dataset.loaded = "true";
}
