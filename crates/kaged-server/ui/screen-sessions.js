// The Sessions screen (`#/sessions`), and what other screens show of sessions: the live list
// (also on a project's page), titles, state badges, conversations marked, why a run ended,
// Abort (End for a conversation: a message resumes it).

import { isSendKey } from "./conversation.js";
import { ago, announce, errorPanel, fill, fmtBytes, h } from "./dom.js";

const LIVE_STATES = new Set(["queued", "starting", "running", "stopping"]);
export const isLive = (state) => LIVE_STATES.has(state);

/** The agents of a resolved project configuration: primary and its nested subagents. */
export function allAgents(config) {
  const out = [];
  const walk = (name, agent) => {
    if (!agent || typeof agent !== "object") return;
    out.push({ name, agent });
    for (const [sub, def] of Object.entries(agent.subagents || {})) walk(sub, def);
  };
  walk("primary", config && config.primary);
  return out;
}

/** Command agents run on a terminal; model agents (`model:`, no `command:`) converse. */
export const isCommandAgent = (agent) => Array.isArray(agent.command);
export const isModelAgent = (agent) => !isCommandAgent(agent) && agent.model != null;

export function sessionTitle(s) {
  if (s.kind === "terminal") return "Terminal";
  if (s.kind === "agent") return `Agent ${s.name}`;
  if (s.kind === "task") return `Task ${s.name}`;
  return `${s.kind} ${s.name}`;
}

function stateText(s) {
  switch (s.state) {
    case "exited":
      return `exited ${s.exit_code ?? s.code ?? "?"}`;
    case "killed":
      return "killed";
    case "failed":
      return "failed";
    default:
      return s.state;
  }
}

export function stateBadge(s) {
  return h("span", {
    class: `badge state state-${s.state}`,
    dataset: { state: s.state },
    text: stateText(s),
  });
}

/** Why a run ended, in words. */
export function endedText(s) {
  const by = s.by || s.reason;
  switch (s.state) {
    case "exited": {
      const code = s.exit_code ?? s.code;
      return code > 128
        ? `Exited with code ${code} (signal ${code - 128})`
        : `Exited with code ${code}`;
    }
    case "killed":
      return by ? `Killed by ${by}` : "Killed";
    case "failed":
      return by ? `Failed: ${by}` : "Failed";
    case "stopping":
      return by ? `Stopping (aborted by ${by})…` : "Stopping…";
    default:
      return "";
  }
}

/** Marks a model agent's session (a conversation, not a terminal). */
export function conversationBadge() {
  return h("span", {
    class: "badge conversation-badge",
    text: "conversation",
    title: "A model agent: open it to read and send messages",
  });
}

export async function abortSession(api, id) {
  // Immediate: no confirmation. SIGHUP+SIGTERM now, SIGKILL 3 s later (server side).
  try {
    await api.call("POST", `api/v1/sessions/${id}/kill`);
    announce("Abort sent");
    return true;
  } catch (e) {
    announce(`Abort failed: ${e.message}`);
    throw e;
  }
}

/** A live-updating list of sessions (of one project, or all). */
export async function sessionList(ctx, view, host, { project }) {
  const { api } = ctx;
  const list = h("ul", { class: "cards sessions", id: "session-list" });
  const note = h("div");
  fill(host, list, note);
  const ids = new Set();
  const load = async () => {
    const path = project
      ? `api/v1/projects/${encodeURIComponent(project)}/sessions`
      : "api/v1/sessions?limit=200";
    const { sessions } = await api.call("GET", path);
    if (!view.alive) return;
    ids.clear();
    fill(list);
    if (sessions.length === 0) {
      list.append(h("li", { class: "empty", text: "No sessions yet." }));
    }
    for (const s of sessions) {
      ids.add(s.id);
      const meta = [
        project ? null : s.project,
        `by ${s.created_by}`,
        ago(s.created_at_ms),
        fmtBytes(s.output_bytes),
        s.caged ? null : "uncaged",
      ].filter(Boolean);
      const item = h(
        "li",
        { class: "card session", dataset: { session: s.id, state: s.state } },
        h("a", { class: "card-title", href: `#/sessions/${s.id}`, text: sessionTitle(s) }),
        stateBadge(s),
        s.conversation ? conversationBadge() : null,
        h("span", { class: "meta", text: meta.join(" · ") }),
      );
      const why = !isLive(s.state) ? endedText(s) : null;
      if (why && s.state !== "exited") item.append(h("span", { class: "meta", text: why }));
      if (isLive(s.state) && s.state !== "stopping") {
        const verb = s.conversation ? "End" : "Abort";
        const abort = h("button", {
          type: "button",
          class: "danger small",
          text: verb,
          "aria-label": `${verb} ${sessionTitle(s)} started ${ago(s.created_at_ms)}`,
        });
        abort.addEventListener("click", () => {
          abort.disabled = true;
          abortSession(api, s.id).catch((e) => fill(note, errorPanel(e)));
        });
        item.append(abort);
      }
      list.append(item);
    }
  };
  await load();
  // Live: any change to a session shown here (or a new one of this project) re-reads the list.
  let pending = null;
  const refresh = () => {
    if (pending) return;
    pending = setTimeout(() => {
      pending = null;
      if (view.alive) load().catch(() => {});
    }, 150);
  };
  view.onDispose(() => clearTimeout(pending));
  view.onEvent((e) => {
    if (e.type === "reconnected") return refresh();
    // Not about a run's state (the stream's own, approvals: ctx.approvals has those, and
    // plugins).
    if (e.type === "connected" || /^(approval|plugin)\./.test(String(e.type))) return;
    const ours = !project || (e.detail && e.detail.project === project) || ids.has(e.session);
    if (!ours) return;
    refresh();
    if (e.type === "run.ended" || e.type === "run.started") {
      const what = e.detail && e.detail.kind ? `${e.detail.kind} ${e.detail.name || ""}` : "A run";
      announce(`${what.trim()} is now ${e.state}`);
    }
  });
}

/**
 * "Start a model agent": every loaded project's model agents, an optional first message. Shown
 * only when there is one to start (filled in after the list, without holding the page up).
 */
async function modelAgentStarter(ctx, view, host) {
  const { api } = ctx;
  const { projects } = await api.call("GET", "api/v1/projects");
  const found = [];
  for (const p of projects) {
    const { project } = await api.call("GET", `api/v1/projects/${encodeURIComponent(p.slug)}`);
    for (const { name, agent } of allAgents(project.config)) {
      if (isModelAgent(agent)) found.push({ slug: p.slug, name });
    }
  }
  if (!view.alive || ctx.readOnly || found.length === 0) return;
  const select = h(
    "select",
    { id: "new-agent" },
    found.map(({ slug, name }) =>
      h("option", { value: JSON.stringify([slug, name]), text: `${slug}: ${name}` }),
    ),
  );
  const box = h("textarea", { id: "new-agent-message", rows: "2", class: "first-message" });
  const button = h("button", {
    type: "submit",
    class: "primary",
    id: "new-agent-start",
    text: "Start",
  });
  const result = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "panel model-start", id: "new-agent-form", "aria-labelledby": "new-agent-title" },
    h("h2", { id: "new-agent-title", text: "Start a model agent" }),
    h("label", { for: "new-agent", text: "Agent" }),
    select,
    h("label", { for: "new-agent-message", text: "First message (optional)" }),
    box,
    h("div", { class: "actions" }, button),
    result,
  );
  const start = async () => {
    const [slug, name] = JSON.parse(select.value);
    const body = { kind: "agent", name };
    if (box.value.trim()) body.message = box.value;
    fill(result);
    button.disabled = true;
    try {
      const path = `api/v1/projects/${encodeURIComponent(slug)}/sessions`;
      const res = await api.call("POST", path, body);
      announce(`Started agent ${name} of ${slug}`);
      location.hash = `#/sessions/${res.session.id}`;
    } catch (e) {
      if (view.alive) result.append(errorPanel(e));
    } finally {
      button.disabled = false;
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    start();
  });
  box.addEventListener("keydown", (e) => {
    if (!isSendKey(e)) return;
    e.preventDefault();
    if (!button.disabled) start();
  });
  fill(host, form);
}

export async function viewSessions(ctx, view, main) {
  const host = h("div");
  const starter = h("div", { id: "new-agent-host" });
  main.append(h("h1", { text: "Sessions" }), host, starter);
  await sessionList(ctx, view, host, { project: null });
  modelAgentStarter(ctx, view, starter).catch(() => {});
}
