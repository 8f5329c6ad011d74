//! A model agent's event records as text for a terminal (pure, tested on data): [`Live`] for
//! `kaged session attach` (the model's text as it streams, one line per tool call and result)
//! and [`Transcript`] for `kaged session transcript` (who said what, each tool call with its
//! arguments and its whole result). A subagent's records (`parent_call_id`) are indented under
//! the call that runs them. A call waiting for an approval shows the commands that decide it,
//! and then how it was decided. Model and tool text never reaches the terminal with its
//! control characters: they are shown as `^[`-style escapes.

use std::collections::HashMap;

use kaged_session::agent::{AgentEvent, EndReason, Sequenced};

/// Indentation of one subagent level.
const NEST: &str = "    ";
/// Line width when the terminal's is unknown.
pub(crate) const DEFAULT_WIDTH: usize = 160;

/// `text` with control characters made visible (`^[` for ESC, `^?` for DEL, `�` for C1
/// controls and carriage returns), keeping newlines and tabs.
pub(crate) fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            '\u{7f}' => out.push_str("^?"),
            c if (c as u32) < 0x20 && c != '\r' => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// `text` on one line (newlines and tabs as spaces), cut to `width` characters with `…`.
pub(crate) fn one_line(text: &str, width: usize) -> String {
    let flat: String = clean(text)
        .chars()
        .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
        .collect();
    let width = width.max(8);
    if flat.chars().count() <= width {
        return flat;
    }
    let mut cut: String = flat.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

/// Every line of `text` prefixed with `first` (the first line) or `rest` (the others); ends
/// with a newline.
fn block(text: &str, first: &str, rest: &str) -> String {
    let mut out = String::new();
    for (i, line) in clean(text).split('\n').enumerate() {
        out.push_str(if i == 0 { first } else { rest });
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn reason_text(reason: EndReason) -> &'static str {
    match reason {
        EndReason::EndTurn => "end_turn",
        EndReason::MaxSteps => "max_steps (the agent's max_steps model calls were used)",
        EndReason::MaxOutputTokens => "max_output_tokens (the agent's max_output_tokens were used)",
        EndReason::Aborted => "aborted",
        EndReason::Error => "error",
    }
}

fn usage_text(input: u64, output: u64, cached: u64, cost: Option<f64>) -> String {
    let mut text = format!("{input} in, {output} out");
    if cached > 0 {
        text.push_str(&format!(", {cached} cached"));
    }
    text.push_str(" tokens");
    if let Some(cost) = cost {
        text.push_str(&format!(", ${cost:.4}"));
    }
    text
}

/// A decided approval in words: `approved apr_… by user:root`, `approved apr_… for this
/// session by …`, `denied apr_… by user:root: MESSAGE`, `denied apr_… by kaged: REASON`,
/// `cancelled apr_… by kaged: the turn was aborted`.
fn decided_text(event: &AgentEvent) -> String {
    let AgentEvent::ApprovalDecided {
        approval_id,
        state,
        decision,
        message,
        decided_by,
        reason,
        ..
    } = event
    else {
        return String::new();
    };
    let scope = if decision.as_deref() == Some("approve_session") {
        " for this session"
    } else {
        ""
    };
    let mut text = format!("{state} {approval_id}{scope} by {decided_by}");
    for why in [message, reason].into_iter().flatten() {
        if !why.trim().is_empty() {
            text.push_str(": ");
            text.push_str(why);
        }
    }
    text
}

/// What the subagents' records nest under: the depth and tool name of every call seen.
#[derive(Default)]
struct Calls {
    /// call id → (depth of the lane that made the call, tool name).
    seen: HashMap<String, (usize, String)>,
}

impl Calls {
    /// Depth of a record's lane: 0 for the session's own agent, one more than its parent
    /// call's lane for a subagent's.
    fn depth(&self, parent: Option<&str>) -> usize {
        match parent {
            None => 0,
            Some(p) => self.seen.get(p).map_or(1, |(d, _)| d + 1),
        }
    }

    /// Who speaks in a lane: `agent` for the session's own, the subagent's name (its tool
    /// `agent.NAME`) for a subagent's.
    fn speaker(&self, parent: Option<&str>) -> String {
        match parent.and_then(|p| self.seen.get(p)) {
            None if parent.is_none() => "agent".into(),
            None => "subagent".into(),
            Some((_, name)) => name.strip_prefix("agent.").unwrap_or(name).to_string(),
        }
    }

    fn record(&mut self, depth: usize, call_id: &str, name: &str) {
        self.seen
            .insert(call_id.to_string(), (depth, name.to_string()));
    }

    fn name(&self, call_id: &str) -> &str {
        self.seen.get(call_id).map_or("tool", |(_, n)| n.as_str())
    }
}

/// `attach`'s rendering: feed records in seq order to [`Live::push`] and write what it returns
/// as it is (it may end mid-line while the model's text streams).
pub(crate) struct Live {
    width: usize,
    color: bool,
    calls: Calls,
    /// The lane whose streamed text is on the current line, if a line is open.
    open: Option<Option<String>>,
    /// Lanes that streamed text in their current message (their completion prints no text).
    streamed: HashMap<Option<String>, bool>,
    /// The call whose line was the last line written (its result needs no name then).
    last_call: Option<String>,
}

impl Live {
    /// Lines cut to `width` characters; `color`: dim usage lines (ANSI).
    pub(crate) fn new(width: usize, color: bool) -> Live {
        Live {
            width: width.max(20),
            color,
            calls: Calls::default(),
            open: None,
            streamed: HashMap::new(),
            last_call: None,
        }
    }

    /// Ends a line the streamed text left open.
    fn break_line(&mut self, out: &mut String) {
        if self.open.take().is_some() {
            out.push('\n');
        }
    }

    /// Whole lines, after ending a streamed line left open.
    fn lines(&mut self, out: &mut String, text: &str) {
        self.break_line(out);
        self.last_call = None;
        out.push_str(text);
    }

    /// The text to write for one record.
    pub(crate) fn push(&mut self, record: &Sequenced) -> String {
        let lane = record.parent_call_id.clone();
        let depth = self.calls.depth(lane.as_deref());
        let indent = NEST.repeat(depth);
        let mut out = String::new();
        match &record.event {
            AgentEvent::UserMessage { text } => {
                let prefix = format!("{indent}> ");
                self.lines(&mut out, &block(text, &prefix, &prefix));
            }
            AgentEvent::TurnStarted { .. } | AgentEvent::ToolOutput { .. } => {}
            AgentEvent::MessageStarted { .. } => {
                self.streamed.insert(lane, false);
            }
            AgentEvent::TextDelta { text } => {
                if self.open.as_ref().is_some_and(|l| *l != lane) {
                    self.break_line(&mut out);
                }
                self.last_call = None;
                for c in clean(text).chars() {
                    if c == '\n' {
                        out.push('\n');
                        self.open = None;
                        continue;
                    }
                    if self.open.is_none() {
                        out.push_str(&indent);
                        self.open = Some(lane.clone());
                    }
                    out.push(c);
                }
                self.streamed.insert(lane, true);
            }
            AgentEvent::MessageCompleted { text } => {
                if self.streamed.remove(&lane).unwrap_or(false) {
                    if self.open.as_ref() == Some(&lane) {
                        self.break_line(&mut out);
                    }
                } else if !text.is_empty() {
                    self.lines(&mut out, &block(text, &indent, &indent));
                }
            }
            AgentEvent::ToolCall {
                call_id,
                name,
                arguments,
            } => {
                self.calls.record(depth, call_id, name);
                let line = one_line(&format!("{indent}⚙ {name} {arguments}"), self.width);
                self.lines(&mut out, &format!("{line}\n"));
                self.last_call = Some(call_id.clone());
            }
            AgentEvent::ToolResult {
                call_id,
                ok,
                content,
                truncated,
            } => {
                let named = self.last_call.as_deref() != Some(call_id.as_str());
                let mark = if *ok { "✓" } else { "✗" };
                let who = if named {
                    format!("{}: ", self.calls.name(call_id))
                } else {
                    String::new()
                };
                let summary = if *ok {
                    let lines = content.lines().count();
                    match lines {
                        0 => "(empty)".to_string(),
                        1 => content.trim_end().to_string(),
                        n => plural(n, "line"),
                    }
                } else {
                    content
                        .lines()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("failed")
                        .to_string()
                };
                let cut = if *truncated { " (truncated)" } else { "" };
                let line = one_line(&format!("{indent}  {mark} {who}{summary}{cut}"), self.width);
                self.lines(&mut out, &format!("{line}\n"));
            }
            AgentEvent::Usage {
                input_tokens,
                output_tokens,
                cached_tokens,
                cost,
            } => {
                let text = usage_text(*input_tokens, *output_tokens, *cached_tokens, *cost);
                let line = one_line(&format!("{indent}  · {text}"), self.width);
                let line = if self.color {
                    format!("\x1b[2m{line}\x1b[0m\n")
                } else {
                    format!("{line}\n")
                };
                self.lines(&mut out, &line);
            }
            AgentEvent::ApprovalRequested {
                approval_id,
                tool,
                arguments,
                ..
            } => {
                let what = super::approvals::arguments_summary(tool, arguments, self.width);
                let line = one_line(
                    &format!("{indent}⏸ waiting for approval {approval_id}: {tool} {what}"),
                    self.width,
                );
                // Whole, never cut: the commands are to be copied.
                let hint = format!(
                    "{indent}  kaged approvals approve {approval_id}  |  kaged approvals deny {approval_id} --message TEXT\n"
                );
                self.lines(&mut out, &format!("{line}\n{hint}"));
            }
            decided @ AgentEvent::ApprovalDecided { .. } => {
                let text = decided_text(decided);
                let line = one_line(&format!("{indent}  {text}"), self.width);
                self.lines(&mut out, &format!("{line}\n"));
            }
            AgentEvent::TurnEnded { reason } => {
                if *reason != EndReason::EndTurn {
                    let line = format!("{indent}[turn ended: {}]\n", reason_text(*reason));
                    self.lines(&mut out, &line);
                } else {
                    self.break_line(&mut out);
                }
            }
            AgentEvent::Error { code, message } => {
                let first = format!("{indent}error: {code}: ");
                let rest = format!("{indent}  ");
                self.lines(&mut out, &block(message, &first, &rest));
            }
            // Reasoning and bookkeeping stay out of the way; `transcript --json` has them.
            AgentEvent::ThoughtDelta { .. } | AgentEvent::AcpSession { .. } => {}
            AgentEvent::Plan { entries } => {
                let steps: Vec<String> = entries
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        format!(
                            "[{}] {}",
                            e["status"].as_str().unwrap_or("?"),
                            e["content"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                let line = one_line(&format!("{indent}plan: {}", steps.join("; ")), self.width);
                self.lines(&mut out, &format!("{line}\n"));
            }
        }
        out
    }

    /// What ends the output cleanly (a newline if a streamed line is open).
    pub(crate) fn finish(&mut self) -> String {
        let mut out = String::new();
        self.break_line(&mut out);
        out
    }
}

/// `transcript`'s rendering: the conversation as plain text, whole messages (not deltas),
/// every tool call's arguments and its whole result.
#[derive(Default)]
pub(crate) struct Transcript {
    calls: Calls,
    /// The text of each lane's message in progress (its deltas), until it completes.
    pending: HashMap<Option<String>, String>,
}

impl Transcript {
    pub(crate) fn new() -> Transcript {
        Transcript::default()
    }

    /// A message cut short (no `message_completed`): its deltas, marked.
    fn flush(&mut self, lane: &Option<String>, indent: &str, out: &mut String) {
        if let Some(text) = self.pending.remove(lane).filter(|t| !t.is_empty()) {
            let speaker = self.calls.speaker(lane.as_deref());
            out.push_str(&block(
                &format!("{text} [cut short]"),
                &format!("{indent}{speaker}: "),
                &format!("{indent}  "),
            ));
        }
    }

    /// The lines of one record (whole lines, possibly none).
    pub(crate) fn push(&mut self, record: &Sequenced) -> String {
        let lane = record.parent_call_id.clone();
        let depth = self.calls.depth(lane.as_deref());
        let indent = NEST.repeat(depth);
        let rest = format!("{indent}  ");
        let mut out = String::new();
        match &record.event {
            AgentEvent::TextDelta { text } => {
                self.pending.entry(lane).or_default().push_str(text);
                return out;
            }
            AgentEvent::MessageStarted { .. } => {
                self.flush(&lane, &indent, &mut out);
                self.pending.insert(lane, String::new());
                return out;
            }
            AgentEvent::MessageCompleted { text } => {
                self.pending.remove(&lane);
                if !text.is_empty() {
                    let speaker = self.calls.speaker(lane.as_deref());
                    out.push_str(&block(text, &format!("{indent}{speaker}: "), &rest));
                }
                return out;
            }
            _ => self.flush(&lane, &indent, &mut out),
        }
        match &record.event {
            AgentEvent::UserMessage { text } => {
                let who = if lane.is_some() { "task" } else { "operator" };
                out.push_str(&block(text, &format!("{indent}{who}: "), &rest));
            }
            AgentEvent::ToolCall {
                call_id,
                name,
                arguments,
            } => {
                self.calls.record(depth, call_id, name);
                out.push_str(&block(
                    &format!("{name} {arguments}"),
                    &format!("{indent}tool call: "),
                    &rest,
                ));
            }
            AgentEvent::ToolResult {
                call_id,
                ok,
                content,
                truncated,
            } => {
                let status = match (*ok, *truncated) {
                    (true, false) => "ok",
                    (true, true) => "ok, truncated",
                    (false, false) => "failed",
                    (false, true) => "failed, truncated",
                };
                let head = format!(
                    "{indent}tool result: {} ({status})",
                    self.calls.name(call_id)
                );
                if content.is_empty() {
                    out.push_str(&format!("{head}: (empty)\n"));
                } else if !content.trim_end().contains('\n') {
                    out.push_str(&block(content.trim_end(), &format!("{head}: "), &rest));
                } else {
                    out.push_str(&format!("{head}:\n"));
                    out.push_str(&block(content.trim_end_matches('\n'), &rest, &rest));
                }
            }
            AgentEvent::Usage {
                input_tokens,
                output_tokens,
                cached_tokens,
                cost,
            } => {
                let text = usage_text(*input_tokens, *output_tokens, *cached_tokens, *cost);
                out.push_str(&format!("{indent}usage: {text}\n"));
            }
            AgentEvent::ApprovalRequested {
                approval_id,
                tool,
                arguments,
                ..
            } => {
                out.push_str(&block(
                    &format!("{approval_id}: {tool} {arguments}"),
                    &format!("{indent}waiting for approval "),
                    &rest,
                ));
            }
            decided @ AgentEvent::ApprovalDecided { .. } => {
                let text = decided_text(decided);
                out.push_str(&block(&text, &format!("{indent}approval: "), &rest));
            }
            AgentEvent::TurnEnded { reason } if *reason != EndReason::EndTurn => {
                out.push_str(&format!("{indent}[turn ended: {}]\n", reason_text(*reason)));
            }
            AgentEvent::Error { code, message } => {
                out.push_str(&block(message, &format!("{indent}error: {code}: "), &rest));
            }
            _ => {}
        }
        out
    }

    /// Messages still in progress at the end of the log, marked cut short.
    pub(crate) fn finish(&mut self) -> String {
        let mut out = String::new();
        let mut lanes: Vec<Option<String>> = self.pending.keys().cloned().collect();
        lanes.sort();
        for lane in lanes {
            let indent = NEST.repeat(self.calls.depth(lane.as_deref()));
            self.flush(&lane, &indent, &mut out);
        }
        out
    }
}

#[cfg(test)]
#[path = "conversation_tests.rs"]
mod tests;
