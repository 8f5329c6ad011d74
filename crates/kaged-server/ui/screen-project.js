// A project's screen (`#/projects/SLUG`): its state and diagnostics, a held change that loosens
// its cages (Accept), overlaps, Reload and Unload, what can be started (a model agent with an
// optional first message), and its sessions.

import { isSendKey } from "./conversation.js";
import { ago, announce, diagnosticsList, errorPanel, fill, h } from "./dom.js";
import { validityBadge } from "./screen-projects.js";
import { allAgents, isCommandAgent, isModelAgent, sessionList } from "./screen-sessions.js";


/** Rough PTY size for a new run: the session view fits the real size on attach. */
function guessSize() {
  const cols = Math.max(20, Math.min(300, Math.floor((window.innerWidth - 24) / 8)));
  const rows = Math.max(8, Math.min(120, Math.floor((window.innerHeight - 220) / 17)));
  return { rows, cols };
}

export async function viewProject(ctx, view, main, slug) {
  const { api } = ctx;
  const { project } = await api.call("GET", `api/v1/projects/${encodeURIComponent(slug)}`);
  if (!view.alive) return;
  const header = h("div", { class: "page-head" });
  const validity = h("div", { id: "validity", "aria-live": "polite" });
  const actionsResult = h("div", { id: "project-result" });
  const startResult = h("div", { id: "start-result", "aria-live": "polite" });
  const sessions = h("div", { id: "project-sessions" });
  // A held edit that loosens a cage, and roots that overlap another project's.
  const held = h("div", { id: "project-held", "aria-live": "polite" });

  const renderHeld = (p) => {
    const overlaps = (p.overlaps || []).map((o) =>
      h(
        "div",
        { class: "notice error", role: "alert" },
        h("strong", { text: "Overlapping projects: " }),
        `this project's directory overlaps ${o.slug} (`,
        h("code", { text: o.root }),
        "). Runs of both are refused until one of them is unloaded.",
      ),
    );
    const pending = p.pending_weakening;
    if (!pending) {
      fill(held, ...overlaps);
      return;
    }
    const accept = h("button", {
      type: "button",
      class: "primary",
      id: "accept-weakening",
      text: "Accept",
    });
    const result = h("div", {});
    accept.addEventListener("click", async () => {
      fill(result);
      accept.disabled = true;
      try {
        const body = await api.call("POST", `api/v1/projects/${encodeURIComponent(slug)}/reload`, {
          accept: true,
        });
        if (!view.alive) return;
        fill(actionsResult);
        renderProject(body.project);
        announce(`Accepted the change to ${slug}`);
      } catch (e) {
        if (view.alive) result.append(errorPanel(e));
        accept.disabled = false;
      }
    });
    fill(
      held,
      ...overlaps,
      h(
        "section",
        { class: "notice warn", id: "pending-weakening", role: "alert" },
        h("strong", { text: "An edit loosens this project's cages" }),
        h(
          "p",
          {},
          `Detected ${ago(pending.detected_at_ms)}. The previous configuration stays in force `,
          "until you accept (a run may have written the file: review ",
          h("code", { text: ".kaged/project.yaml" }),
          " first).",
        ),
        h(
          "ul",
          { class: "weakenings" },
          pending.weakenings.map((w) => h("li", { text: w.text })),
        ),
        h("div", { class: "actions" }, accept),
        result,
      ),
    );
  };

  const renderProject = (p) => {
    renderHeld(p);
    fill(header,
      h(
        "nav",
        { class: "crumbs", "aria-label": "Breadcrumb" },
        h("a", { href: "#/projects", text: "Projects" }),
        " / ",
      ),
      h("h1", { text: p.slug }),
      p.config.description ? h("p", { class: "lead", text: p.config.description }) : null,
      h("code", { class: "path block", text: p.root }),
    );
    fill(validity,
      h(
        "p",
        {},
        validityBadge(p.valid, p.diagnostics.length),
        " ",
        h("span", {
          class: "muted small",
          text: p.valid
            ? `checked ${ago(p.checked_at_ms)}`
            : "the last valid configuration stays in force until the files are fixed",
        }),
      ),
      p.diagnostics.length ? diagnosticsList(p.diagnostics) : null,
    );
  };
  renderProject(project);

  const reload = h("button", { type: "button", id: "reload", text: "Reload" });
  reload.addEventListener("click", async () => {
    fill(actionsResult);
    reload.disabled = true;
    try {
      const body = await api.call("POST", `api/v1/projects/${encodeURIComponent(slug)}/reload`);
      if (!view.alive) return;
      renderProject(body.project);
      announce(`Reloaded ${slug}: valid`);
    } catch (e) {
      if (!view.alive) return;
      // The problems are recorded on the project too: shown with its state, not twice; a held
      // weakening is the banner's.
      if (e.code !== "weakening_pending") {
        actionsResult.append(errorPanel(e, { diagnostics: false }));
      }
      api.call("GET", `api/v1/projects/${encodeURIComponent(slug)}`)
        .then((b) => view.alive && renderProject(b.project))
        .catch(() => {});
    } finally {
      reload.disabled = false;
    }
  });
  const unload = h("button", { type: "button", class: "quiet", text: "Unload" });
  unload.addEventListener("click", async () => {
    // Unloading forgets the project (its files stay): worth one confirmation.
    if (!window.confirm(`Unload ${slug}? Its files are not touched; load it again any time.`)) {
      return;
    }
    try {
      await api.call("DELETE", `api/v1/projects/${encodeURIComponent(slug)}`);
      location.hash = "#/projects";
    } catch (e) {
      if (view.alive) actionsResult.append(errorPanel(e));
    }
  });

  // What can be started.
  const config = project.config;
  const startButtons = [];
  /** `body`: the create request, or a function making it at the click. */
  const starter = (label, body, detail, id) => {
    const button = h("button", { type: "button", class: "start", id }, h("span", { text: label }));
    if (detail) button.append(h("code", { class: "cmd", text: detail }));
    button.addEventListener("click", async () => {
      fill(startResult);
      for (const b of startButtons) b.disabled = true;
      try {
        const size = guessSize();
        const request = typeof body === "function" ? body() : { ...body, ...size };
        const res = await api.call(
          "POST",
          `api/v1/projects/${encodeURIComponent(slug)}/sessions`,
          request,
        );
        announce(`Started ${label}`);
        location.hash = `#/sessions/${res.session.id}`;
      } catch (e) {
        if (view.alive) startResult.append(errorPanel(e));
      } finally {
        for (const b of startButtons) b.disabled = false;
      }
    });
    startButtons.push(button);
    return button;
  };
  const shell = (config.terminals && config.terminals.shell) || ["bash", "-l"];
  const agents = allAgents(config).filter(({ agent }) => isCommandAgent(agent));
  const models = allAgents(config).filter(({ agent }) => isModelAgent(agent));
  /** A model agent's starter: its button and an optional first message (Enter starts). */
  const modelStarter = ({ name, agent }) => {
    const boxId = `first-message-${name}`;
    const box = h("textarea", { id: boxId, rows: "2", class: "first-message" });
    const button = starter(
      `Agent ${name}`,
      () => {
        const message = box.value;
        return message.trim() ? { kind: "agent", name, message } : { kind: "agent", name };
      },
      `model: ${typeof agent.model === "string" ? agent.model : JSON.stringify(agent.model)}`,
      `start-agent-${name}`,
    );
    button.append(h("span", { class: "conversation-badge badge", text: "conversation" }));
    box.addEventListener("keydown", (e) => {
      if (!isSendKey(e)) return;
      e.preventDefault();
      if (!button.disabled) button.click();
    });
    return h(
      "div",
      { class: "model-starter" },
      button,
      h("label", { for: boxId, class: "small", text: `First message to ${name} (optional)` }),
      box,
    );
  };
  const tasks = Object.entries(config.tasks || {});
  const start = h(
    "section",
    { class: "panel", "aria-labelledby": "start-title" },
    h("h2", { id: "start-title", text: "Start" }),
    h(
      "div",
      { class: "starters" },
      starter("Terminal", { kind: "terminal" }, shell.join(" "), "start-terminal"),
      agents.map(({ name, agent }) =>
        starter(
          `Agent ${name}`,
          { kind: "agent", name },
          agent.command.join(" "),
          `start-agent-${name}`,
        ),
      ),
      models.map(modelStarter),
      tasks.map(([name, task]) =>
        starter(
          `Task ${name}`,
          { kind: "task", name },
          task.description || (task.command || []).join(" "),
          `start-task-${name}`,
        ),
      ),
    ),
    startResult,
  );

  main.append(
    header,
    validity,
    held,
    h("div", { class: "actions" }, reload, unload),
    actionsResult,
    start,
    h(
      "section",
      { class: "panel", "aria-labelledby": "sessions-title" },
      h("h2", { id: "sessions-title", text: "Sessions" }),
      sessions,
    ),
  );
  await sessionList(ctx, view, sessions, { project: slug });
}
