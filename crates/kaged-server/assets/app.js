// kaged operator console: projects, sessions (live terminals over the PTY WebSocket), status
// and the audit log. Plain JavaScript, no build step; xterm.js and its fit addon are the only
// third-party code (served from assets/vendor/, fetched from npm at build time).
//
// Rules this file keeps:
// - Every URL is relative (`api/v1/...`, `assets/...`) and WebSocket URLs are derived from the
//   page's own URL, so the console works under a sidecar's path prefix.
// - Every request is same-origin with credentials; every state change carries X-Kaged-CSRF
//   (from GET api/v1/whoami). A 401 `unauthenticated` shows the signed-out state.
// - Untrusted text (project files, output, audit details) only ever reaches the DOM through
//   textContent; nothing is parsed as HTML. No inline scripts or styles (the CSP is strict).
"use strict";

/* ------------------------------------------------------------------------------------------ */
/* CSP: xterm.js's computed CSS through CSSOM                                                  */
/* ------------------------------------------------------------------------------------------ */

// Anything the CSP refuses is a bug of this console: say so in the console, and keep the list
// on <html data-csp-violations> where the end-to-end tests look for it.
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  const what = `${e.effectiveDirective} refused ${e.blockedURI || "inline"} at ${where}`;
  console.error(`kaged console: CSP violation: ${what}`);
  const seen = document.documentElement.dataset.cspViolations;
  document.documentElement.dataset.cspViolations = seen ? `${seen}\n${what}` : what;
});

// xterm.js 6's DOM renderer writes its computed CSS (theme colours, cell size, the scrollbar)
// into <style> elements it creates, and 24-bit colours into style="" attributes through
// setAttribute. The page's CSP (`style-src 'self'`, no 'unsafe-inline') blocks both: the
// terminal would lose its colours and cell layout. CSS set through CSSOM by a script the CSP
// already allowed is not subject to style-src, so both go through CSSOM here:
// - document.createElement("style") (only xterm.js calls it) makes a <kaged-script-style>
//   element instead, which the browser never treats as a stylesheet; the text a script gives
//   it goes into a constructed stylesheet, adopted by the document while the element is in it;
// - a script's setAttribute("style", …) becomes element.style.cssText = ….
// Markup injection (what style-src guards against) is still refused: the HTML parser goes
// through none of these.
function installStyleShim() {
  if (
    typeof CSSStyleSheet !== "function" ||
    typeof CSSStyleSheet.prototype.replaceSync !== "function" ||
    !("adoptedStyleSheets" in Document.prototype) ||
    !window.customElements
  ) {
    return () => {};
  }
  const ours = new WeakSet(); // the sheets made here
  const live = new Set(); // elements holding a sheet
  const sync = () => {
    const keep = document.adoptedStyleSheets.filter((sheet) => !ours.has(sheet));
    const mine = [...live].filter((el) => el.isConnected).map((el) => el.sheetOf);
    document.adoptedStyleSheets = keep.concat(mine);
  };
  class ScriptStyle extends HTMLElement {
    constructor() {
      super();
      this.cssText = "";
      this.sheetOf = new CSSStyleSheet();
      ours.add(this.sheetOf);
      live.add(this);
    }
    get textContent() {
      return this.cssText;
    }
    set textContent(value) {
      this.cssText = value == null ? "" : String(value);
      this.sheetOf.replaceSync(this.cssText);
      sync();
    }
    get innerText() {
      return this.cssText;
    }
    set innerText(value) {
      this.textContent = value;
    }
    connectedCallback() {
      live.add(this);
      sync();
    }
    disconnectedCallback() {
      sync();
    }
  }
  customElements.define("kaged-script-style", ScriptStyle);
  const baseCreateElement = Document.prototype.createElement;
  Document.prototype.createElement = function createElement(name, options) {
    if (typeof name === "string" && name.toLowerCase() === "style") return new ScriptStyle();
    return baseCreateElement.call(this, name, options);
  };
  const baseSetAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function setAttribute(name, value) {
    if (typeof name === "string" && name.toLowerCase() === "style" && this.style) {
      this.style.cssText = String(value);
      return undefined;
    }
    return baseSetAttribute.call(this, name, value);
  };
  // After a terminal is disposed: forget its (now detached) elements.
  return () => {
    for (const el of live) if (!el.isConnected) live.delete(el);
    sync();
  };
}
/** Re-check which script-made style elements are still in the document. */
const syncScriptStyles = installStyleShim();

/* ------------------------------------------------------------------------------------------ */
/* Small helpers                                                                               */
/* ------------------------------------------------------------------------------------------ */

/** Create an element: `h("a", {href: "#/x", class: "c", text: "t", onclick: f}, child…)`. */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const $ = (id) => document.getElementById(id);

/** Replace an element's children (arrays flattened; null, undefined and false skipped). */
function fill(el, ...children) {
  el.replaceChildren(
    ...children
      .flat(Infinity)
      .filter((c) => c !== undefined && c !== null && c !== false)
      .map((c) => (c instanceof Node ? c : String(c))),
  );
  return el;
}

function fmtTime(ms) {
  if (!ms) return "—";
  return new Date(ms).toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

/** A time of today as just the time, else date and time. */
function fmtWhen(ms) {
  if (!ms) return "—";
  const d = new Date(ms);
  if (d.toDateString() === new Date().toDateString()) {
    return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  }
  return fmtTime(ms);
}

function ago(ms) {
  if (!ms) return "";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function fmtBytes(n) {
  if (n == null) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}

function fmtDuration(secs) {
  const d = Math.floor(secs / 86400);
  const hh = Math.floor((secs % 86400) / 3600);
  const mm = Math.floor((secs % 3600) / 60);
  const ss = secs % 60;
  if (d) return `${d} d ${hh} h`;
  if (hh) return `${hh} h ${mm} min`;
  if (mm) return `${mm} min ${ss} s`;
  return `${ss} s`;
}

/** A WebSocket URL for a path relative to the page (keeps a sidecar's path prefix). */
function wsUrl(path) {
  const url = new URL(path, document.baseURI);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.hash = "";
  return url.href;
}

const LIVE_STATES = new Set(["queued", "starting", "running", "stopping"]);
const isLive = (s) => LIVE_STATES.has(s);

/** Say something to screen readers (the polite live region). */
function announce(text) {
  const region = $("announce");
  region.textContent = "";
  // A new text node after a tick, so the same message twice is announced twice.
  setTimeout(() => {
    region.textContent = text;
  }, 30);
}

/* ------------------------------------------------------------------------------------------ */
/* API                                                                                         */
/* ------------------------------------------------------------------------------------------ */

const app = {
  who: null,
  readOnly: false,
  csrf: null,
  status: null,
  signedOut: false,
  view: null,
  events: null,
};

class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/**
 * One API call. `path` is relative (`api/v1/...`). JSON in, JSON out; a non-JSON success
 * (a transcript) returns the Response. Errors throw ApiError with the stable error code.
 */
async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (method !== "GET" && method !== "HEAD" && app.csrf) {
    init.headers["X-Kaged-CSRF"] = app.csrf;
  }
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "network", `kaged did not answer (${e.message}). Is it still running?`);
  }
  const type = response.headers.get("content-type") || "";
  if (response.ok && !type.includes("application/json")) {
    return response.status === 204 ? null : response;
  }
  let json = null;
  try {
    json = await response.json();
  } catch {
    json = null;
  }
  if (response.ok) return json;
  const error = (json && json.error) || {};
  if (response.status === 401 && error.code !== "readonly_mode") {
    signedOut();
  }
  throw new ApiError(
    response.status,
    error.code || "http",
    error.message || `HTTP ${response.status}`,
    error.details,
  );
}

/* ------------------------------------------------------------------------------------------ */
/* Events stream (session state changes, live)                                                */
/* ------------------------------------------------------------------------------------------ */

class EventStream {
  constructor() {
    this.cursor = null;
    this.listeners = new Set();
    this.failures = 0;
    this.ws = null;
    this.timer = null;
    this.stopped = false;
    this.everConnected = false;
  }

  on(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(event) {
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch (e) {
        console.error(e);
      }
    }
  }

  start() {
    if (this.stopped || this.ws) return;
    const since = this.cursor != null ? `?since=${encodeURIComponent(this.cursor)}` : "";
    const ws = new WebSocket(wsUrl(`api/v1/events${since}`));
    this.ws = ws;
    ws.onmessage = (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      if (event.type === "hello") {
        const again = this.everConnected;
        this.everConnected = true;
        this.failures = 0;
        document.body.dataset.events = "live";
        // After a gap, views re-read what they show (the replay covers transitions only).
        if (again) this.emit({ type: "reconnected" });
        return;
      }
      if (typeof event.cursor === "number") this.cursor = event.cursor;
      this.emit(event);
    };
    ws.onclose = () => {
      this.ws = null;
      document.body.dataset.events = "down";
      if (this.stopped) return;
      this.failures += 1;
      // A refused upgrade looks like any other drop: ask whether we are still signed in.
      if (this.failures >= 2) api("GET", "api/v1/whoami").catch(() => {});
      const delay = Math.min(10000, 500 * 2 ** Math.min(this.failures, 5));
      this.timer = setTimeout(() => {
        this.timer = null;
        this.start();
      }, delay);
    };
  }

  /** Reconnect now (the network came back, the tab became visible). */
  nudge() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.timer);
    this.timer = null;
    this.start();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Shell: header, warnings, signed-out state, router                                           */
/* ------------------------------------------------------------------------------------------ */

function showWarnings(warnings) {
  const banner = $("warnings");
  if (!warnings || warnings.length === 0) {
    banner.hidden = true;
    fill(banner);
    return;
  }
  // Authentication off is the loudest: red, not amber.
  banner.classList.toggle(
    "danger",
    warnings.some((w) => /^insecure\b/.test(String(w))),
  );
  fill(banner,
    h(
      "ul",
      {},
      warnings.map((w) => {
        const kind = String(w).split(":")[0];
        return h("li", { dataset: { warning: kind } }, h("strong", { text: "Warning: " }), w);
      }),
    ),
  );
  banner.hidden = false;
}

function signedOut() {
  if (app.signedOut) return;
  app.signedOut = true;
  disposeView();
  if (app.events) app.events.stop();
  document.body.dataset.state = "signed-out";
  $("sign-out").hidden = true;
  $("who").textContent = "";
  const title = h("h1", { id: "signed-out-title", tabindex: "-1", text: "Signed out" });
  $("kaged-console").replaceChildren(
    h(
      "section",
      { class: "panel signed-out", id: "signed-out", "aria-labelledby": "signed-out-title" },
      title,
      h("p", {
        text: "Your browser session has ended: you signed out, it expired, or kaged restarted.",
      }),
      h("p", { text: "To sign in again, run this in a terminal on the machine running kaged:" }),
      h("pre", {}, h("code", { text: "kaged auth open" })),
      h("p", {
        class: "muted",
        text: "It prints a fresh one-time launch URL and tries to open it in your browser.",
      }),
    ),
  );
  announce("Signed out. Run kaged auth open to sign in again.");
  title.focus();
}

async function signOut() {
  try {
    await api("POST", "api/v1/auth/logout");
  } catch (e) {
    if (e.status !== 401) {
      announce(`Sign-out failed: ${e.message}`);
      return;
    }
  }
  signedOut();
}

function disposeView() {
  const view = app.view;
  app.view = null;
  if (!view) return;
  view.alive = false;
  for (const fn of view.disposers.reverse()) {
    try {
      fn();
    } catch (e) {
      console.error(e);
    }
  }
}

/** Per-view context: `alive` turns false when the user navigates away. */
function newView() {
  const view = {
    alive: true,
    disposers: [],
    onDispose(fn) {
      this.disposers.push(fn);
    },
    /** Listen to the event stream for this view's life. */
    onEvent(fn) {
      this.onDispose(app.events.on(fn));
    },
  };
  return view;
}

const ROUTES = [
  [/^#\/projects\/?$/, "projects", viewProjects],
  [/^#\/projects\/([A-Za-z0-9._-]+)$/, "projects", viewProject],
  [/^#\/sessions\/?$/, "sessions", viewSessions],
  [/^#\/sessions\/([0-9a-f]{32})$/, "sessions", viewSession],
  [/^#\/status$/, "status", viewStatus],
  [/^#\/audit$/, "audit", viewAudit],
];

let firstRoute = true;

async function route() {
  if (app.signedOut) return;
  let hash = location.hash || "#/projects";
  if (!hash.startsWith("#/")) {
    if (!firstRoute) return; // an in-page anchor, not a route
    hash = "#/projects";
  }
  disposeView();
  const main = $("kaged-console");
  fill(main);
  const view = newView();
  app.view = view;
  let section = null;
  let render = viewNotFound;
  let params = [];
  for (const [re, nav, fn] of ROUTES) {
    const m = hash.match(re);
    if (m) {
      section = nav;
      render = fn;
      params = m.slice(1).map(decodeURIComponent);
      break;
    }
  }
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.body.dataset.route = section || "none";
  main.setAttribute("aria-busy", "true");
  try {
    await render(view, main, ...params);
  } catch (e) {
    if (!view.alive || app.signedOut) return;
    if (!main.querySelector("h1")) main.append(h("h1", { text: "Not available" }));
    main.append(errorPanel(e));
  } finally {
    if (view.alive) main.removeAttribute("aria-busy");
  }
  if (!view.alive || app.signedOut) return;
  // Move focus to the new page's heading (not on first load: the user has not moved yet;
  // not when the page put it somewhere itself, as the session view does on its terminal).
  const placed = main.contains(document.activeElement) && document.activeElement !== main;
  if (!firstRoute && !placed) {
    const title = main.querySelector("h1");
    if (title) {
      title.setAttribute("tabindex", "-1");
      title.focus({ preventScroll: false });
    }
  }
  firstRoute = false;
}

function errorPanel(e, { diagnostics = true } = {}) {
  const panel = h(
    "div",
    { class: "notice error", role: "alert" },
    h("strong", { text: e.code && e.code !== "http" ? `${e.code}: ` : "Error: " }),
    e.message || String(e),
  );
  const diags = e.details && e.details.diagnostics;
  if (diagnostics && Array.isArray(diags) && diags.length) panel.append(diagnosticsList(diags));
  return panel;
}

function viewNotFound(view, main) {
  main.append(
    h("h1", { text: "Not found" }),
    h("p", {}, "There is no such page. ", h("a", { href: "#/projects", text: "Projects" })),
  );
}

/* ------------------------------------------------------------------------------------------ */
/* Projects                                                                                    */
/* ------------------------------------------------------------------------------------------ */

function diagnosticsList(diags) {
  return h(
    "ul",
    { class: "diagnostics" },
    diags.map((d) =>
      h(
        "li",
        {},
        h("code", { class: "where", text: `${d.file}:${d.line}:${d.column}` }),
        d.path ? h("code", { class: "path", text: d.path }) : null,
        h("span", { class: "problem", text: d.problem }),
        d.hint ? h("span", { class: "hint", text: `fix: ${d.hint}` }) : null,
      ),
    ),
  );
}

function validityBadge(valid, problems) {
  return valid
    ? h("span", { class: "badge ok", text: "valid" })
    : h("span", {
        class: "badge bad",
        text: `${problems} problem${problems === 1 ? "" : "s"}`,
      });
}

async function viewProjects(view, main) {
  const list = h("ul", { class: "cards", id: "project-list", "aria-live": "polite" });
  const result = h("div", { id: "load-result" });
  const input = h("input", {
    id: "load-path",
    name: "path",
    type: "text",
    required: true,
    autocomplete: "off",
    autocapitalize: "off",
    spellcheck: "false",
    placeholder: "/home/me/src/project",
    "aria-describedby": "load-help",
  });
  const button = h("button", { type: "submit", class: "primary", id: "load-button", text: "Load" });
  const form = h(
    "form",
    { class: "load", id: "load-form" },
    h("label", { for: "load-path", text: "Load a project directory" }),
    h("div", { class: "row" }, input, button),
    h(
      "p",
      { class: "muted small", id: "load-help" },
      "The absolute path of a directory holding ",
      h("code", { text: ".kaged/project.yaml" }),
      " (like ",
      h("code", { text: "kaged project load PATH" }),
      ").",
    ),
    result,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(result);
    button.disabled = true;
    try {
      const body = await api("POST", "api/v1/projects/load", { path: input.value.trim() });
      announce(`Loaded project ${body.project.slug}`);
      location.hash = `#/projects/${encodeURIComponent(body.project.slug)}`;
    } catch (e) {
      if (view.alive) result.append(errorPanel(e));
    } finally {
      button.disabled = false;
    }
  });

  const daemon = h("dl", { class: "facts", id: "daemon-summary" });
  main.append(
    h("h1", { text: "Projects" }),
    list,
    form,
    h(
      "section",
      { class: "panel", "aria-labelledby": "daemon-title" },
      h("h2", { id: "daemon-title", text: "This kaged" }),
      daemon,
      h("p", {}, h("a", { href: "#/status", text: "Full status" })),
    ),
  );
  if (app.status) fillSummary(daemon, app.status);

  const load = async () => {
    const { projects } = await api("GET", "api/v1/projects");
    if (!view.alive) return;
    fill(list);
    if (projects.length === 0) {
      list.append(
        h("li", { class: "empty" }, "No projects loaded yet. Load one with the form below."),
      );
    }
    for (const p of projects) {
      list.append(
        h(
          "li",
          { class: "card", dataset: { project: p.slug } },
          h(
            "a",
            { href: `#/projects/${encodeURIComponent(p.slug)}`, class: "card-title" },
            p.slug,
          ),
          validityBadge(p.valid, p.problems),
          p.pending_weakening
            ? h("span", { class: "badge bad", text: "change to accept" })
            : null,
          (p.overlaps || []).length ? h("span", { class: "badge bad", text: "overlaps" }) : null,
          h("code", { class: "path block", text: p.root }),
        ),
      );
    }
  };
  await load();
  view.onEvent((e) => {
    if (e.type === "reconnected") load().catch(() => {});
  });
}

function fillSummary(dl, s) {
  const mode = s.mode === "system" ? "system-wide" : "per-user";
  const sandbox =
    s.sandbox_mode === "disabled"
      ? "disabled (--no-sandbox)"
      : s.sandbox.available
        ? "bubblewrap"
        : `unavailable: ${s.sandbox.problem}`;
  fill(dl,
    ...factRows([
      ["Mode", `${mode} (${s.mode_reason})`],
      ["Listening", s.url],
      ["Sign-in", s.auth],
      ["Sandbox", sandbox],
    ]),
  );
}

function factRows(rows) {
  const out = [];
  for (const [label, value, cls] of rows) {
    if (value === undefined || value === null || value === "") continue;
    out.push(h("dt", { text: label }));
    out.push(
      value instanceof Node
        ? h("dd", { class: cls }, value)
        : h("dd", { class: cls, text: String(value) }),
    );
  }
  return out;
}

/** The command agents of a resolved project (primary and nested subagents with `command`). */
function commandAgents(config) {
  const out = [];
  const walk = (name, agent) => {
    if (!agent || typeof agent !== "object") return;
    if (Array.isArray(agent.command)) out.push({ name, agent });
    for (const [sub, def] of Object.entries(agent.subagents || {})) walk(sub, def);
  };
  walk("primary", config.primary);
  return out;
}

/** Rough PTY size for a new run: the session view fits the real size on attach. */
function guessSize() {
  const cols = Math.max(20, Math.min(300, Math.floor((window.innerWidth - 24) / 8)));
  const rows = Math.max(8, Math.min(120, Math.floor((window.innerHeight - 220) / 17)));
  return { rows, cols };
}

async function viewProject(view, main, slug) {
  const { project } = await api("GET", `api/v1/projects/${encodeURIComponent(slug)}`);
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
        const body = await api("POST", `api/v1/projects/${encodeURIComponent(slug)}/reload`, {
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
      const body = await api("POST", `api/v1/projects/${encodeURIComponent(slug)}/reload`);
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
      api("GET", `api/v1/projects/${encodeURIComponent(slug)}`)
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
      await api("DELETE", `api/v1/projects/${encodeURIComponent(slug)}`);
      location.hash = "#/projects";
    } catch (e) {
      if (view.alive) actionsResult.append(errorPanel(e));
    }
  });

  // What can be started.
  const config = project.config;
  const startButtons = [];
  const starter = (label, body, detail, id) => {
    const button = h("button", { type: "button", class: "start", id }, h("span", { text: label }));
    if (detail) button.append(h("code", { class: "cmd", text: detail }));
    button.addEventListener("click", async () => {
      fill(startResult);
      for (const b of startButtons) b.disabled = true;
      try {
        const size = guessSize();
        const res = await api("POST", `api/v1/projects/${encodeURIComponent(slug)}/sessions`, {
          ...body,
          rows: size.rows,
          cols: size.cols,
        });
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
  const agents = commandAgents(config);
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
  await sessionList(view, sessions, { project: slug });
}

/* ------------------------------------------------------------------------------------------ */
/* Session lists                                                                               */
/* ------------------------------------------------------------------------------------------ */

function sessionTitle(s) {
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

function stateBadge(s) {
  return h("span", {
    class: `badge state state-${s.state}`,
    dataset: { state: s.state },
    text: stateText(s),
  });
}

/** Why a run ended, in words. */
function endedText(s) {
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

async function abortSession(id) {
  // Immediate: no confirmation. SIGHUP+SIGTERM now, SIGKILL 3 s later (server side).
  try {
    await api("POST", `api/v1/sessions/${id}/kill`);
    announce("Abort sent");
    return true;
  } catch (e) {
    announce(`Abort failed: ${e.message}`);
    throw e;
  }
}

/** A live-updating list of sessions (of one project, or all). */
async function sessionList(view, host, { project }) {
  const list = h("ul", { class: "cards sessions", id: "session-list" });
  const note = h("div");
  fill(host, list, note);
  const ids = new Set();
  const load = async () => {
    const path = project
      ? `api/v1/projects/${encodeURIComponent(project)}/sessions`
      : "api/v1/sessions?limit=200";
    const { sessions } = await api("GET", path);
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
        h("span", { class: "meta", text: meta.join(" · ") }),
      );
      const why = !isLive(s.state) ? endedText(s) : null;
      if (why && s.state !== "exited") item.append(h("span", { class: "meta", text: why }));
      if (isLive(s.state) && s.state !== "stopping") {
        const abort = h("button", {
          type: "button",
          class: "danger small",
          text: "Abort",
          "aria-label": `Abort ${sessionTitle(s)} started ${ago(s.created_at_ms)}`,
        });
        abort.addEventListener("click", () => {
          abort.disabled = true;
          abortSession(s.id).catch((e) => fill(note, errorPanel(e)));
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
    const ours = !project || (e.detail && e.detail.project === project) || ids.has(e.session);
    if (!ours) return;
    refresh();
    if (e.type === "run.ended" || e.type === "run.started") {
      const what = e.detail && e.detail.kind ? `${e.detail.kind} ${e.detail.name || ""}` : "A run";
      announce(`${what.trim()} is now ${e.state}`);
    }
  });
}

async function viewSessions(view, main) {
  const host = h("div");
  main.append(h("h1", { text: "Sessions" }), host);
  await sessionList(view, host, { project: null });
}

/* ------------------------------------------------------------------------------------------ */
/* Terminal (xterm.js on the PTY WebSocket; protocol: docs/pty-protocol.md)                    */
/* ------------------------------------------------------------------------------------------ */

const MONO = "ui-monospace, 'DejaVu Sans Mono', 'Liberation Mono', Menlo, Consolas, monospace";
const THEME = {
  background: "#101318",
  foreground: "#e3e6eb",
  cursor: "#f5c542",
  selectionBackground: "#3b5b8a",
};
const encoder = new TextEncoder();
/** Largest input frame (the server takes up to 256 KiB; pastes are chunked). */
const INPUT_CHUNK = 64 * 1024;

function newTerminal(host, readOnly) {
  if (typeof window.Terminal !== "function" || !window.FitAddon) {
    throw new Error("the terminal code (assets/vendor/xterm.js) did not load");
  }
  const narrow = window.matchMedia("(max-width: 30rem)").matches;
  const term = new window.Terminal({
    cursorBlink: !readOnly,
    disableStdin: readOnly,
    fontFamily: MONO,
    fontSize: narrow ? 12 : 14,
    scrollback: readOnly ? 20000 : 5000,
    theme: THEME,
    allowProposedApi: false,
  });
  // Ctrl+Shift+C copies the selection and Ctrl+Shift+V pastes (the browser's own paste), as in
  // desktop terminals; plain Ctrl+C stays an interrupt for the program.
  term.attachCustomKeyEventHandler((e) => {
    if (e.type !== "keydown" || !e.ctrlKey || !e.shiftKey || e.altKey || e.metaKey) return true;
    const key = e.key.toLowerCase();
    if (key === "c" && term.hasSelection()) {
      e.preventDefault();
      copyText(term.getSelection()).then(
        () => announce("Copied the selection"),
        (err) => announce(`Copy failed: ${err.message}`),
      );
      return false;
    }
    return key !== "v";
  });
  const fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(host);
  return { term, fit };
}

/** Control character for a key pressed with the on-screen Ctrl (Ctrl-C → 0x03). */
function withCtrl(data) {
  if (data.length !== 1) return data;
  const c = data.toUpperCase().charCodeAt(0);
  if (c >= 64 && c <= 95) return String.fromCharCode(c - 64);
  if (data === " " || data === "2") return "\x00";
  if (data === "?") return "\x7f";
  return data;
}

/**
 * One live terminal attached to a session's PTY channel. `offset` is the next output byte
 * wanted: everything below it has been written to this terminal. A reconnect (network drop,
 * server restart of the socket, a slow-viewer close) resumes from it: no gap, no duplicate.
 * A new page has an empty terminal, so it asks for a snapshot (`offset: null`) instead.
 */
class PtyView {
  constructor(host, id, hooks) {
    this.host = host;
    this.id = id;
    this.hooks = hooks; // onState(state), onExit(code), onStatus(kind, text)
    this.offset = null;
    this.ws = null;
    this.resumed = false;
    this.ended = false;
    this.closed = false;
    this.failures = 0;
    this.timer = null;
    this.pending = [];
    this.ctrl = false;
    const { term, fit } = newTerminal(host, false);
    this.term = term;
    this.fit = fit;
    term.onData((data) => this.input(data));
    term.onBinary((data) => {
      const bytes = new Uint8Array(data.length);
      for (let i = 0; i < data.length; i += 1) bytes[i] = data.charCodeAt(i) & 0xff;
      this.send(bytes);
    });
    term.onResize(() => this.sendResize());
    this.fitSoon = () => {
      if (this.fitFrame) return;
      this.fitFrame = requestAnimationFrame(() => {
        this.fitFrame = null;
        this.refit();
      });
    };
    this.observer = new ResizeObserver(this.fitSoon);
    this.observer.observe(host);
    window.addEventListener("orientationchange", this.fitSoon);
    this.refit();
  }

  refit() {
    if (this.closed) return;
    try {
      const dims = this.fit.proposeDimensions();
      if (dims && dims.cols >= 2 && dims.rows >= 2) this.fit.fit();
    } catch (e) {
      console.warn("fit", e);
    }
  }

  connect() {
    if (this.closed || this.ended || this.ws) return;
    clearTimeout(this.timer);
    this.timer = null;
    const ws = new WebSocket(wsUrl(`api/v1/sessions/${this.id}/pty`));
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.resumed = false;
    this.hooks.onStatus("connecting", this.failures ? "reconnecting…" : "connecting…");
    ws.onmessage = (m) => {
      if (ws !== this.ws) return;
      if (typeof m.data === "string") this.onText(m.data);
      else this.onOutput(new Uint8Array(m.data));
    };
    ws.onclose = (e) => {
      if (ws !== this.ws) return;
      this.onClose(e);
    };
  }

  onText(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    switch (msg.type) {
      case "hello":
        // Resume where this terminal stands: null on a fresh terminal (snapshot), else the
        // next byte wanted.
        this.ws.send(JSON.stringify({ type: "resume", offset: this.offset }));
        this.resumed = true;
        this.failures = 0;
        if (msg.rows !== this.term.rows || msg.cols !== this.term.cols) this.sendResize();
        for (const bytes of this.pending.splice(0)) this.ws.send(bytes);
        this.pendingBytes = 0;
        this.hooks.onStatus("live", "connected");
        break;
      case "state":
        this.hooks.onState(msg);
        break;
      case "exit":
        this.ended = true;
        this.hooks.onExit(msg.code);
        break;
      case "error":
        if (msg.code === "resume_ahead") {
          // This terminal is ahead of the output (a new run behind the same id cannot
          // happen; be safe): start over from a snapshot.
          this.offset = null;
        } else {
          this.hooks.onStatus("notice", `${msg.code}: ${msg.message}`);
        }
        break;
      default:
        break;
    }
  }

  onOutput(frame) {
    if (frame.length < 9) return;
    const kind = frame[0];
    const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
    let at = Number(view.getBigUint64(1, false));
    let data = frame.subarray(9);
    if (kind === 0x02) {
      // Snapshot: it resets the terminal and repaints the screen as of `at`.
      this.term.write(data);
      this.offset = at;
      return;
    }
    if (kind !== 0x01) return;
    if (this.offset !== null && at < this.offset) {
      // Already written (cannot happen with a correct resume; never write twice).
      const skip = this.offset - at;
      if (skip >= data.length) return;
      data = data.subarray(skip);
      at = this.offset;
    }
    this.term.write(data);
    this.offset = at + data.length;
  }

  onClose(e) {
    this.ws = null;
    this.resumed = false;
    if (this.closed) return;
    if (this.ended || e.code === 1000) {
      this.ended = true;
      this.hooks.onStatus("ended", "run ended");
      return;
    }
    if (e.code === 1008 && /revoked/.test(e.reason || "")) {
      this.hooks.onStatus("down", "disconnected: the credential was revoked");
      return;
    }
    this.failures += 1;
    if (this.failures >= 2) api("GET", "api/v1/whoami").catch(() => {});
    const delay = Math.min(5000, 250 * 2 ** Math.min(this.failures - 1, 5));
    this.hooks.onStatus(
      "reconnecting",
      e.code === 1001 ? "kaged is stopping; reconnecting…" : "connection lost; reconnecting…",
    );
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, delay);
  }

  /** Reconnect now (network back, tab visible again). */
  nudge() {
    if (!this.ws && !this.ended && !this.closed) this.connect();
  }

  input(data) {
    if (this.ctrl) {
      data = withCtrl(data);
      this.setCtrl(false);
    }
    this.send(encoder.encode(data));
  }

  send(bytes) {
    if (this.ended || this.closed) return;
    for (let i = 0; i < bytes.length; i += INPUT_CHUNK) {
      const chunk = bytes.subarray(i, i + INPUT_CHUNK);
      if (this.ws && this.resumed && this.ws.readyState === WebSocket.OPEN) {
        this.ws.send(chunk);
      } else if ((this.pendingBytes || 0) + chunk.length <= 256 * 1024) {
        // Typed while reconnecting: sent once the channel is back.
        this.pending.push(chunk.slice());
        this.pendingBytes = (this.pendingBytes || 0) + chunk.length;
      }
    }
  }

  sendResize() {
    if (this.ws && this.resumed && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: "resize", rows: this.term.rows, cols: this.term.cols }));
    }
  }

  setCtrl(on) {
    this.ctrl = on;
    if (this.hooks.onCtrl) this.hooks.onCtrl(on);
  }

  /** Stop taking input once the run has ended (the screen stays). */
  finish() {
    this.ended = true;
    this.term.options.disableStdin = true;
    this.term.options.cursorBlink = false;
  }

  dispose() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.fitFrame) cancelAnimationFrame(this.fitFrame);
    this.observer.disconnect();
    window.removeEventListener("orientationchange", this.fitSoon);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.term.dispose();
    syncScriptStyles();
  }
}

/** The visible screen of a terminal as text (for Copy without a selection). */
function screenText(term) {
  const buffer = term.buffer.active;
  const lines = [];
  for (let y = buffer.viewportY; y < buffer.viewportY + term.rows; y += 1) {
    const line = buffer.getLine(y);
    if (line) lines.push(line.translateToString(true));
  }
  while (lines.length && lines[lines.length - 1] === "") lines.pop();
  return lines.join("\n");
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  // Plain http on a LAN address is not a secure context: the old way still works.
  const area = h("textarea", { class: "offscreen", readonly: true, "aria-hidden": "true" });
  area.value = text;
  document.body.append(area);
  area.select();
  const ok = document.execCommand("copy");
  area.remove();
  if (!ok) throw new Error("the browser refused to copy");
}

/** Buttons for the keys a phone keyboard lacks (shown on touch screens and narrow windows). */
function keyButtons(pty) {
  const arrow = (letter) => () =>
    (pty.term.modes.applicationCursorKeysMode ? "\x1bO" : "\x1b[") + letter;
  const keys = [
    ["Esc", "Escape", () => "\x1b"],
    ["Tab", "Tab", () => "\t"],
    ["Ctrl", "Control: applies to the next key", null],
    ["←", "Arrow left", arrow("D")],
    ["↑", "Arrow up", arrow("A")],
    ["↓", "Arrow down", arrow("B")],
    ["→", "Arrow right", arrow("C")],
    ["|", "Pipe", () => "|"],
    ["~", "Tilde", () => "~"],
    ["/", "Slash", () => "/"],
  ];
  let ctrlButton = null;
  const buttons = keys.map(([label, name, seq]) => {
    const button = h("button", {
      type: "button",
      class: "key term-key",
      "aria-label": name,
      dataset: { key: label },
      text: label,
    });
    // Keep the focus (and a phone's keyboard) in the terminal.
    button.addEventListener("pointerdown", (e) => e.preventDefault());
    if (seq === null) {
      ctrlButton = button;
      button.setAttribute("aria-pressed", "false");
      button.addEventListener("click", () => {
        pty.setCtrl(!pty.ctrl);
        pty.term.focus();
      });
    } else {
      button.addEventListener("click", () => {
        pty.input(seq());
        pty.term.focus();
      });
    }
    return button;
  });
  pty.hooks.onCtrl = (on) => ctrlButton.setAttribute("aria-pressed", on ? "true" : "false");
  return buttons;
}

/** The terminal's toolbar: keys (for touch), Copy and, for a live run, Paste. */
function termToolbar(buttons) {
  return h(
    "div",
    { class: "keybar", id: "keybar", role: "toolbar", "aria-label": "Terminal keys" },
    buttons,
  );
}

function clipboardButtons(termOf, pasteInto) {
  const out = [];
  const copy = h("button", {
    type: "button",
    class: "key clip-key",
    id: "copy",
    text: "Copy",
    "aria-label": "Copy the selection, or the screen",
  });
  copy.addEventListener("pointerdown", (e) => e.preventDefault());
  copy.addEventListener("click", async () => {
    const term = termOf();
    const selected = term.getSelection();
    const text = selected || screenText(term);
    try {
      await copyText(text);
      announce(selected ? "Copied the selection" : "Copied the screen");
    } catch (e) {
      announce(`Copy failed: ${e.message}`);
    }
  });
  out.push(copy);
  if (pasteInto) {
    const paste = h("button", {
      type: "button",
      class: "key clip-key",
      id: "paste",
      text: "Paste",
      "aria-label": "Paste into the terminal",
    });
    paste.addEventListener("pointerdown", (e) => e.preventDefault());
    paste.addEventListener("click", async () => {
      let text = null;
      try {
        if (navigator.clipboard && navigator.clipboard.readText) {
          text = await navigator.clipboard.readText();
        }
      } catch {
        text = null;
      }
      if (text === null) text = window.prompt("Text to paste into the terminal:");
      if (text) pasteInto(text);
      termOf().focus();
    });
    out.push(paste);
  }
  return out;
}

/* ------------------------------------------------------------------------------------------ */
/* Session view                                                                                */
/* ------------------------------------------------------------------------------------------ */

async function viewSession(view, main, id) {
  const body = await api("GET", `api/v1/sessions/${id}`);
  if (!view.alive) return;
  let session = body.session;
  document.body.classList.add("session-page");
  view.onDispose(() => document.body.classList.remove("session-page"));

  const badgeHost = h("span", { id: "session-state", "aria-live": "polite" });
  const endedLine = h("p", { class: "ended-line", id: "session-ended", hidden: true });
  const status = h("span", { class: "conn", id: "conn", "aria-live": "polite" });
  const notice = h("div", { id: "session-notice" });
  const abort = h("button", {
    type: "button",
    class: "danger",
    id: "abort",
    text: "Abort",
    "aria-label": "Abort this run now",
  });
  const termHost = h("div", { class: "term", id: "terminal" });
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
  };

  abort.addEventListener("click", async () => {
    abort.disabled = true;
    fill(notice);
    try {
      await abortSession(id);
      if (isLive(session.state)) {
        session = { ...session, state: "stopping", reason: app.who && app.who.id };
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
    tools,
    h(
      "details",
      { class: "more" },
      h("summary", { text: "Details" }),
      h(
        "dl",
        { class: "facts" },
        factRows([
          ["Session", session.id, "mono"],
          ["Command", (session.command || []).join(" "), "mono"],
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
          text: "Download the transcript (raw bytes)",
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

  const refreshSession = async () => {
    try {
      const b = await api("GET", `api/v1/sessions/${id}`);
      if (!view.alive) return;
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

  if (!isLive(session.state) || app.readOnly) {
    if (app.readOnly && isLive(session.state)) {
      fill(
        notice,
        h("p", {
          class: "notice",
          text: "Read-only access (--insecure-readonly): the live terminal needs signing in; this is the output so far.",
        }),
      );
    }
    await replayTranscript(view, termHost, tools, status, session);
    return;
  }

  // Live: attach.
  const pty = new PtyView(termHost, id, {
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
async function replayTranscript(view, termHost, tools, status, session) {
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
  const response = await api("GET", `api/v1/sessions/${session.id}/transcript?start=${start}`);
  if (!view.alive || !response) return;
  const bytes = new Uint8Array(await response.arrayBuffer());
  if (!view.alive) return;
  await new Promise((resolve) => term.write(bytes, resolve));
  termHost.dataset.loaded = "true";
}

/* ------------------------------------------------------------------------------------------ */
/* Status                                                                                      */
/* ------------------------------------------------------------------------------------------ */

async function viewStatus(view, main) {
  const s = await api("GET", "api/v1/status");
  if (!view.alive) return;
  app.status = s;
  showWarnings(s.warnings);
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
      ["You", app.who ? `${app.who.id} (${app.who.method})` : null],
    ]),
    section("Sandbox", "sandbox-title", [
      ["Mode", s.sandbox.mode],
      ["Cages", s.sandbox.available ? "available" : `unavailable: ${s.sandbox.problem}`],
      ["Limits", s.sandbox.limits],
    ]),
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

/* ------------------------------------------------------------------------------------------ */
/* Audit                                                                                       */
/* ------------------------------------------------------------------------------------------ */

async function viewAudit(view, main) {
  const kind = h(
    "select",
    { id: "audit-kind", name: "kind" },
    h("option", { value: "", text: "All" }),
  );
  const outcome = h(
    "select",
    { id: "audit-outcome", name: "outcome" },
    h("option", { value: "", text: "All" }),
    h("option", { value: "success", text: "Success" }),
    h("option", { value: "failure", text: "Failure" }),
  );
  const who = h("input", {
    id: "audit-who",
    name: "who",
    type: "search",
    autocomplete: "off",
    autocapitalize: "off",
  });
  const text = h("input", {
    id: "audit-text",
    name: "text",
    type: "search",
    autocomplete: "off",
    autocapitalize: "off",
  });
  const limit = h(
    "select",
    { id: "audit-limit", name: "limit" },
    ["100", "500", "1000"].map((n) => h("option", { value: n, text: n })),
  );
  const field = (label, control) =>
    h("div", { class: "field" }, h("label", { for: control.id, text: label }), control);
  const count = h("p", { class: "muted small", id: "audit-count", "aria-live": "polite" });
  const rows = h("tbody");
  const table = h(
    "table",
    { class: "audit", id: "audit-table" },
    h("caption", { class: "visually-hidden", text: "Audit events, newest first" }),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Time", "Event", "Outcome", "Who", "From", "Detail"].map((t) =>
          h("th", { scope: "col", text: t }),
        ),
      ),
    ),
    rows,
  );
  const refresh = h("button", { type: "button", id: "audit-refresh", text: "Refresh" });
  main.append(
    h("h1", { text: "Audit log" }),
    h(
      "form",
      { class: "filters", id: "audit-filters", role: "search", "aria-label": "Filter the audit log" },
      field("Event", kind),
      field("Outcome", outcome),
      field("Who", who),
      field("Text", text),
      field("Newest", limit),
      h("div", { class: "field end" }, refresh),
    ),
    count,
    h("div", { class: "scroll-x" }, table),
  );
  let events = [];
  const apply = () => {
    const k = kind.value;
    const o = outcome.value;
    const w = who.value.trim().toLowerCase();
    const t = text.value.trim().toLowerCase();
    const shown = events.filter(
      (e) =>
        (!k || e.kind === k || e.kind.startsWith(`${k}.`)) &&
        (!o || e.outcome === o) &&
        (!w || (e.identity || "").toLowerCase().includes(w)) &&
        (!t || JSON.stringify(e).toLowerCase().includes(t)),
    );
    fill(rows,
      ...shown.map((e) =>
        h(
          "tr",
          { dataset: { kind: e.kind, outcome: e.outcome } },
          h(
            "td",
            { "data-label": "Time" },
            h("time", { datetime: new Date(e.ts_ms).toISOString(), text: fmtTime(e.ts_ms) }),
          ),
          h("td", { "data-label": "Event", class: "mono", text: e.kind }),
          h(
            "td",
            { "data-label": "Outcome" },
            h("span", { class: `badge ${e.outcome === "success" ? "ok" : "bad"}`, text: e.outcome }),
          ),
          h("td", { "data-label": "Who", text: e.identity || "—" }),
          h("td", { "data-label": "From", class: "mono", text: e.source || "—" }),
          h("td", {
            "data-label": "Detail",
            class: "mono detail",
            text: JSON.stringify(e.detail),
          }),
        ),
      ),
    );
    count.textContent = `${shown.length} of ${events.length} events`;
  };
  const load = async () => {
    const body = await api("GET", `api/v1/audit?limit=${encodeURIComponent(limit.value)}`);
    if (!view.alive) return;
    events = body.events;
    const kinds = new Set();
    for (const e of events) {
      kinds.add(e.kind);
      kinds.add(e.kind.split(".")[0]);
    }
    const current = kind.value;
    fill(kind,
      h("option", { value: "", text: "All" }),
      [...kinds].sort().map((k) => h("option", { value: k, text: k.includes(".") ? k : `${k}.*` })),
    );
    kind.value = kinds.has(current) ? current : "";
    apply();
  };
  for (const control of [kind, outcome]) control.addEventListener("change", apply);
  for (const control of [who, text]) {
    control.addEventListener("input", apply);
    control.addEventListener("change", apply); // a cleared field may only say "change"
  }
  limit.addEventListener("change", () => load().catch((e) => fill(count, errorPanel(e))));
  refresh.addEventListener("click", () => load().catch((e) => fill(count, errorPanel(e))));
  main.querySelector("form").addEventListener("submit", (e) => e.preventDefault());
  await load();
}

/* ------------------------------------------------------------------------------------------ */
/* Start                                                                                       */
/* ------------------------------------------------------------------------------------------ */

async function boot() {
  $("sign-out").addEventListener("click", signOut);
  $("skip").addEventListener("click", (e) => {
    e.preventDefault();
    const title = $("kaged-console").querySelector("h1");
    (title || $("kaged-console")).setAttribute("tabindex", "-1");
    (title || $("kaged-console")).focus();
  });
  try {
    const who = await api("GET", "api/v1/whoami");
    app.who = who;
    app.csrf = who.csrf_token || null;
    $("who").textContent = who.id;
    $("who").title = `signed in by ${who.method}`;
    // Only a browser session can sign out here; other methods end elsewhere.
    $("sign-out").hidden = who.method !== "session";
    app.readOnly = who.method === "insecure_readonly";
    app.status = await api("GET", "api/v1/status");
    showWarnings(app.status.warnings);
  } catch (e) {
    if (app.signedOut) return;
    $("kaged-console").replaceChildren(h("h1", { text: "kaged" }), errorPanel(e));
    return;
  }
  document.body.dataset.state = "ready";
  // Warnings can appear while the daemon runs (storage failing, e.g. a full disk): refresh
  // the banner now and then.
  setInterval(() => {
    if (app.signedOut || document.visibilityState !== "visible") return;
    api("GET", "api/v1/status")
      .then((s) => {
        app.status = s;
        showWarnings(s.warnings);
      })
      .catch(() => {});
  }, 15000);
  app.events = new EventStream();
  // --insecure-readonly serves plain reads only: no streams (views still work, unlive).
  if (!app.readOnly) app.events.start();
  window.addEventListener("online", () => app.events.nudge());
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") app.events.nudge();
  });
  window.addEventListener("hashchange", route);
  await route();
}

document.addEventListener("DOMContentLoaded", () => {
  boot().catch((e) => console.error(e));
});
