// The Audit screen (`#/audit`): the newest audit events, filtered in the page by event kind,
// outcome, who and text.

import { errorPanel, fill, fmtTime, h } from "./dom.js";

export async function viewAudit(ctx, view, main) {
  const { api } = ctx;
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
    const body = await api.call("GET", `api/v1/audit?limit=${encodeURIComponent(limit.value)}`);
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
