// The PTY WebSocket protocol (`api/v1/sessions/ID/pty`) and a live terminal attached to it.
//
// The wire format mirrors `kaged_session::frame` (crates/kaged-session/src/frame.rs, described
// in docs/pty-protocol.md); change both together:
// - server → client binary frames: kind (1 byte: 0x01 output, 0x02 snapshot), the offset of
//   the first data byte (u64 big-endian), then the data;
// - server → client text frames (JSON by "type"): hello, state, exit, pong, error;
// - client → server: binary frames are raw input bytes; text frames are resume, resize, ping.

import { wsUrl } from "./api.js";
import { syncScriptStyles } from "./csp.js";
import { newTerminal, withCtrl } from "./terminal.js";

/** Output from `offset` on (`kaged_session::frame::KIND_OUTPUT`). */
const KIND_OUTPUT = 0x01;
/** A repaint of the screen as of `offset` (`KIND_SNAPSHOT`): it resets the terminal. */
const KIND_SNAPSHOT = 0x02;
/** kind + u64 offset (`HEADER_LEN`). */
const HEADER_LEN = 9;
/** Largest input frame (the server takes up to 256 KiB; pastes are chunked). */
const INPUT_CHUNK = 64 * 1024;
/** Input typed while reconnecting that is kept to send once the channel is back. */
const MAX_PENDING_INPUT = 256 * 1024;

const encoder = new TextEncoder();

/** A binary frame as `{kind, offset, data}`, or null when it is too short to be one. */
function decodeFrame(frame) {
  if (frame.length < HEADER_LEN) return null;
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  return {
    kind: frame[0],
    offset: Number(view.getBigUint64(1, false)),
    data: frame.subarray(HEADER_LEN),
  };
}

/**
 * One live terminal attached to a session's PTY channel. `offset` is the next output byte
 * wanted: everything below it has been written to this terminal. A reconnect (network drop,
 * server restart of the socket, a slow-viewer close) resumes from it: no gap, no duplicate.
 * A new page has an empty terminal, so it asks for a snapshot (`offset: null`) instead.
 */
export class PtyView {
  /** `api`: the ApiClient (to recheck sign-in when reconnecting keeps failing). */
  constructor(host, id, api, hooks) {
    this.host = host;
    this.id = id;
    this.api = api;
    this.hooks = hooks; // onState(state), onExit(code), onStatus(kind, text), onCtrl(on)
    this.offset = null;
    this.ws = null;
    this.resumed = false;
    this.ended = false;
    this.closed = false;
    this.failures = 0;
    this.timer = null;
    this.pending = [];
    this.pendingBytes = 0;
    this.ctrl = false;
    const { term, fit } = newTerminal(host, false);
    this.term = term;
    this.fit = fit;
    term.onData((data) => this.input(data));
    term.onBinary((data) => {
      const bytes = new Uint8Array(data.length);
      for (let i = 0; i < data.length; i += 1) bytes[i] = data.charCodeAt(i) & 0xff;
      this.send(bytes);
    });
    term.onResize(() => this.sendResize());
    this.fitSoon = () => {
      if (this.fitFrame) return;
      this.fitFrame = requestAnimationFrame(() => {
        this.fitFrame = null;
        this.refit();
      });
    };
    this.observer = new ResizeObserver(this.fitSoon);
    this.observer.observe(host);
    window.addEventListener("orientationchange", this.fitSoon);
    this.refit();
  }

  refit() {
    if (this.closed) return;
    try {
      const dims = this.fit.proposeDimensions();
      if (dims && dims.cols >= 2 && dims.rows >= 2) this.fit.fit();
    } catch (e) {
      console.warn("fit", e);
    }
  }

  connect() {
    if (this.closed || this.ended || this.ws) return;
    clearTimeout(this.timer);
    this.timer = null;
    const ws = new WebSocket(wsUrl(`api/v1/sessions/${this.id}/pty`));
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.resumed = false;
    this.hooks.onStatus("connecting", this.failures ? "reconnecting…" : "connecting…");
    ws.onmessage = (m) => {
      if (ws !== this.ws) return;
      if (typeof m.data === "string") this.onText(m.data);
      else this.onOutput(new Uint8Array(m.data));
    };
    ws.onclose = (e) => {
      if (ws !== this.ws) return;
      this.onClose(e);
    };
  }

  onText(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    switch (msg.type) {
      case "hello":
        // Resume where this terminal stands: null on a fresh terminal (snapshot), else the
        // next byte wanted.
        this.ws.send(JSON.stringify({ type: "resume", offset: this.offset }));
        this.resumed = true;
        this.failures = 0;
        if (msg.rows !== this.term.rows || msg.cols !== this.term.cols) this.sendResize();
        for (const bytes of this.pending.splice(0)) this.ws.send(bytes);
        this.pendingBytes = 0;
        this.hooks.onStatus("live", "connected");
        break;
      case "state":
        this.hooks.onState(msg);
        break;
      case "exit":
        this.ended = true;
        this.hooks.onExit(msg.code);
        break;
      case "error":
        if (msg.code === "resume_ahead") {
          // This terminal is ahead of the output (a new run behind the same id cannot
          // happen; be safe): start over from a snapshot.
          this.offset = null;
        } else {
          this.hooks.onStatus("notice", `${msg.code}: ${msg.message}`);
        }
        break;
      default:
        break;
    }
  }

  onOutput(bytes) {
    const frame = decodeFrame(bytes);
    if (!frame) return;
    let { offset: at, data } = frame;
    if (frame.kind === KIND_SNAPSHOT) {
      this.term.write(data);
      this.offset = at;
      return;
    }
    if (frame.kind !== KIND_OUTPUT) return;
    if (this.offset !== null && at < this.offset) {
      // Already written (cannot happen with a correct resume; never write twice).
      const skip = this.offset - at;
      if (skip >= data.length) return;
      data = data.subarray(skip);
      at = this.offset;
    }
    this.term.write(data);
    this.offset = at + data.length;
  }

  onClose(e) {
    this.ws = null;
    this.resumed = false;
    if (this.closed) return;
    if (this.ended || e.code === 1000) {
      this.ended = true;
      this.hooks.onStatus("ended", "run ended");
      return;
    }
    if (e.code === 1008 && /revoked/.test(e.reason || "")) {
      this.hooks.onStatus("down", "disconnected: the credential was revoked");
      return;
    }
    this.failures += 1;
    if (this.failures >= 2) this.api.recheck();
    const delay = Math.min(5000, 250 * 2 ** Math.min(this.failures - 1, 5));
    this.hooks.onStatus(
      "reconnecting",
      e.code === 1001 ? "kaged is stopping; reconnecting…" : "connection lost; reconnecting…",
    );
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, delay);
  }

  /** Reconnect now (network back, tab visible again). */
  nudge() {
    if (!this.ws && !this.ended && !this.closed) this.connect();
  }

  input(data) {
    if (this.ctrl) {
      data = withCtrl(data);
      this.setCtrl(false);
    }
    this.send(encoder.encode(data));
  }

  send(bytes) {
    if (this.ended || this.closed) return;
    for (let i = 0; i < bytes.length; i += INPUT_CHUNK) {
      const chunk = bytes.subarray(i, i + INPUT_CHUNK);
      if (this.ws && this.resumed && this.ws.readyState === WebSocket.OPEN) {
        this.ws.send(chunk);
      } else if (this.pendingBytes + chunk.length <= MAX_PENDING_INPUT) {
        // Typed while reconnecting: sent once the channel is back.
        this.pending.push(chunk.slice());
        this.pendingBytes += chunk.length;
      }
    }
  }

  sendResize() {
    if (this.ws && this.resumed && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: "resize", rows: this.term.rows, cols: this.term.cols }));
    }
  }

  setCtrl(on) {
    this.ctrl = on;
    if (this.hooks.onCtrl) this.hooks.onCtrl(on);
  }

  /** Stop taking input once the run has ended (the screen stays). */
  finish() {
    this.ended = true;
    this.term.options.disableStdin = true;
    this.term.options.cursorBlink = false;
  }

  dispose() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.fitFrame) cancelAnimationFrame(this.fitFrame);
    this.observer.disconnect();
    window.removeEventListener("orientationchange", this.fitSoon);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.term.dispose();
    syncScriptStyles();
  }
}
