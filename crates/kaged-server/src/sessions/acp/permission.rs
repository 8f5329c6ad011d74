//! An ACP agent's permission requests: the project's policy decides, or the operator (an
//! approval, waited for in a task of its own and noted for a next daemon), and the answer
//! picks one of the options the agent offered.

use std::sync::Arc;

use kaged_dsl::{Approval, Tool};
use serde_json::{Value, json};

use super::client::Shared;
use super::translate::tool_name;
use crate::sessions::approval::Request;

/// A permission request waiting for an approval: the agent's request id, the approval, and
/// the options it offered (the decision picks one).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Asked {
    pub rpc_id: Value,
    pub approval: String,
    pub options: Vec<Value>,
}

/// What a permission request gets: an outcome now, or the operator's decision later.
pub(super) enum Permission {
    Now(Value),
    Ask(Asked),
}

impl Shared {
    /// In a task of its own (the decision may take long, and updates keep coming): the
    /// operator's decision on `asked`, answered to the agent.
    pub(super) fn wait_for_decision(self: Arc<Self>, asked: Asked) {
        tokio::spawn(async move {
            let c = &self.client;
            let decided = c.sessions.approvals().wait(&asked.approval).await;
            let outcome = match decided {
                Ok(r) if r.decision.as_deref() == Some("approve_session") => {
                    pick(&asked.options, &["allow_always", "allow_once"])
                }
                Ok(r) if r.state == "approved" => pick(&asked.options, &ALLOW),
                Ok(r) if r.state == "denied" => pick(&asked.options, &REJECT),
                Ok(_) => None,
                Err(e) => {
                    tracing::error!(session = %c.id, error = %e, "an ACP permission request could not be asked");
                    None
                }
            };
            if self.letting_go() {
                // The next daemon answers it (the approval stays pending).
                return;
            }
            let outcome = outcome.unwrap_or_else(cancelled);
            self.rpc
                .answer(asked.rpc_id.clone(), Ok(json!({"outcome": outcome})))
                .await;
            crate::sessions::lock(&self.asked).retain(|a| a.approval != asked.approval);
            self.note();
        });
    }

    /// A permission request: the project's policy for the call's kind (`acp.KIND`) decides
    /// now; without a setting, the operator is asked (an approval stored, waited for later).
    pub(super) async fn permission(&self, rpc_id: Value, params: &Value) -> Permission {
        let call = &params["toolCall"];
        let call_id = call["toolCallId"].as_str().unwrap_or_default().to_string();
        let announced = crate::sessions::lock(&self.translator).announced(&call_id);
        let kind = call["kind"].as_str().unwrap_or(&announced.kind);
        let tool = tool_name(kind);
        let options: Vec<Value> = params["options"].as_array().cloned().unwrap_or_default();
        let c = &self.client;
        let level = c.tools.get(&tool).map_or(Approval::Ask, Tool::level);
        let approvals = c.sessions.approvals();
        let chosen = match level {
            Approval::Allow => pick(&options, &ALLOW),
            Approval::Deny => pick(&options, &REJECT),
            Approval::Ask
                if approvals
                    .granted(&c.id, &c.name, &tool)
                    .await
                    .unwrap_or(false) =>
            {
                pick(&options, &ALLOW)
            }
            Approval::Ask => {
                let arguments = json!({
                    "title": call["title"].as_str().unwrap_or(&announced.title),
                    "input": if call["rawInput"].is_null() { announced.raw_input.clone() } else { call["rawInput"].clone() },
                    "options": options.iter().map(|o| o["name"].clone()).collect::<Vec<_>>(),
                });
                let asked = approvals
                    .request(Request {
                        session: &c.id,
                        project: &c.slug,
                        owner: &c.owner,
                        agent: &c.name,
                        tool: &tool,
                        call_id: &call_id,
                        parent_call_id: None,
                        arguments: &arguments,
                    })
                    .await;
                match asked {
                    Ok(record) => {
                        return Permission::Ask(Asked {
                            rpc_id,
                            approval: record.id,
                            options,
                        });
                    }
                    Err(e) => {
                        tracing::error!(session = %c.id, error = %e, "an ACP permission request could not be asked");
                        None
                    }
                }
            }
        };
        Permission::Now(chosen.unwrap_or_else(cancelled))
    }
}

/// The options that allow, and those that reject, by ACP's `kind`s.
const ALLOW: [&str; 2] = ["allow_once", "allow_always"];
const REJECT: [&str; 2] = ["reject_once", "reject_always"];

/// The first of `options` whose kind is one of `kinds`, as the permission's outcome.
fn pick(options: &[Value], kinds: &[&str]) -> Option<Value> {
    kinds.iter().find_map(|k| {
        options
            .iter()
            .find(|o| o["kind"].as_str() == Some(k))
            .and_then(|o| o["optionId"].as_str())
            .map(|id| json!({"outcome": "selected", "optionId": id}))
    })
}

/// A permission request nobody decided.
fn cancelled() -> Value {
    json!({"outcome": "cancelled"})
}
