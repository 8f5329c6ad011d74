// DOM and formatting helpers shared by every screen. Untrusted text (project files, output,
// audit details) only ever reaches the DOM through textContent (`h`'s `text`, `fill`'s
// strings); nothing is parsed as HTML.

/** Create an element: `h("a", {href: "#/x", class: "c", text: "t", onclick: f}, child…)`. */
export function h(tag, props, ...children) {
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

export const $ = (id) => document.getElementById(id);

/** Replace an element's children (arrays flattened; null, undefined and false skipped). */
export function fill(el, ...children) {
  el.replaceChildren(
    ...children
      .flat(Infinity)
      .filter((c) => c !== undefined && c !== null && c !== false)
      .map((c) => (c instanceof Node ? c : String(c))),
  );
  return el;
}

export function fmtTime(ms) {
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
export function fmtWhen(ms) {
  if (!ms) return "—";
  const d = new Date(ms);
  if (d.toDateString() === new Date().toDateString()) {
    return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  }
  return fmtTime(ms);
}

export function ago(ms) {
  if (!ms) return "";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function fmtBytes(n) {
  if (n == null) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}

export function fmtDuration(secs) {
  const d = Math.floor(secs / 86400);
  const hh = Math.floor((secs % 86400) / 3600);
  const mm = Math.floor((secs % 3600) / 60);
  const ss = secs % 60;
  if (d) return `${d} d ${hh} h`;
  if (hh) return `${hh} h ${mm} min`;
  if (mm) return `${mm} min ${ss} s`;
  return `${ss} s`;
}

/** Say something to screen readers (the polite live region). */
export function announce(text) {
  const region = $("announce");
  region.textContent = "";
  // A new text node after a tick, so the same message twice is announced twice.
  setTimeout(() => {
    region.textContent = text;
  }, 30);
}

/** An API error (or any error) as an alert, with the diagnostics it carries. */
export function errorPanel(e, { diagnostics = true } = {}) {
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

/** Project-file diagnostics: where, which key, what is wrong, how to fix it. */
export function diagnosticsList(diags) {
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

/** `<dt>`/`<dd>` pairs for a `<dl class="facts">`; rows with no value are left out. */
export function factRows(rows) {
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
