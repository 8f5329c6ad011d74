#!/usr/bin/env python3
"""A kaged plugin: notes for model agents, in the plugin's own kaged storage.

The wire protocol (docs/plugins.md): JSON-RPC 2.0, one message per line, on stdin and
stdout. kaged calls `initialize`, `health`, `tools/call` and `shutdown`, and notifies
`initialized` and the hooks; the plugin calls kaged's `storage/*`. Logs go to stderr: stdout
carries protocol lines only.
"""

import json
import sys
import time

API = 1

# Error codes (kaged-plugin's wire.rs).
PARSE_ERROR = -32700
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
NOT_INITIALIZED = -32002
UNSUPPORTED_API = -32003
UNKNOWN_TOOL = -32005


class RpcError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def log(text):
    print(f"notes: {text}", file=sys.stderr, flush=True)


def send(message):
    message["jsonrpc"] = "2.0"
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class Plugin:
    def __init__(self):
        self.initialized = False
        self.next_id = 0
        # kaged's messages that arrived while this plugin waited for a storage answer.
        self.pending = []

    def call_kaged(self, method, params):
        """One request to kaged; its result (or RpcError). Other messages read meanwhile
        are kept and handled afterwards, in order."""
        self.next_id += 1
        my_id = f"notes-{self.next_id}"
        send({"id": my_id, "method": method, "params": params})
        for line in sys.stdin:
            message = json.loads(line)
            if "method" not in message and message.get("id") == my_id:
                if "error" in message:
                    error = message["error"]
                    raise RpcError(error["code"], f"{method}: {error['message']}")
                return message["result"]
            self.pending.append(message)
        raise SystemExit(0)  # kaged closed stdin: it is gone

    def tool(self, name, arguments):
        if name == "add":
            text = arguments.get("text")
            if not isinstance(text, str) or not text.strip():
                raise RpcError(INVALID_PARAMS, "add needs a non-empty `text`")
            key = f"note/{time.time_ns():020d}"
            self.call_kaged("storage/set", {"key": key, "value": {"text": text}})
            return {"content": f"noted ({len(text)} characters)", "is_error": False}
        if name == "list":
            keys = self.call_kaged("storage/list", {"prefix": "note/"})
            notes = []
            for key in sorted(keys):
                value = self.call_kaged("storage/get", {"key": key})
                if value is not None:
                    notes.append(f"- {value['text']}")
            return {"content": "\n".join(notes) or "no notes yet", "is_error": False}
        raise RpcError(UNKNOWN_TOOL, f"notes offers no tool `{name}` (it offers add, list)")

    def request(self, method, params):
        if method == "initialize":
            offered = params.get("kaged_api")
            if offered != API:
                raise RpcError(UNSUPPORTED_API, f"this plugin speaks kaged API {API}, not {offered}")
            self.initialized = True
            return {"name": "notes", "version": "0.1.0"}
        if method == "shutdown":
            return None
        if not self.initialized:
            raise RpcError(NOT_INITIALIZED, f"{method} before initialize")
        if method == "health":
            return {"status": "ok"}
        if method == "tools/call":
            name, arguments = params.get("name"), params.get("arguments")
            if not isinstance(name, str) or not isinstance(arguments, dict):
                raise RpcError(INVALID_PARAMS, "tools/call needs `name` and `arguments`")
            return self.tool(name, arguments)
        raise RpcError(METHOD_NOT_FOUND, f"notes serves no method `{method}`")

    def notification(self, method, params):
        if method == "initialized":
            log("initialized")
        elif method == "hooks/on_session_start":
            log(f"session {params.get('session_id')} started: agent {params.get('agent')} "
                f"in project {params.get('project')}")
        # Other notifications are ignored, as JSON-RPC says.

    def handle(self, message):
        """Handles one message from kaged; False once it was `shutdown`."""
        method = message.get("method")
        if method is None:
            return True  # an answer nobody waits for
        params = message.get("params") or {}
        if "id" not in message:
            self.notification(method, params)
            return True
        try:
            send({"id": message["id"], "result": self.request(method, params)})
        except RpcError as e:
            send({"id": message["id"], "error": {"code": e.code, "message": e.message}})
        return method != "shutdown"

    def run(self):
        for line in sys.stdin:
            try:
                message = json.loads(line)
            except ValueError as e:
                send({"id": None, "error": {"code": PARSE_ERROR, "message": f"not JSON: {e}"}})
                continue
            if not self.handle(message):
                return
            while self.pending:
                if not self.handle(self.pending.pop(0)):
                    return


if __name__ == "__main__":
    Plugin().run()
    log("stopped")
