"""A scripted ACP agent for kaged's end-to-end tests: JSON-RPC 2.0, one message a line, on
stdio. It reads its script (JSON) from the file named by its first argument:

  {"initialize": "ok" | "never" | "version2",
   "load": BOOL,                        # it can load sessions (session/load replays one)
   "modes": {"current": ID, "available": [ID, ...]},  # session modes it offers
   "prompts": [[STEP, ...], ...]}       # the steps of the 1st, 2nd, ... session/prompt

STEP is one of
  {"say": TEXT, "chunks": N}            agent_message_chunk(s)
  {"think": TEXT}                       agent_thought_chunk
  {"plan": [ENTRY, ...]}                plan
  {"tool_call": {"id", "title", "kind", "input"}}
  {"permission": ID}                    session/request_permission for tool call ID; the
                                        outcome ("allowed", "rejected" or "cancelled") is
                                        kept for the steps that follow
  {"if": "allowed"|"rejected"|"cancelled", "then": [STEP, ...]}
  {"write": {"path", "content"}}        fs/write_text_file; then says "wrote PATH" or
                                        "write failed: MESSAGE" as a chunk
  {"read": PATH}                        fs/read_text_file; says the content or the error
  {"run": [COMMAND, ARG, ...]}          terminal/create, wait_for_exit, output; says the output
  {"done": ID, "text": TEXT, "ok": BOOL} tool_call_update completed/failed
  {"wait_cancel": true}                 block until session/cancel, then stop "cancelled"
  {"raw": TEXT}                         write TEXT as a line as it is
  {"call": METHOD}                      a request kaged does not serve
  {"answer_unknown": true}              a response to an id kaged never used
  {"flood": N}                          N message chunks as fast as possible
  {"exit": CODE}                        exit at once
  {"stop": REASON}                      end the prompt (default "end_turn"), with usage
  {"session": true}                     says "session ID new" or "session ID loaded"
  {"mode": true}                        says "mode ID" (its current session mode)
"""
import json
import os
import sys

script = json.load(open(sys.argv[1]))
prompts = list(script.get("prompts", []))
state = {"outcome": None, "next": 1000, "session": "s-1"}


def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def read():
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)
    return json.loads(line)


def call(method, params):
    state["next"] += 1
    my_id = state["next"]
    send({"jsonrpc": "2.0", "id": my_id, "method": method, "params": params})
    while True:
        message = read()
        if message.get("id") == my_id and "method" not in message:
            return message
        if message.get("method") == "session/cancel":
            state["cancelled"] = True


def update(u):
    send({"jsonrpc": "2.0", "method": "session/update",
          "params": {"sessionId": state["session"], "update": u}})


def say(text):
    update({"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": text}})


def run(steps):
    for step in steps:
        if "say" in step:
            text, n = step["say"], max(1, step.get("chunks", 1))
            size = -(-len(text) // n)
            for i in range(0, len(text), size):
                say(text[i:i + size])
        elif "think" in step:
            update({"sessionUpdate": "agent_thought_chunk",
                    "content": {"type": "text", "text": step["think"]}})
        elif "plan" in step:
            update({"sessionUpdate": "plan", "entries": step["plan"]})
        elif "tool_call" in step:
            t = step["tool_call"]
            update({"sessionUpdate": "tool_call", "toolCallId": t["id"], "title": t.get("title", ""),
                    "kind": t.get("kind", "other"), "rawInput": t.get("input", {}), "status": "pending"})
        elif "permission" in step:
            answer = call("session/request_permission", {
                "sessionId": state["session"], "toolCall": {"toolCallId": step["permission"]},
                "options": [{"optionId": "once", "name": "Allow", "kind": "allow_once"},
                            {"optionId": "always", "name": "Always allow", "kind": "allow_always"},
                            {"optionId": "no", "name": "Reject", "kind": "reject_once"}]})
            outcome = answer.get("result", {}).get("outcome", {})
            if outcome.get("outcome") == "selected":
                state["outcome"] = "rejected" if outcome["optionId"] == "no" else "allowed"
                state["option"] = outcome["optionId"]
            else:
                state["outcome"] = "cancelled"
            say("permission: %s (%s)" % (state["outcome"], state.get("option", "-")))
        elif "if" in step:
            if state["outcome"] == step["if"]:
                stop = run(step["then"])
                if stop:
                    return stop
        elif "write" in step:
            w = step["write"]
            answer = call("fs/write_text_file", {"sessionId": state["session"],
                                                 "path": w["path"], "content": w["content"]})
            if "error" in answer:
                say("write failed: " + answer["error"].get("message", "?"))
            else:
                say("wrote " + w["path"])
        elif "read" in step:
            answer = call("fs/read_text_file", {"sessionId": state["session"], "path": step["read"]})
            if "error" in answer:
                say("read failed: " + answer["error"].get("message", "?"))
            else:
                say("read: " + answer["result"]["content"])
        elif "run" in step:
            argv = step["run"]
            created = call("terminal/create", {"sessionId": state["session"],
                                               "command": argv[0], "args": argv[1:]})
            if "error" in created:
                say("terminal failed: " + created["error"].get("message", "?"))
                continue
            tid = created["result"]["terminalId"]
            call("terminal/wait_for_exit", {"sessionId": state["session"], "terminalId": tid})
            out = call("terminal/output", {"sessionId": state["session"], "terminalId": tid})
            call("terminal/release", {"sessionId": state["session"], "terminalId": tid})
            say("ran: " + out["result"]["output"])
        elif "done" in step:
            update({"sessionUpdate": "tool_call_update", "toolCallId": step["done"],
                    "status": "completed" if step.get("ok", True) else "failed",
                    "content": [{"type": "content", "content": {"type": "text", "text": step.get("text", "")}}]})
        elif "wait_cancel" in step:
            while not state.get("cancelled"):
                message = read()
                if message.get("method") == "session/cancel":
                    state["cancelled"] = True
            return "cancelled"
        elif "raw" in step:
            sys.stdout.write(step["raw"] + "\n")
            sys.stdout.flush()
        elif "call" in step:
            answer = call(step["call"], {"sessionId": state["session"]})
            say("asked %s: %s" % (step["call"], json.dumps(answer.get("error", answer.get("result")))))
        elif "answer_unknown" in step:
            send({"jsonrpc": "2.0", "id": 987654, "result": {}})
        elif "flood" in step:
            for i in range(step["flood"]):
                say("%d " % i)
        elif "exit" in step:
            sys.stdout.flush()
            os._exit(step["exit"])
        elif "stop" in step:
            return step["stop"]
        elif "session" in step:
            say("session %s %s" % (state["session"], "loaded" if state.get("loaded") else "new"))
        elif "mode" in step:
            say("mode %s" % state.get("mode"))
    return None


while True:
    message = read()
    method = message.get("method")
    if method == "initialize":
        mode = script.get("initialize", "ok")
        if mode == "never":
            continue
        version = 2 if mode == "version2" else 1
        send({"jsonrpc": "2.0", "id": message["id"],
              "result": {"protocolVersion": version,
                         "agentCapabilities": {"loadSession": bool(script.get("load"))},
                         "authMethods": []}})
    elif method == "session/load":
        state["session"] = message["params"]["sessionId"]
        state["loaded"] = True
        update({"sessionUpdate": "user_message_chunk", "content": {"type": "text", "text": "REPLAYED question"}})
        update({"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "REPLAYED answer"}})
        send({"jsonrpc": "2.0", "id": message["id"], "result": {}})
    elif method == "session/new":
        result = {"sessionId": state["session"]}
        modes = script.get("modes")
        if modes:
            state["mode"] = modes["current"]
            result["modes"] = {"currentModeId": modes["current"],
                               "availableModes": [{"id": m, "name": m} for m in modes["available"]]}
        send({"jsonrpc": "2.0", "id": message["id"], "result": result})
    elif method == "session/set_mode":
        state["mode"] = message["params"]["modeId"]
        send({"jsonrpc": "2.0", "id": message["id"], "result": {}})
    elif method == "session/prompt":
        steps = prompts.pop(0) if prompts else [{"say": "nothing scripted"}]
        state["cancelled"] = False
        stop = run(steps) or "end_turn"
        send({"jsonrpc": "2.0", "id": message["id"],
              "result": {"stopReason": stop, "usage": {"inputTokens": 11, "outputTokens": 4}}})
    elif method == "session/cancel":
        state["cancelled"] = True
