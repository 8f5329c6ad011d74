//! The script of `kaged-acp-scripted`: its JSON form (serde), its Rust builders for tests, and
//! the load-time checks (which steps may run before a session exists).

use std::path::{Path, PathBuf};

use agent_client_protocol::v1::schema::{
    PermissionOptionKind, PlanEntryPriority, PlanEntryStatus, StopReason, ToolCallStatus, ToolKind,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A whole script: what the agent does on `initialize`, on `session/new` and on each
/// `session/prompt` in turn (the first prompt of the process runs `prompts[0]`, and so on).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Never answer `initialize` (the request is held open until the process ends).
    #[serde(default, skip_serializing_if = "is_false")]
    pub never_initialize: bool,
    /// Steps before the `initialize` answer (wire steps only, see [`Step::is_wire_step`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub initialize: Vec<Step>,
    /// Steps before the `session/new` answer (wire steps only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub new_session: Vec<Step>,
    /// Advertise `loadSession` and answer `session/load` after these steps (the replay: any
    /// session steps, e.g. `user_chunk` and `say`). Absent: `session/load` is not offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_session: Option<Vec<Step>>,
    /// One list of steps per `session/prompt`, in order. A prompt past the end ends its turn
    /// with `end_turn` and no updates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<Vec<Step>>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Script {
    /// An empty script: answers `initialize` and `session/new`, ends every turn at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the steps of the next `session/prompt`.
    pub fn prompt(mut self, steps: impl IntoIterator<Item = Step>) -> Self {
        self.prompts.push(steps.into_iter().collect());
        self
    }

    /// Sets the steps before the `initialize` answer.
    pub fn on_initialize(mut self, steps: impl IntoIterator<Item = Step>) -> Self {
        self.initialize = steps.into_iter().collect();
        self
    }

    /// Sets the steps before the `session/new` answer.
    pub fn on_new_session(mut self, steps: impl IntoIterator<Item = Step>) -> Self {
        self.new_session = steps.into_iter().collect();
        self
    }

    /// Never answers `initialize`.
    pub fn never_initialize(mut self) -> Self {
        self.never_initialize = true;
        self
    }

    /// The script as JSON text (the form the binary reads).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Writes the script to `path` (e.g. into the project a cage binds).
    pub fn write_to(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_json())
    }

    /// Parses and checks a script.
    pub fn parse(text: &str) -> Result<Self, String> {
        let script: Script = serde_json::from_str(text).map_err(|e| e.to_string())?;
        script.check()?;
        Ok(script)
    }

    /// Reads, parses and checks the script at `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Steps before a session exists may only touch the wire.
    fn check(&self) -> Result<(), String> {
        for (name, steps) in [
            ("initialize", &self.initialize),
            ("new_session", &self.new_session),
        ] {
            if let Some((i, _)) = steps.iter().enumerate().find(|(_, s)| !s.is_wire_step()) {
                return Err(format!(
                    "{name} step {}: only sleep_ms, raw, respond_unknown_id, call_unknown_method, \
                     exit and fail may run before a session exists",
                    i + 1
                ));
            }
        }
        Ok(())
    }
}

/// A plan entry: a bare string (medium priority, pending) or the full entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PlanItem {
    /// Only the content.
    Text(String),
    /// Content, priority and status.
    Full {
        /// What the entry says.
        content: String,
        /// `high`, `medium` or `low`.
        #[serde(default = "medium")]
        priority: PlanEntryPriority,
        /// `pending`, `in_progress` or `completed`.
        #[serde(default = "pending")]
        status: PlanEntryStatus,
    },
}

fn medium() -> PlanEntryPriority {
    PlanEntryPriority::Medium
}

fn pending() -> PlanEntryStatus {
    PlanEntryStatus::Pending
}

/// `{"tool_call": {...}}`: a `tool_call` session update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCallStep {
    /// The tool call id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// `read`, `edit`, `delete`, `move`, `search`, `execute`, `think`, `fetch`, `other`.
    #[serde(default)]
    pub kind: ToolKind,
    /// `pending` (default), `in_progress`, `completed`, `failed`.
    #[serde(default)]
    pub status: ToolCallStatus,
    /// The arguments, as the agent would show them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_input: Option<Value>,
    /// Files the call touches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<PathBuf>,
}

/// `{"tool_update": {...}}`: a `tool_call_update` session update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolUpdateStep {
    /// The tool call id.
    pub id: String,
    /// The new status, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ToolCallStatus>,
    /// Text content of the call (replaces the call's content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The call's raw output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_output: Option<Value>,
}

/// `{"permission": {...}}`: a `session/request_permission` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionStep {
    /// The tool call the permission is for.
    pub tool_call_id: String,
    /// Offered options, by kind (each option's id is its kind's name).
    #[serde(default = "default_options")]
    pub options: Vec<PermissionOptionKind>,
    /// The tool call's title, sent with the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The tool call's kind, sent with the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ToolKind>,
    /// The tool call's arguments, sent with the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_input: Option<Value>,
    /// Do not say the outcome as a message chunk (it is still on stderr).
    #[serde(default, skip_serializing_if = "is_false")]
    pub quiet: bool,
}

fn default_options() -> Vec<PermissionOptionKind> {
    vec![
        PermissionOptionKind::AllowOnce,
        PermissionOptionKind::AllowAlways,
        PermissionOptionKind::RejectOnce,
    ]
}

/// `{"write_file": {...}}`: an `fs/write_text_file` request to the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteFileStep {
    /// Absolute path.
    pub path: PathBuf,
    /// The whole new content.
    pub content: String,
}

/// `{"read_file": {...}}`: an `fs/read_text_file` request to the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadFileStep {
    /// Absolute path.
    pub path: PathBuf,
    /// First line to read (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// Most lines to read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `{"terminal": {...}}`: `terminal/create`, `terminal/wait_for_exit`, `terminal/output`,
/// `terminal/release`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalStep {
    /// The program.
    pub command: String,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Its working directory (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// `outputByteLimit` of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_byte_limit: Option<u64>,
    /// Embed the terminal in this tool call (a `tool_call_update` with terminal content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// `{"usage": {...}}`: a `usage_update` session update (context window use).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageStep {
    /// Tokens in the context.
    pub used: u64,
    /// Size of the context window.
    pub size: u64,
    /// Cost so far, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostStep>,
}

/// `{"turn_usage": {...}}`: the token usage sent with this turn's `session/prompt` answer
/// (`usage`: `totalTokens` is input + output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnUsageStep {
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from a cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_read_tokens: Option<u64>,
}

/// The cost of a [`UsageStep`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostStep {
    /// Amount.
    pub amount: f64,
    /// ISO 4217 currency code.
    pub currency: String,
}

/// One step. Its JSON form is an object with one key naming the step (see the crate docs);
/// `say` may add `chunks`, `permission` may add `if_allowed` and `if_rejected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StepFields", into = "StepFields")]
pub enum Step {
    /// A `user_message_chunk` (as in a `session/load` replay).
    UserChunk(String),
    /// Says `session ID new` or `session ID loaded`.
    SaySession,
    /// Agent message text, sent as `pieces` `agent_message_chunk` updates.
    Say {
        /// The whole text.
        text: String,
        /// Into how many chunks (at least 1).
        pieces: usize,
    },
    /// An `agent_thought_chunk`.
    Think(String),
    /// A `plan` update.
    Plan(Vec<PlanItem>),
    /// A `tool_call` update.
    ToolCall(ToolCallStep),
    /// A `tool_call_update`.
    ToolUpdate(ToolUpdateStep),
    /// A permission request, then the branch for its outcome.
    Permission {
        /// The request.
        request: PermissionStep,
        /// Steps when an allow option was selected.
        if_allowed: Vec<Step>,
        /// Steps when a reject option was selected.
        if_rejected: Vec<Step>,
    },
    /// `fs/write_text_file`; says `wrote PATH` or the error.
    WriteFile(WriteFileStep),
    /// `fs/read_text_file`; says the content or the error.
    ReadFile(ReadFileStep),
    /// A terminal run; says the output, then `terminal exit: …`.
    Terminal(TerminalStep),
    /// A `usage_update`.
    Usage(UsageStep),
    /// The `usage` of the turn's answer.
    TurnUsage(TurnUsageStep),
    /// Says the text of the prompt.
    EchoPrompt,
    /// Ends the turn with this stop reason (steps after it do not run).
    Stop(StopReason),
    /// Answers the current request with a JSON-RPC error (-32603) with this message.
    Fail(String),
    /// Misbehaviour: this line written to stdout as is.
    Raw(String),
    /// Misbehaviour: a request with this unknown method; says the answer.
    CallUnknownMethod(String),
    /// Misbehaviour: a response to a request id the client never sent.
    RespondUnknownId(i64),
    /// Misbehaviour: this many one-character message chunks, as fast as possible.
    Flood(usize),
    /// Misbehaviour: exit the process with this code (after the lines before it are out).
    Exit(i32),
    /// Sleep (a cancel ends it early).
    SleepMs(u64),
}

impl Step {
    /// `{"say": text}`: one chunk.
    pub fn say(text: impl Into<String>) -> Self {
        Self::Say {
            text: text.into(),
            pieces: 1,
        }
    }

    /// `{"say": text, "chunks": n}`.
    pub fn say_in(text: impl Into<String>, chunks: usize) -> Self {
        Self::Say {
            text: text.into(),
            pieces: chunks.max(1),
        }
    }

    /// `{"think": text}`.
    pub fn think(text: impl Into<String>) -> Self {
        Self::Think(text.into())
    }

    /// `{"tool_call": {"id", "title", "kind"}}` (pending, no input).
    pub fn tool_call(id: &str, title: &str, kind: ToolKind) -> Self {
        Self::ToolCall(ToolCallStep {
            id: id.to_string(),
            title: title.to_string(),
            kind,
            status: ToolCallStatus::Pending,
            raw_input: None,
            locations: Vec::new(),
        })
    }

    /// `{"tool_update": {"id", "status", "text"}}`.
    pub fn tool_update(id: &str, status: ToolCallStatus, text: Option<&str>) -> Self {
        Self::ToolUpdate(ToolUpdateStep {
            id: id.to_string(),
            status: Some(status),
            text: text.map(str::to_string),
            raw_output: None,
        })
    }

    /// `{"permission": {"tool_call_id"}, "if_allowed": […], "if_rejected": […]}` with the
    /// default options (allow once, allow always, reject once).
    pub fn permission(
        tool_call_id: &str,
        if_allowed: impl IntoIterator<Item = Step>,
        if_rejected: impl IntoIterator<Item = Step>,
    ) -> Self {
        Self::Permission {
            request: PermissionStep {
                tool_call_id: tool_call_id.to_string(),
                options: default_options(),
                title: None,
                kind: None,
                raw_input: None,
                quiet: false,
            },
            if_allowed: if_allowed.into_iter().collect(),
            if_rejected: if_rejected.into_iter().collect(),
        }
    }

    /// `{"write_file": {"path", "content"}}`.
    pub fn write_file(path: impl Into<PathBuf>, content: impl Into<String>) -> Self {
        Self::WriteFile(WriteFileStep {
            path: path.into(),
            content: content.into(),
        })
    }

    /// `{"read_file": {"path"}}`.
    pub fn read_file(path: impl Into<PathBuf>) -> Self {
        Self::ReadFile(ReadFileStep {
            path: path.into(),
            line: None,
            limit: None,
        })
    }

    /// `{"terminal": {"command", "args"}}`.
    pub fn terminal(command: &str, args: &[&str]) -> Self {
        Self::Terminal(TerminalStep {
            command: command.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            cwd: None,
            output_byte_limit: None,
            tool_call_id: None,
        })
    }

    /// `{"usage": {"used", "size"}}`.
    pub fn usage(used: u64, size: u64) -> Self {
        Self::Usage(UsageStep {
            used,
            size,
            cost: None,
        })
    }

    /// `{"turn_usage": {"input_tokens", "output_tokens"}}`.
    pub fn turn_usage(input_tokens: u64, output_tokens: u64) -> Self {
        Self::TurnUsage(TurnUsageStep {
            input_tokens,
            output_tokens,
            cached_read_tokens: None,
        })
    }

    /// Whether the step only touches the wire, so it may run before a session exists.
    pub fn is_wire_step(&self) -> bool {
        matches!(
            self,
            Self::SleepMs(_)
                | Self::Raw(_)
                | Self::RespondUnknownId(_)
                | Self::CallUnknownMethod(_)
                | Self::Exit(_)
                | Self::Fail(_)
        )
    }
}

/// The flat JSON form of a [`Step`]: every key optional, exactly one naming the step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    say: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunks: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_chunk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    say_session: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    think: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plan: Option<Vec<PlanItem>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool_call: Option<ToolCallStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool_update: Option<ToolUpdateStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    permission: Option<PermissionStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    if_allowed: Option<Vec<Step>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    if_rejected: Option<Vec<Step>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    write_file: Option<WriteFileStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    read_file: Option<ReadFileStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    terminal: Option<TerminalStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    usage: Option<UsageStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    turn_usage: Option<TurnUsageStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    echo_prompt: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stop: Option<StopReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    raw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    call_unknown_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    respond_unknown_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flood: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exit: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sleep_ms: Option<u64>,
}

impl TryFrom<StepFields> for Step {
    type Error = String;

    fn try_from(f: StepFields) -> Result<Self, String> {
        let mut found: Vec<Step> = Vec::new();
        if let Some(text) = f.say {
            found.push(Step::say_in(text, f.chunks.unwrap_or(1)));
        } else if f.chunks.is_some() {
            return Err("`chunks` goes with `say`".to_string());
        }
        if let Some(request) = f.permission {
            found.push(Step::Permission {
                request,
                if_allowed: f.if_allowed.unwrap_or_default(),
                if_rejected: f.if_rejected.unwrap_or_default(),
            });
        } else if f.if_allowed.is_some() || f.if_rejected.is_some() {
            return Err("`if_allowed` and `if_rejected` go with `permission`".to_string());
        }
        found.extend(f.user_chunk.map(Step::UserChunk));
        found.extend(f.say_session.filter(|on| *on).map(|_| Step::SaySession));
        found.extend(f.think.map(Step::Think));
        found.extend(f.plan.map(Step::Plan));
        found.extend(f.tool_call.map(Step::ToolCall));
        found.extend(f.tool_update.map(Step::ToolUpdate));
        found.extend(f.write_file.map(Step::WriteFile));
        found.extend(f.read_file.map(Step::ReadFile));
        found.extend(f.terminal.map(Step::Terminal));
        found.extend(f.usage.map(Step::Usage));
        found.extend(f.turn_usage.map(Step::TurnUsage));
        found.extend(f.echo_prompt.filter(|on| *on).map(|_| Step::EchoPrompt));
        found.extend(f.stop.map(Step::Stop));
        found.extend(f.fail.map(Step::Fail));
        found.extend(f.raw.map(Step::Raw));
        found.extend(f.call_unknown_method.map(Step::CallUnknownMethod));
        found.extend(f.respond_unknown_id.map(Step::RespondUnknownId));
        found.extend(f.flood.map(Step::Flood));
        found.extend(f.exit.map(Step::Exit));
        found.extend(f.sleep_ms.map(Step::SleepMs));
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err("a step needs one key naming it (say, think, plan, …)".to_string()),
            _ => Err("a step names more than one action; use one object per step".to_string()),
        }
    }
}

impl From<Step> for StepFields {
    fn from(step: Step) -> Self {
        let mut f = StepFields::default();
        match step {
            Step::Say { text, pieces } => {
                f.say = Some(text);
                f.chunks = (pieces != 1).then_some(pieces);
            }
            Step::UserChunk(t) => f.user_chunk = Some(t),
            Step::SaySession => f.say_session = Some(true),
            Step::Think(t) => f.think = Some(t),
            Step::Plan(p) => f.plan = Some(p),
            Step::ToolCall(t) => f.tool_call = Some(t),
            Step::ToolUpdate(t) => f.tool_update = Some(t),
            Step::Permission {
                request,
                if_allowed,
                if_rejected,
            } => {
                f.permission = Some(request);
                f.if_allowed = (!if_allowed.is_empty()).then_some(if_allowed);
                f.if_rejected = (!if_rejected.is_empty()).then_some(if_rejected);
            }
            Step::WriteFile(w) => f.write_file = Some(w),
            Step::ReadFile(r) => f.read_file = Some(r),
            Step::Terminal(t) => f.terminal = Some(t),
            Step::Usage(u) => f.usage = Some(u),
            Step::TurnUsage(u) => f.turn_usage = Some(u),
            Step::EchoPrompt => f.echo_prompt = Some(true),
            Step::Stop(s) => f.stop = Some(s),
            Step::Fail(m) => f.fail = Some(m),
            Step::Raw(r) => f.raw = Some(r),
            Step::CallUnknownMethod(m) => f.call_unknown_method = Some(m),
            Step::RespondUnknownId(id) => f.respond_unknown_id = Some(id),
            Step::Flood(n) => f.flood = Some(n),
            Step::Exit(c) => f.exit = Some(c),
            Step::SleepMs(ms) => f.sleep_ms = Some(ms),
        }
        f
    }
}
