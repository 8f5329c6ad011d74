//! A scripted ACP agent for kaged's tests: the binary `kaged-acp-scripted SCRIPT.json` (or
//! `KAGED_ACP_SCRIPT=SCRIPT.json`) speaks the Agent Client Protocol (version 1) on stdio with
//! the agent side of the official `agent-client-protocol` crate, and does what a JSON script
//! says; this library holds the script's Rust form ([`Script`], [`Step`]) so tests can write
//! scripts in Rust, and [`scripted_agent_binary`] to find (building if needed) the binary.
//!
//! The crate also builds `kaged-acp-client --permission OPTION_ID|cancel -- COMMAND ARGS…`, an
//! ACP client written with the crate's client side: it runs an agent, prompts once per line of
//! its stdin, answers permission requests with the given option, and prints a JSON report.
//!
//! This crate is a Cargo workspace of its own, excluded from kaged's: the official crate turns
//! on serde_json's `preserve_order`, which feature unification would otherwise spread to kaged's
//! builds. kaged's e2e tests build it with `cargo build --manifest-path … --locked --bins`.
//!
//! # Script
//!
//! ```json
//! {
//!   "never_initialize": false,
//!   "initialize":  [ steps before the initialize answer ],
//!   "new_session": [ steps before the session/new answer ],
//!   "load_session": [ steps before the session/load answer (the replay) ],
//!   "prompts": [ [ steps of the 1st session/prompt ], [ steps of the 2nd ], … ]
//! }
//! ```
//!
//! Every key is optional. Prompts are counted over the whole process (all sessions); a prompt
//! past the end of `prompts` ends its turn with `end_turn` at once. Sessions are named
//! `scripted-1`, `scripted-2`, …. With `load_session` the agent advertises `loadSession`
//! and answers `session/load` (any session id) after those steps; without it, `session/load`
//! is refused as an unknown method. `initialize` and `new_session` take only the wire steps
//! (`sleep_ms`, `raw`, `respond_unknown_id`, `call_unknown_method`, `exit`, `fail`). A bad
//! script (unknown key, two actions in one step, unknown kind) exits with status 2 before
//! reading stdin. Every step, outcome and request is also noted on stderr, one line each,
//! starting `kaged-acp-scripted: `.
//!
//! # Steps
//!
//! One JSON object per step, with one key naming it:
//!
//! | Step | What goes on the wire |
//! |---|---|
//! | `{"say": "text", "chunks": N}` | `agent_message_chunk` updates: the text in N pieces (default 1) |
//! | `{"think": "text"}` | one `agent_thought_chunk` |
//! | `{"user_chunk": "text"}` | one `user_message_chunk` (for a `session/load` replay) |
//! | `{"say_session": true}` | says `session ID new`, or `session ID loaded` once `session/load` took it up |
//! | `{"plan": ["entry", {"content", "priority", "status"}]}` | a `plan` (a bare string: medium, pending) |
//! | `{"tool_call": {"id", "title", "kind", "status", "raw_input", "locations"}}` | a `tool_call` (kind default `other`, status default `pending`) |
//! | `{"tool_update": {"id", "status", "text", "raw_output"}}` | a `tool_call_update` (text becomes the call's content) |
//! | `{"permission": {"tool_call_id", "options", "title", "kind", "raw_input", "quiet"}, "if_allowed": [steps], "if_rejected": [steps]}` | `session/request_permission`; see below |
//! | `{"write_file": {"path", "content"}}` | `fs/write_text_file`; then says `wrote PATH` or `write_file PATH failed: MESSAGE (CODE)` |
//! | `{"read_file": {"path", "line", "limit"}}` | `fs/read_text_file`; then says the content, or `read_file PATH failed: MESSAGE (CODE)` |
//! | `{"terminal": {"command", "args", "cwd", "output_byte_limit", "tool_call_id"}}` | `terminal/create`, (a `tool_call_update` embedding the terminal if `tool_call_id`), `terminal/wait_for_exit`, `terminal/output`, `terminal/release`; then says the output, and `terminal exit: CODE` (or `terminal exit: signal SIG`, `(truncated)` appended); on an error `terminal COMMAND failed: MESSAGE (CODE)` |
//! | `{"usage": {"used", "size", "cost": {"amount", "currency"}}}` | a `usage_update` |
//! | `{"turn_usage": {"input_tokens", "output_tokens", "cached_read_tokens"}}` | the `usage` of this turn's `session/prompt` answer (`totalTokens` = input + output; ACP's unstable end-turn usage) |
//! | `{"echo_prompt": true}` | one `agent_message_chunk` with the prompt's text blocks |
//! | `{"stop": "end_turn"\|"max_tokens"\|"max_turn_requests"\|"refusal"\|"cancelled"}` | ends the turn with that `stopReason`; later steps do not run (without it: `end_turn`) |
//! | `{"fail": "message"}` | answers the current request with error -32603 `message` |
//! | `{"sleep_ms": N}` | nothing for N ms (a `session/cancel` ends it early) |
//!
//! Permission: the options are given by kind (`allow_once`, `allow_always`, `reject_once`,
//! `reject_always`; default the first three), each option's id and name being its kind. The
//! outcome is said as `permission ID: OPTION` (`OPTION` is the selected option id or
//! `cancelled`) unless `quiet`; then `if_allowed` runs for an `allow_*` option, `if_rejected`
//! for any other; a `cancelled` outcome ends the turn with `cancelled`. An error answer is said
//! as `permission ID failed: MESSAGE (CODE)` and `if_rejected` runs.
//!
//! `session/cancel` for the session: the running prompt stops before its next step (a sleep
//! or an unanswered unknown method ends at once; a pending client request is still awaited)
//! and answers `stopReason: cancelled`.
//!
//! # Misbehaviours
//!
//! | Step | Effect |
//! |---|---|
//! | `{"raw": "line"}` | the line written to stdout as is (e.g. malformed JSON) |
//! | `{"call_unknown_method": "x/y"}` | a request `x/y` with `{}`; then says `x/y failed: MESSAGE (CODE)` or `x/y answered: JSON` |
//! | `{"respond_unknown_id": 999}` | `{"jsonrpc":"2.0","id":999,"result":{}}` |
//! | `{"flood": N}` | N `agent_message_chunk` updates of `.`, as fast as possible |
//! | `{"exit": CODE}` | the process exits with CODE once every line before it is written; the request is never answered |
//! | top-level `"never_initialize": true` | `initialize` is never answered |
//!
//! Raw lines and exits go through the crate's outgoing queue as marker notifications
//! (`_kaged_scripted/…`), so they keep their place among the lines before and after them.

pub mod agent;
mod locate;
pub mod script;
pub mod turn;
pub mod wire;

pub use agent_client_protocol as acp;
pub use locate::scripted_agent_binary;
pub use script::{
    CostStep, PermissionStep, PlanItem, ReadFileStep, Script, Step, TerminalStep, ToolCallStep,
    ToolUpdateStep, TurnUsageStep, UsageStep, WriteFileStep,
};
