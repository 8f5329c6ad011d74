// Browser notifications for new approvals, on the devices where the operator asked for them:
// "Notify me on this device" on the Approvals screen asks the browser (a user gesture is
// needed), and the choice is remembered in localStorage. A notification is shown only for an
// approval requested while this page is hidden; it says the tool, the project and the agent,
// never the arguments. Phones' browsers show notifications only through a service worker, so
// where there are service workers the console registers its own (sw.js, scope `./`) on enabling
// and shows them with `registration.showNotification` (tag: the approval's id, data: its link,
// `#/approvals/ID`); elsewhere with `new Notification`. Clicking one brings a console window to
// the approval (sw.js tells this page where to go: the `kaged.open` message below).

const KEY = "kaged.notifyApprovals";
/** The choice made on this page (when localStorage refuses to keep it). */
let memory = null;

function stored() {
  try {
    return localStorage.getItem(KEY);
  } catch {
    return null;
  }
}

function store(value) {
  try {
    localStorage.setItem(KEY, value);
  } catch {
    // Storage refused (a private window's quota): the choice lasts for this page only.
  }
  memory = value;
}

/**
 * Where this device stands: `unsupported` (no Notifications API), `insecure` (not HTTPS or
 * localhost: the browser refuses), `blocked` (the operator or the browser said no), `on`, `off`.
 */
export function notificationState() {
  if (typeof window.Notification !== "function") return "unsupported";
  if (!window.isSecureContext) return "insecure";
  if (Notification.permission === "denied") return "blocked";
  const choice = memory || stored();
  if (Notification.permission === "granted" && choice === "on") return "on";
  return "off";
}

/** Ask the browser (call from a click); the state after. */
export async function enableNotifications() {
  const state = notificationState();
  if (state === "unsupported" || state === "insecure" || state === "blocked") return state;
  let permission = Notification.permission;
  if (permission !== "granted") {
    try {
      permission = await Notification.requestPermission();
    } catch {
      permission = "denied";
    }
  }
  if (permission === "granted") {
    store("on");
    // Registered now, on the operator's click, so it is active when an approval comes.
    await workerRegistration();
  }
  return notificationState();
}

/** The service worker's path and scope, relative to the page (a sidecar's prefix included). */
const WORKER = "sw.js";
const SCOPE = "./";
/** How long to wait for a just-registered worker to become active. */
const READY_MS = 10000;

/**
 * The console's service worker registration, active, registering it when this page has none;
 * null without service workers or when the browser refuses it.
 */
async function workerRegistration() {
  if (!("serviceWorker" in navigator)) return null;
  try {
    const existing = await navigator.serviceWorker.getRegistration(SCOPE);
    if (existing && existing.active) return existing;
    if (!existing) await navigator.serviceWorker.register(WORKER, { scope: SCOPE });
    let timer;
    const late = new Promise((resolve) => {
      timer = setTimeout(() => resolve(null), READY_MS);
    });
    const ready = await Promise.race([navigator.serviceWorker.ready, late]);
    clearTimeout(timer);
    return ready;
  } catch {
    return null;
  }
}

/** sw.js, on a click on a notification, tells the console window it focused where to go. */
function listenToWorker() {
  if (!("serviceWorker" in navigator)) return;
  navigator.serviceWorker.addEventListener("message", (e) => {
    const data = e.data;
    if (!data || data.kind !== "kaged.open" || typeof data.url !== "string") return;
    let url;
    try {
      url = new URL(data.url, location.href);
    } catch {
      return;
    }
    const here = location.href.split("#")[0];
    if (url.href.split("#")[0] === here && url.hash.startsWith("#/approvals")) {
      location.hash = url.hash;
    }
  });
  navigator.serviceWorker.startMessages();
}

try {
  listenToWorker();
} catch {
  // A browser that has service workers but refuses them to this page: no clicks to follow.
}

export function disableNotifications() {
  store("off");
}

/**
 * Tell the operator about a new approval, if this device wants it and the page is hidden: through
 * the service worker where there is one, else `new Notification`. Resolves to whether one was
 * shown.
 */
export async function notifyApproval(a) {
  if (notificationState() !== "on" || document.visibilityState !== "hidden") return false;
  // The tool, the project and the agent: never the arguments.
  const title = `Approval needed: ${a.tool}`;
  const body = [a.project, a.agent].filter(Boolean).join(" / ");
  const link = `#/approvals/${encodeURIComponent(a.id)}`;
  const registration = await workerRegistration();
  if (registration) {
    try {
      await registration.showNotification(title, {
        body,
        tag: a.id,
        data: { url: new URL(link, location.href).href },
      });
      return true;
    } catch {
      // Refused (the permission was taken back?): try the page's own notification.
    }
  }
  let n;
  try {
    n = new Notification(title, { body, tag: a.id });
  } catch {
    // Mobile Chrome only shows notifications through a service worker: nothing to do here.
    return false;
  }
  n.onclick = (e) => {
    e.preventDefault();
    window.focus();
    location.hash = "#/approvals";
    n.close();
  };
  return true;
}
