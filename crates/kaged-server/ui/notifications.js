// Browser notifications for new approvals (the Notifications API), on the devices where the
// operator asked for them: "Notify me on this device" on the Approvals screen asks the browser
// (a user gesture is needed), and the choice is remembered in localStorage. A notification is
// shown only for an approval requested while this page is hidden; it says the tool, the
// project and the agent, never the arguments. Clicking it brings the page to #/approvals.

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
  if (permission === "granted") store("on");
  return notificationState();
}

export function disableNotifications() {
  store("off");
}

/** Tell the operator about a new approval, if this device wants it and the page is hidden. */
export function notifyApproval(a) {
  if (notificationState() !== "on" || document.visibilityState !== "hidden") return false;
  const where = [a.project, a.agent].filter(Boolean).join(" / ");
  let n;
  try {
    n = new Notification(`Approval needed: ${a.tool}`, {
      body: where,
      tag: `kaged-approval-${a.id}`,
    });
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
