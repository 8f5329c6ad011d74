// The API client. Every URL is relative (`api/v1/...`) and WebSocket URLs are derived from the
// page's own URL, so the console works under a sidecar's path prefix. Every request is
// same-origin with credentials; every state change carries X-Kaged-CSRF (from GET
// api/v1/whoami). A 401 `unauthenticated` is reported to the shell, which shows the signed-out
// state.

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export class ApiClient {
  /** `onUnauthenticated()` runs on a 401 that signing in again would fix. */
  constructor(onUnauthenticated) {
    this.onUnauthenticated = onUnauthenticated;
    this.csrf = null;
  }

  /**
   * One API call. `path` is relative (`api/v1/...`). JSON in, JSON out; a non-JSON success
   * (a transcript) returns the Response. Errors throw ApiError with the stable error code.
   */
  async call(method, path, body) {
    const init = { method, credentials: "same-origin", headers: {} };
    if (method !== "GET" && method !== "HEAD" && this.csrf) {
      init.headers["X-Kaged-CSRF"] = this.csrf;
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
      this.onUnauthenticated();
    }
    throw new ApiError(
      response.status,
      error.code || "http",
      error.message || `HTTP ${response.status}`,
      error.details,
    );
  }

  /** Ask whether we are still signed in (a refused WebSocket upgrade looks like a drop). */
  recheck() {
    this.call("GET", "api/v1/whoami").catch(() => {});
  }
}

/** A WebSocket URL for a path relative to the page (keeps a sidecar's path prefix). */
export function wsUrl(path) {
  const url = new URL(path, document.baseURI);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.hash = "";
  return url.href;
}
