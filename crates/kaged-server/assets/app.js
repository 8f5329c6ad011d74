// kaged minimal console: shows the daemon status and signs out. Same-origin only; the CSRF
// token comes from /api/v1/whoami and is echoed in X-Kaged-CSRF on state-changing requests.
"use strict";

let csrfToken = null;

async function getJson(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  if (response.status === 401) {
    window.location.reload(); // the server shows the "run kaged auth open" page
    throw new Error("signed out");
  }
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function row(list, label, value) {
  const dt = document.createElement("dt");
  dt.textContent = label;
  const dd = document.createElement("dd");
  dd.textContent = value;
  list.append(dt, dd);
}

async function load() {
  const who = await getJson("/api/v1/whoami");
  csrfToken = who.csrf_token;
  document.getElementById("who").textContent = who.id;
  const s = await getJson("/api/v1/status");
  const list = document.getElementById("status");
  list.replaceChildren();
  const mode = s.mode === "system" ? "system-wide" : "per-user";
  row(list, "Mode", `${mode} (${s.mode_reason})`);
  row(list, "Listening", s.url);
  row(list, "Auth", s.auth_mode);
  row(list, "Sandbox", s.sandbox_mode);
  row(list, "Version", s.version);
  row(list, "PID", String(s.pid));
  row(list, "Config", s.paths.config_file);
  row(list, "Data", s.paths.data_dir);
  row(list, "Database", `${s.storage.url} (schema ${s.storage.schema_version})`);
  if (s.warnings.length > 0) {
    const banner = document.getElementById("warnings");
    banner.textContent = s.warnings.join(" · ");
    banner.hidden = false;
  }
}

async function signOut() {
  await fetch("/api/v1/auth/logout", {
    method: "POST",
    credentials: "same-origin",
    headers: { "X-Kaged-CSRF": csrfToken || "" },
  });
  window.location.reload();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("sign-out").addEventListener("click", signOut);
  load().catch((e) => console.error(e));
});
