// The terminal view: xterm.js (a classic script, `window.Terminal` and `window.FitAddon`, from
// assets/vendor/) set up for the console, the on-screen keys a phone keyboard lacks, and Copy
// and Paste. What is connected to it (a live PTY, a transcript) is the caller's business.

import { announce, h } from "./dom.js";

const MONO = "ui-monospace, 'DejaVu Sans Mono', 'Liberation Mono', Menlo, Consolas, monospace";
const THEME = {
  background: "#101318",
  foreground: "#e3e6eb",
  cursor: "#f5c542",
  selectionBackground: "#3b5b8a",
};

/** A terminal opened in `host`: `{term, fit}`. Read-only terminals take no input. */
export function newTerminal(host, readOnly) {
  if (typeof window.Terminal !== "function" || !window.FitAddon) {
    throw new Error("the terminal code (assets/vendor/xterm.js) did not load");
  }
  const narrow = window.matchMedia("(max-width: 30rem)").matches;
  const term = new window.Terminal({
    cursorBlink: !readOnly,
    disableStdin: readOnly,
    fontFamily: MONO,
    fontSize: narrow ? 12 : 14,
    scrollback: readOnly ? 20000 : 5000,
    theme: THEME,
    allowProposedApi: false,
  });
  // Ctrl+Shift+C copies the selection and Ctrl+Shift+V pastes (the browser's own paste), as in
  // desktop terminals; plain Ctrl+C stays an interrupt for the program.
  term.attachCustomKeyEventHandler((e) => {
    if (e.type !== "keydown" || !e.ctrlKey || !e.shiftKey || e.altKey || e.metaKey) return true;
    const key = e.key.toLowerCase();
    if (key === "c" && term.hasSelection()) {
      e.preventDefault();
      copyText(term.getSelection()).then(
        () => announce("Copied the selection"),
        (err) => announce(`Copy failed: ${err.message}`),
      );
      return false;
    }
    return key !== "v";
  });
  const fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(host);
  return { term, fit };
}

/** Control character for a key pressed with the on-screen Ctrl (Ctrl-C → 0x03). */
export function withCtrl(data) {
  if (data.length !== 1) return data;
  const c = data.toUpperCase().charCodeAt(0);
  if (c >= 64 && c <= 95) return String.fromCharCode(c - 64);
  if (data === " " || data === "2") return "\x00";
  if (data === "?") return "\x7f";
  return data;
}

/** The visible screen of a terminal as text (for Copy without a selection). */
function screenText(term) {
  const buffer = term.buffer.active;
  const lines = [];
  for (let y = buffer.viewportY; y < buffer.viewportY + term.rows; y += 1) {
    const line = buffer.getLine(y);
    if (line) lines.push(line.translateToString(true));
  }
  while (lines.length && lines[lines.length - 1] === "") lines.pop();
  return lines.join("\n");
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  // Plain http on a LAN address is not a secure context: the old way still works.
  const area = h("textarea", { class: "offscreen", readonly: true, "aria-hidden": "true" });
  area.value = text;
  document.body.append(area);
  area.select();
  const ok = document.execCommand("copy");
  area.remove();
  if (!ok) throw new Error("the browser refused to copy");
}

/**
 * Buttons for the keys a phone keyboard lacks (shown on touch screens and narrow windows).
 * `pty` is a live terminal (pty.js's PtyView): its `term`, `input`, `ctrl` and `setCtrl`.
 */
export function keyButtons(pty) {
  const arrow = (letter) => () =>
    (pty.term.modes.applicationCursorKeysMode ? "\x1bO" : "\x1b[") + letter;
  const keys = [
    ["Esc", "Escape", () => "\x1b"],
    ["Tab", "Tab", () => "\t"],
    ["Ctrl", "Control: applies to the next key", null],
    ["←", "Arrow left", arrow("D")],
    ["↑", "Arrow up", arrow("A")],
    ["↓", "Arrow down", arrow("B")],
    ["→", "Arrow right", arrow("C")],
    ["|", "Pipe", () => "|"],
    ["~", "Tilde", () => "~"],
    ["/", "Slash", () => "/"],
  ];
  let ctrlButton = null;
  const buttons = keys.map(([label, name, seq]) => {
    const button = h("button", {
      type: "button",
      class: "key term-key",
      "aria-label": name,
      dataset: { key: label },
      text: label,
    });
    // Keep the focus (and a phone's keyboard) in the terminal.
    button.addEventListener("pointerdown", (e) => e.preventDefault());
    if (seq === null) {
      ctrlButton = button;
      button.setAttribute("aria-pressed", "false");
      button.addEventListener("click", () => {
        pty.setCtrl(!pty.ctrl);
        pty.term.focus();
      });
    } else {
      button.addEventListener("click", () => {
        pty.input(seq());
        pty.term.focus();
      });
    }
    return button;
  });
  pty.hooks.onCtrl = (on) => ctrlButton.setAttribute("aria-pressed", on ? "true" : "false");
  return buttons;
}

/** The terminal's toolbar: keys (for touch), Copy and, for a live run, Paste. */
export function termToolbar(buttons) {
  return h(
    "div",
    { class: "keybar", id: "keybar", role: "toolbar", "aria-label": "Terminal keys" },
    buttons,
  );
}

/** Copy (the selection, else the screen) and, with `pasteInto`, Paste. */
export function clipboardButtons(termOf, pasteInto) {
  const out = [];
  const copy = h("button", {
    type: "button",
    class: "key clip-key",
    id: "copy",
    text: "Copy",
    "aria-label": "Copy the selection, or the screen",
  });
  copy.addEventListener("pointerdown", (e) => e.preventDefault());
  copy.addEventListener("click", async () => {
    const term = termOf();
    const selected = term.getSelection();
    const text = selected || screenText(term);
    try {
      await copyText(text);
      announce(selected ? "Copied the selection" : "Copied the screen");
    } catch (e) {
      announce(`Copy failed: ${e.message}`);
    }
  });
  out.push(copy);
  if (pasteInto) {
    const paste = h("button", {
      type: "button",
      class: "key clip-key",
      id: "paste",
      text: "Paste",
      "aria-label": "Paste into the terminal",
    });
    paste.addEventListener("pointerdown", (e) => e.preventDefault());
    paste.addEventListener("click", async () => {
      let text = null;
      try {
        if (navigator.clipboard && navigator.clipboard.readText) {
          text = await navigator.clipboard.readText();
        }
      } catch {
        text = null;
      }
      if (text === null) text = window.prompt("Text to paste into the terminal:");
      if (text) pasteInto(text);
      termOf().focus();
    });
    out.push(paste);
  }
  return out;
}
