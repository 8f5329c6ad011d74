// The Plugins screen (`#/plugins`): every plugin in `[plugins] dir` with its state and why,
// what it may do (its capabilities in words), its tools, and Enable / Disable. The list is read
// again at each `plugin.state` event, and every few seconds while the page is shown (for what
// has no event, and faster for a while after a button). Each plugin's card is updated in place,
// so a refresh never takes the focus from a button.

import { errorPanel, factRows, fill, h } from "./dom.js";

/** How often the list is read again; right after Enable or Disable, for a while. */
const POLL_MS = 10000;
const POLL_FAST_MS = 500;
const FAST_FOR_MS = 10000;

/** Each state (`GET /api/v1/plugins`) in words, with a mark so colour is never all it says. */
const STATES = {
  running: ["●", "running"],
  starting: ["◌", "starting"],
  unhealthy: ["▲", "unhealthy (health checks failing)"],
  backing_off: ["↻", "restarting after a failure"],
  disabled: ["✕", "disabled by kaged (it kept failing)"],
  stopped: ["■", "stopped"],
  invalid: ["✕", "invalid (its manifest does not validate)"],
};

export function pluginStateText(state) {
  return (STATES[state] || ["?", state])[1];
}

export function pluginStateBadge(state) {
  const [mark, words] = STATES[state] || ["?", String(state)];
  return h(
    "span",
    { class: `badge plugin-state plugin-${state}`, dataset: { state } },
    h("span", { "aria-hidden": "true", text: `${mark} ` }),
    words,
  );
}

/** What it may do, in the daemon's words (`capabilities_described`), each with its text. */
function capabilityList(caps) {
  if (!caps || caps.length === 0) {
    return h("span", { text: "none: only its own directory (read-only), no network" });
  }
  return h(
    "ul",
    { class: "plain-list capabilities" },
    caps.map((c) => h("li", {}, c.means, " ", h("code", { class: "muted", text: c.capability }))),
  );
}

function toolList(tools) {
  if (!tools || tools.length === 0) return null;
  return h(
    "ul",
    { class: "plain-list tools" },
    tools.map((t) => h("li", {}, h("code", { text: t }))),
  );
}

/** One plugin's card: made once, then `update(report)` on every refresh. */
class PluginCard {
  constructor(ctx, name, { onChanged }) {
    this.ctx = ctx;
    this.name = name;
    this.report = null;
    /** What is drawn (the report, as JSON, and whether a request runs). */
    this.shown = null;
    this.busy = false;
    const id = `plugin-${name}`;
    this.badge = h("span", { class: "plugin-badge" });
    this.version = h("span", { class: "muted plugin-version" });
    this.description = h("p", { class: "plugin-description" });
    this.facts = h("dl", { class: "facts" });
    this.hint = h("p", { class: "muted small plugin-hint" });
    this.result = h("div", { class: "plugin-result", "aria-live": "polite" });
    const button = (action, verb, cls) => {
      const b = h("button", {
        type: "button",
        class: `small ${cls}`,
        id: `${id}-${action}`,
        dataset: { action },
        text: verb,
        "aria-label": `${verb} ${name}`,
      });
      b.addEventListener("click", () => this.act(action, verb, onChanged));
      return b;
    };
    this.enable = button("enable", "Enable", "primary");
    this.disable = button("disable", "Disable", "");
    this.el = h(
      "li",
      { class: "card plugin", id, dataset: { plugin: name } },
      h("h2", { class: "card-title", id: `${id}-title` }, name, " ", this.version),
      this.badge,
      this.description,
      this.facts,
      this.hint,
      ctx.readOnly ? null : h("div", { class: "actions" }, this.enable, this.disable),
      this.result,
    );
  }

  /** Show `p` (a plugin's report); `dir` is `[plugins] dir`. */
  update(p, dir) {
    this.report = p;
    this.dir = dir;
    // Unchanged: nothing redrawn (a selection, say of the reason to copy, stays).
    const shown = JSON.stringify([p, dir, this.busy]);
    if (shown === this.shown) return;
    this.shown = shown;
    this.el.dataset.state = p.state;
    this.el.dataset.enabled = String(!!p.enabled);
    this.version.textContent = p.version ? `v${p.version}` : "";
    fill(this.badge, pluginStateBadge(p.state));
    this.description.textContent = p.description || "";
    this.description.hidden = !p.description;
    // The reason often ends with the last error already ("…; the last: exited: …").
    const problem = p.last_error && !(p.reason || "").includes(p.last_error) ? p.last_error : null;
    fill(
      this.facts,
      factRows([
        ["Enabled", p.state === "invalid" ? "no (cannot run)" : p.enabled ? "yes" : "no"],
        ["Reason", p.reason, "plugin-reason"],
        ["Last error", problem, "plugin-last-error"],
        ["Restarts", String(p.restarts ?? 0)],
        ["Process", p.pid ? `PID ${p.pid}` : null],
        ["May", capabilityList(p.capabilities_described)],
        ["Tools", toolList(p.tools)],
      ]),
    );
    this.hint.textContent =
      p.state === "invalid"
        ? `Fix what the reason says (check the manifest with: kaged plugin validate ${dir}/${this.name}), then Enable reads it again.`
        : "";
    this.hint.hidden = p.state !== "invalid";
    // The button that applies: Enable when off; Disable when on; both when kaged gave up on
    // it (Enable starts it afresh); Enable alone when it cannot run (kaged reads its
    // directory again, so a mended plugin starts).
    const focused = document.activeElement;
    const canEnable = p.state === "invalid" || !p.enabled || p.state === "disabled";
    const canDisable = p.state !== "invalid" && !!p.enabled;
    this.enable.hidden = !canEnable;
    this.disable.hidden = !canDisable;
    this.enable.disabled = this.busy;
    this.disable.disabled = this.busy;
    // A button that just went away gives the focus to the one that replaced it.
    if (focused && focused.hidden && this.el.contains(focused)) {
      const next = canEnable ? this.enable : canDisable ? this.disable : null;
      if (next) next.focus();
    }
  }

  async act(action, verb, onChanged) {
    if (this.busy) return;
    this.busy = true;
    this.el.setAttribute("aria-busy", "true");
    this.enable.disabled = true;
    this.disable.disabled = true;
    fill(this.result, h("p", { class: "muted small", text: `${verb.replace(/e$/, "")}ing…` }));
    try {
      const { plugin } = await this.ctx.api.call(
        "POST",
        `api/v1/plugins/${encodeURIComponent(this.name)}/${action}`,
      );
      const done = `${verb}d ${this.name}.`;
      // The result's own live region says it (and an error's panel is an alert).
      fill(this.result, h("p", { class: "notice ok-note", text: done }));
      if (plugin) this.update(plugin, this.dir);
    } catch (e) {
      fill(this.result, errorPanel(e));
    } finally {
      this.busy = false;
      this.el.removeAttribute("aria-busy");
      if (this.report) this.update(this.report, this.dir);
      onChanged();
    }
  }
}

export async function viewPlugins(ctx, view, main) {
  const { api } = ctx;
  const summary = h("p", { class: "muted", id: "plugins-summary", "aria-live": "polite" });
  const list = h("ul", { class: "cards plugins", id: "plugin-list" });
  const empty = h("div", { id: "plugins-empty", hidden: true });
  const problem = h("div", { id: "plugins-problem" });
  main.append(h("h1", { text: "Plugins" }), summary, problem, empty, list);
  const cards = new Map();
  let fastUntil = 0;
  let timer = null;
  const schedule = () => {
    clearTimeout(timer);
    if (!view.alive) return;
    const fast = Date.now() < fastUntil;
    timer = setTimeout(tick, fast ? POLL_FAST_MS : POLL_MS);
  };
  const onChanged = () => {
    fastUntil = Date.now() + FAST_FOR_MS;
    clearTimeout(timer);
    tick();
  };
  const load = async () => {
    const { dir, plugins } = await api.call("GET", "api/v1/plugins");
    if (!view.alive) return;
    fill(problem);
    empty.hidden = plugins.length > 0;
    if (plugins.length === 0 && empty.dataset.dir !== dir) {
      empty.dataset.dir = dir;
      fill(
        empty,
        h("p", {}, "No plugins installed in ", h("code", { text: dir }), "."),
        h("p", { text: "Install one with:" }),
        h("pre", {}, h("code", { text: "kaged plugin install PATH" })),
      );
    }
    const counts = {};
    for (const p of plugins) counts[p.state] = (counts[p.state] || 0) + 1;
    const said = plugins.length
      ? `${plugins.length} installed in ${dir}: ` +
        Object.entries(counts)
          .map(([state, n]) => `${n} ${state.replace("_", " ")}`)
          .join(", ")
      : "";
    // A live region: only a change is said again.
    if (summary.textContent !== said) summary.textContent = said;
    const seen = new Set();
    for (const p of plugins) {
      seen.add(p.name);
      let card = cards.get(p.name);
      if (!card) {
        card = new PluginCard(ctx, p.name, { onChanged });
        cards.set(p.name, card);
        list.append(card.el);
      }
      card.update(p, dir);
    }
    for (const [name, card] of cards) {
      if (!seen.has(name)) {
        card.el.remove();
        cards.delete(name);
      }
    }
  };
  async function tick() {
    try {
      if (document.visibilityState === "visible") await load();
    } catch (e) {
      if (view.alive && !ctx.isSignedOut()) fill(problem, errorPanel(e));
    }
    schedule();
  }
  view.onDispose(() => clearTimeout(timer));
  // A plugin's state changed (`plugin.state` on the event stream), or the stream came back
  // after a gap: read the list now. The poll stays for what has no event (a plugin
  // installed on disk) and for read-only consoles, which do not follow the stream.
  view.onEvent((e) => {
    if (e.type === "plugin.state" || e.type === "reconnected") {
      clearTimeout(timer);
      tick();
    }
  });
  await load();
  schedule();
}
