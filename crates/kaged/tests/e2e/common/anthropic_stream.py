"""A loopback Anthropic-compatible Messages endpoint for the Claude Code tests (toolchains.rs,
acp_claude.rs): POST /v1/messages answers with a streamed (SSE) text reply.
argv: port (0: any), the reply, and optionally a tool use as JSON ({"name": ..., "input": ...}):
the first call that offers that tool is answered with it (a `tool_use` block) instead of text.
Prints the port on stdout, then one line per request on stderr (path, stream, the API key, the
number of tools offered, whether a tool result came back, and whether it was an error)."""
import json, sys, threading, http.server, socketserver
REPLY = sys.argv[2] if len(sys.argv) > 2 else "hello from the loopback stream"
TOOL = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
used = threading.Lock()
tool_sent = []

def tool_results(body):
    """The tool_result blocks of the request's last message."""
    messages = body.get("messages") or []
    content = messages[-1].get("content") if messages else None
    if not isinstance(content, list):
        return []
    return [c for c in content if isinstance(c, dict) and c.get("type") == "tool_result"]

def events(model, blocks, stop):
    msg = {"id": "msg_kaged", "type": "message", "role": "assistant", "model": model, "content": [],
           "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}
    out = [("message_start", {"type": "message_start", "message": msg})]
    for i, (start, delta) in enumerate(blocks):
        out.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block": start}))
        out.append(("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta}))
        out.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    out.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": 5}}))
    out.append(("message_stop", {"type": "message_stop"}))
    return out

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, fmt, *a):
        pass
    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(n) or b"{}")
        tools = [t.get("name") for t in body.get("tools") or []]
        results = tool_results(body)
        sys.stderr.write("server: POST %s stream=%s key=%s tools=%d tool_result=%s is_error=%s\n" % (
            self.path, body.get("stream"), self.headers.get("x-api-key"), len(tools), bool(results),
            any(r.get("is_error") for r in results)))
        sys.stderr.flush()
        if not self.path.startswith("/v1/messages") or self.path.startswith("/v1/messages/count_tokens"):
            data = json.dumps({"input_tokens": 1}).encode() if "count_tokens" in self.path else b"{}"
            self.send_response(200); self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data))); self.end_headers(); self.wfile.write(data); return
        model = body.get("model", "claude")
        use_tool = False
        if TOOL and TOOL["name"] in tools:
            with used:
                use_tool = not tool_sent
                tool_sent.append(True)
        if use_tool:
            start = {"type": "tool_use", "id": "toolu_kaged_1", "name": TOOL["name"], "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(TOOL["input"])}
            stream = events(model, [({"type": "text", "text": ""}, {"type": "text_delta", "text": REPLY + " (calling a tool)"}), (start, delta)], "tool_use")
        else:
            stream = events(model, [({"type": "text", "text": ""}, {"type": "text_delta", "text": REPLY})], "end_turn")
        if not body.get("stream"):
            msg = stream[0][1]["message"]
            msg["content"] = [{"type": "text", "text": REPLY}]; msg["stop_reason"] = "end_turn"
            data = json.dumps(msg).encode()
            self.send_response(200); self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data))); self.end_headers(); self.wfile.write(data); return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        for name, ev in stream:
            self.wfile.write(("event: %s\ndata: %s\n\n" % (name, json.dumps(ev))).encode()); self.wfile.flush()
        self.close_connection = True
    def do_GET(self):
        sys.stderr.write("server: GET %s\n" % self.path); sys.stderr.flush()
        self.send_response(404); self.send_header("content-length", "0"); self.end_headers()
    do_HEAD = do_GET
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
s = S(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
