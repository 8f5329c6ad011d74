// The console's service worker, served at `/sw.js` (not under assets/: a worker's scope can
// only be its own folder or below). Phones' browsers (Chrome on Android) show a page's
// notifications only through a service worker's registration, so notifications.js registers
// this file (`sw.js`, scope `./`: the console's own path, under a sidecar's prefix too) and
// shows each notification with `registration.showNotification`.
//
// It does one thing: a click on a notification focuses an open console window (or opens one)
// at the approval's link (the notification's `data.url`, when it is a route of this console),
// else at `#/approvals`. No caching, no fetch handler, no push: every request goes to the
// network as if this worker did not exist.

"use strict";

/** Where a click leads: `data.url` when it is an approvals route of this console, else its list. */
function target(data) {
  const scope = self.registration.scope;
  try {
    const url = new URL(data && typeof data.url === "string" ? data.url : "#/approvals", scope);
    if (url.href.split("#")[0] === scope && url.hash.startsWith("#/approvals")) return url.href;
  } catch {
    // Not a URL: the list.
  }
  return new URL("#/approvals", scope).href;
}

/** Focus a console window and tell it where to go (notifications.js), or open one there. */
async function openConsole(url) {
  const scope = self.registration.scope;
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  const open = windows.filter((c) => c.url.split("#")[0] === scope);
  const client =
    open.find((c) => c.focused) || open.find((c) => c.visibilityState === "visible") || open[0];
  if (!client) {
    await self.clients.openWindow(url);
    return;
  }
  // This worker controls no page (it handles no fetch), so `client.navigate` is not allowed:
  // the page changes its own route when told.
  client.postMessage({ kind: "kaged.open", url });
  try {
    await client.focus();
  } catch {
    // The browser refused the focus; the page has its route all the same.
  }
}

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(openConsole(target(event.notification.data)));
});
