// The hash router (`#/projects`, `#/sessions/ID`, …) and each page's lifetime. A screen is
// `async (ctx, view, main, ...params)`: it fills `main`, registers cleanups on `view`, and
// checks `view.alive` after every await (it turns false when the user navigates away).

import { errorPanel, fill, h } from "./dom.js";

/** One page's lifetime: its cleanups and its event-stream listeners. */
class View {
  constructor(events) {
    this.alive = true;
    this.disposers = [];
    this.events = events;
  }

  onDispose(fn) {
    this.disposers.push(fn);
  }

  /** Listen to the event stream for this view's life. */
  onEvent(fn) {
    this.onDispose(this.events.on(fn));
  }

  dispose() {
    this.alive = false;
    for (const fn of this.disposers.reverse()) {
      try {
        fn();
      } catch (e) {
        console.error(e);
      }
    }
  }
}

export function viewNotFound(ctx, view, main) {
  main.append(
    h("h1", { text: "Not found" }),
    h("p", {}, "There is no such page. ", h("a", { href: "#/projects", text: "Projects" })),
  );
}

export class Router {
  /**
   * `routes`: [pattern, nav section, screen]; the pattern's groups are the screen's params.
   * `ctx` is handed to every screen; `ctx.isSignedOut()` stops routing once signed out.
   */
  constructor({ main, routes, ctx }) {
    this.main = main;
    this.routes = routes;
    this.ctx = ctx;
    this.view = null;
    this.firstRoute = true;
  }

  /** End the current page (navigating away, or signed out). */
  dispose() {
    const view = this.view;
    this.view = null;
    if (view) view.dispose();
  }

  async route() {
    const { ctx, main } = this;
    if (ctx.isSignedOut()) return;
    let hash = location.hash || "#/projects";
    if (!hash.startsWith("#/")) {
      if (!this.firstRoute) return; // an in-page anchor, not a route
      hash = "#/projects";
    }
    this.dispose();
    fill(main);
    const view = new View(ctx.events);
    this.view = view;
    let section = null;
    let render = viewNotFound;
    let params = [];
    for (const [re, nav, fn] of this.routes) {
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
      await render(ctx, view, main, ...params);
    } catch (e) {
      if (!view.alive || ctx.isSignedOut()) return;
      if (!main.querySelector("h1")) main.append(h("h1", { text: "Not available" }));
      main.append(errorPanel(e));
    } finally {
      if (view.alive) main.removeAttribute("aria-busy");
    }
    if (!view.alive || ctx.isSignedOut()) return;
    // Move focus to the new page's heading (not on first load: the user has not moved yet;
    // not when the page put it somewhere itself, as the session view does on its terminal).
    const placed = main.contains(document.activeElement) && document.activeElement !== main;
    if (!this.firstRoute && !placed) {
      const title = main.querySelector("h1");
      if (title) {
        title.setAttribute("tabindex", "-1");
        title.focus({ preventScroll: false });
      }
    }
    this.firstRoute = false;
  }
}
