"""A loopback Anthropic-compatible Messages endpoint for the Claude Code test (toolchains.rs):
POST /v1/messages answers with a streamed (SSE) text reply; argv: port (0: any) and the reply.
Prints the port on stdout, then one line per request on stderr (path, stream, the API key)."""
import json, sys, http.server, socketserver
REPLY = sys.argv[2] if len(sys.argv) > 2 else "hello from the loopback stream"
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, fmt, *a):
        pass
    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(n) or b"{}")
        sys.stderr.write("server: POST %s stream=%s key=%s\n" % (self.path, body.get("stream"), self.headers.get("x-api-key")))
        sys.stderr.flush()
        if not self.path.startswith("/v1/messages") or self.path.startswith("/v1/messages/count_tokens"):
            data = json.dumps({"input_tokens": 1}).encode() if "count_tokens" in self.path else b"{}"
            self.send_response(200); self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data))); self.end_headers(); self.wfile.write(data); return
        model = body.get("model", "claude")
        msg = {"id": "msg_kaged", "type": "message", "role": "assistant", "model": model, "content": [],
               "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}
        events = [("message_start", {"type": "message_start", "message": msg}),
                  ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                  ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": REPLY}}),
                  ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                  ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 5}}),
                  ("message_stop", {"type": "message_stop"})]
        if not body.get("stream"):
            msg["content"] = [{"type": "text", "text": REPLY}]; msg["stop_reason"] = "end_turn"
            data = json.dumps(msg).encode()
            self.send_response(200); self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data))); self.end_headers(); self.wfile.write(data); return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        for name, ev in events:
            self.wfile.write(("event: %s\ndata: %s\n\n" % (name, json.dumps(ev))).encode()); self.wfile.flush()
        self.close_connection = True
    def do_GET(self):
        self.send_response(404); self.send_header("content-length", "0"); self.end_headers()
    do_HEAD = do_GET
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
s = S(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
