// The Projects screen (`#/projects`): the loaded projects, the form that loads one, and a
// summary of this kaged.

import { announce, errorPanel, factRows, fill, h } from "./dom.js";

export function validityBadge(valid, problems) {
  return valid
    ? h("span", { class: "badge ok", text: "valid" })
    : h("span", {
        class: "badge bad",
        text: `${problems} problem${problems === 1 ? "" : "s"}`,
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

export async function viewProjects(ctx, view, main) {
  const { api } = ctx;
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
      const body = await api.call("POST", "api/v1/projects/load", { path: input.value.trim() });
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
  if (ctx.status) fillSummary(daemon, ctx.status);

  const load = async () => {
    const { projects } = await api.call("GET", "api/v1/projects");
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
