// The Status screen (`#/status`): warnings, the daemon, sign-in, the sandbox, plugins (how many
// in each state, linking to `#/plugins`), paths and storage, and where each setting came from.

import { factRows, fmtDuration, h } from "./dom.js";
import { pluginStateText } from "./screen-plugins.js";

/** How many plugins are in each state (`status.plugins`), and the way to the Plugins screen. */
function pluginsSection(plugins) {
  const states = Object.entries((plugins && plugins.states) || {});
  const total = states.reduce((n, [, count]) => n + count, 0);
  return h(
    "section",
    { class: "panel", "aria-labelledby": "plugins-title", id: "status-plugins" },
    h("h2", { id: "plugins-title", text: "Plugins" }),
    total === 0
      ? h("p", { class: "muted", text: "None installed." })
      : h(
          "ul",
          { class: "plain-list", id: "status-plugin-states" },
          states.map(([state, count]) =>
            h("li", { dataset: { state } }, `${count} ${pluginStateText(state)}`),
          ),
        ),
    plugins && plugins.dir
      ? h("p", { class: "muted small" }, "In ", h("code", { text: plugins.dir }))
      : null,
    h("p", {}, h("a", { href: "#/plugins", id: "status-plugins-link", text: "Manage plugins" })),
  );
}

export async function viewStatus(ctx, view, main) {
  const { api } = ctx;
  const s = await api.call("GET", "api/v1/status");
  if (!view.alive) return;
  ctx.setStatus(s);
  const mode = s.mode === "system" ? "system-wide" : "per-user";
  const section = (title, id, rows) =>
    h(
      "section",
      { class: "panel", "aria-labelledby": id },
      h("h2", { id, text: title }),
      h("dl", { class: "facts" }, factRows(rows)),
    );
  const warnings = s.warnings.length
    ? h(
        "ul",
        { class: "warn-list" },
        s.warnings.map((w) => h("li", { text: w })),
      )
    : h("p", { class: "muted", text: "No warnings." });
  const sources = h(
    "table",
    { class: "sources" },
    h("caption", { class: "visually-hidden", text: "Where each setting came from" }),
    h(
      "thead",
      {},
      h("tr", {}, h("th", { scope: "col", text: "Setting" }), h("th", { scope: "col", text: "From" })),
    ),
    h(
      "tbody",
      {},
      Object.entries(s.sources || {}).map(([key, src]) =>
        h(
          "tr",
          {},
          h("td", { class: "mono", text: key }),
          h("td", {
            text: [src.from, src.var, src.flag, src.file, src.line ? `line ${src.line}` : null]
              .filter(Boolean)
              .join(" "),
          }),
        ),
      ),
    ),
  );
  main.append(
    h("h1", { text: "Status" }),
    h(
      "section",
      { class: "panel", "aria-labelledby": "warn-title" },
      h("h2", { id: "warn-title", text: "Warnings" }),
      warnings,
    ),
    section("Daemon", "daemon-title", [
      ["Mode", `${mode} (${s.mode_reason})`],
      ["Listening", s.url],
      ["Listeners", (s.listeners || []).join(", ")],
      ["Version", s.version],
      ["PID", s.pid],
      ["Up for", fmtDuration(s.uptime_secs)],
      ["Web UI", s.ui_serve ? "served" : "off"],
    ]),
    section("Sign-in", "auth-title", [
      ["Auth mode", s.auth_mode],
      ["Method", s.auth],
      ["You", ctx.who ? `${ctx.who.id} (${ctx.who.method})` : null],
    ]),
    section("Sandbox", "sandbox-title", [
      ["Mode", s.sandbox.mode],
      ["Cages", s.sandbox.available ? "available" : `unavailable: ${s.sandbox.problem}`],
      ["Limits", s.sandbox.limits],
    ]),
    pluginsSection(s.plugins),
    section("Paths", "paths-title", [
      ["Config", s.paths.config_file, "mono"],
      ["Data", s.paths.data_dir, "mono"],
      [
        "Runtime",
        `${s.paths.runtime_dir}${s.paths.runtime_dir_is_fallback ? " (fallback)" : ""}`,
        "mono",
      ],
      ["Audit log", s.paths.audit_log, "mono"],
      ["Database", `${s.storage.url} (schema ${s.storage.schema_version})`, "mono"],
      [
        "Storage",
        !s.storage.health || s.storage.health.state === "ok"
          ? "ok"
          : `FAILING since ${s.storage.health.since}${s.storage.health.full ? " (disk full)" : ""}: ` +
            `${s.storage.health.last_error}; ${s.storage.health.held_changes} state change(s) held`,
      ],
    ]),
    h(
      "details",
      { class: "panel more" },
      h("summary", { text: "Where each setting came from" }),
      h("div", { class: "scroll-x" }, sources),
    ),
  );
}
