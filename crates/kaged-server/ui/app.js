// kaged operator console: projects, sessions (live terminals over the PTY WebSocket), plugins,
// status and the audit log. Native ES modules, no build step; xterm.js and its fit addon are the only
// third-party code (classic scripts served from assets/vendor/, fetched from npm at build
// time). This entry module is the shell: sign-in state, the header, the warning banner, the
// signed-out page; it wires the API client, the event stream and the router, and hands the
// screens one context (`ctx`) instead of sharing global state.
//
// Rules every module keeps:
// - Every URL is relative (`api/v1/...`, `assets/...`; imports are `./x.js`), so the console
//   works under a sidecar's path prefix.
// - Untrusted text only ever reaches the DOM through textContent; nothing is parsed as HTML.
//   No inline scripts or styles, no eval (the CSP is strict).

// First: its listeners and the style shim must be in place before anything else runs.
import "./csp.js";
import { ApiClient } from "./api.js";
import { PendingApprovals } from "./approvals.js";
import { $, announce, errorPanel, fill, h } from "./dom.js";
import { EventStream } from "./events.js";
import { notifyApproval } from "./notifications.js";
import { Router } from "./router.js";
import { viewApprovals } from "./screen-approvals.js";
import { viewAudit } from "./screen-audit.js";
import { viewProject } from "./screen-project.js";
import { viewProjects } from "./screen-projects.js";
import { viewPlugins } from "./screen-plugins.js";
import { viewSession } from "./screen-session.js";
import { viewSessions } from "./screen-sessions.js";
import { viewStatus } from "./screen-status.js";

const ROUTES = [
  [/^#\/projects\/?$/, "projects", viewProjects],
  [/^#\/projects\/([A-Za-z0-9._-]+)$/, "projects", viewProject],
  [/^#\/sessions\/?$/, "sessions", viewSessions],
  [/^#\/sessions\/([0-9a-f]{32})$/, "sessions", viewSession],
  [/^#\/approvals\/?$/, "approvals", viewApprovals],
  [/^#\/approvals\/([A-Za-z0-9_-]{1,64})$/, "approvals", viewApprovals],
  [/^#\/plugins\/?$/, "plugins", viewPlugins],
  [/^#\/status$/, "status", viewStatus],
  [/^#\/audit$/, "audit", viewAudit],
];

/** What the shell itself tracks; the screens see it only through `ctx`. */
const shell = { signedOut: false, router: null, events: null };
const api = new ApiClient(showSignedOut);
/** The page's title without the count of pending approvals. */
const baseTitle = document.title;

/** The count of pending approvals: on the nav entry and before the page title. */
function showApprovalCount(n) {
  const badge = $("approvals-count");
  badge.textContent = n > 0 ? String(n) : "";
  badge.hidden = n === 0;
  const link = $("nav-approvals");
  if (n > 0) link.setAttribute("aria-label", `Approvals: ${n} waiting`);
  else link.removeAttribute("aria-label");
  document.title = n > 0 ? `(${n}) ${baseTitle}` : baseTitle;
  document.body.dataset.approvals = String(n);
}

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

function showSignedOut() {
  if (shell.signedOut) return;
  shell.signedOut = true;
  if (shell.router) shell.router.dispose();
  if (shell.events) shell.events.stop();
  document.title = baseTitle;
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
    await api.call("POST", "api/v1/auth/logout");
  } catch (e) {
    if (e.status !== 401) {
      announce(`Sign-out failed: ${e.message}`);
      return;
    }
  }
  showSignedOut();
}

async function boot() {
  $("sign-out").addEventListener("click", signOut);
  $("skip").addEventListener("click", (e) => {
    e.preventDefault();
    const title = $("kaged-console").querySelector("h1");
    (title || $("kaged-console")).setAttribute("tabindex", "-1");
    (title || $("kaged-console")).focus();
  });
  let who;
  let status;
  try {
    who = await api.call("GET", "api/v1/whoami");
    api.csrf = who.csrf_token || null;
    $("who").textContent = who.id;
    $("who").title = `signed in by ${who.method}`;
    // Only a browser session can sign out here; other methods end elsewhere.
    $("sign-out").hidden = who.method !== "session";
    status = await api.call("GET", "api/v1/status");
    showWarnings(status.warnings);
  } catch (e) {
    if (shell.signedOut) return;
    $("kaged-console").replaceChildren(h("h1", { text: "kaged" }), errorPanel(e));
    return;
  }
  document.body.dataset.state = "ready";
  const events = new EventStream(api);
  shell.events = events;
  // --insecure-readonly serves plain reads only: no streams (listed once, not live).
  const approvals = new PendingApprovals(api, who.method === "insecure_readonly" ? null : events);
  approvals.on((change) => {
    showApprovalCount(approvals.count);
    if (change.kind === "requested" && change.live) notifyApproval(change.approval);
  });
  /** What every screen gets: the API, the event stream, who is signed in, the last status. */
  const ctx = {
    api,
    events,
    approvals,
    who,
    readOnly: who.method === "insecure_readonly",
    status,
    /** A fresh GET api/v1/status: kept for the screens, its warnings shown in the banner. */
    setStatus(next) {
      ctx.status = next;
      showWarnings(next.warnings);
    },
    isSignedOut: () => shell.signedOut,
  };
  // Warnings can appear while the daemon runs (storage failing, e.g. a full disk): refresh
  // the banner now and then.
  setInterval(() => {
    if (shell.signedOut || document.visibilityState !== "visible") return;
    api
      .call("GET", "api/v1/status")
      .then((s) => ctx.setStatus(s))
      .catch(() => {});
  }, 15000);
  // --insecure-readonly serves plain reads only: no streams (views still work, unlive).
  approvals.start();
  if (!ctx.readOnly) events.start();
  window.addEventListener("online", () => events.nudge());
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") events.nudge();
  });
  const router = new Router({ main: $("kaged-console"), routes: ROUTES, ctx });
  shell.router = router;
  window.addEventListener("hashchange", () => router.route());
  await router.route();
}

document.addEventListener("DOMContentLoaded", () => {
  boot().catch((e) => console.error(e));
});
