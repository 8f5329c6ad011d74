//! Network egress for cages.
//!
//! A cage has its own network namespace and no network. When its policy lists destinations
//! (`network: {allow: [...]}`), the daemon serves [`serve`], an allowlisting HTTP proxy, on a
//! Unix socket bind-mounted into the cage; inside, [`run_bridge_then`] listens on the cage's
//! loopback, forwards every connection to that socket, and runs the agent's command with the
//! proxy variables set. [`Allowlist`] is the pure decision; every decision the proxy makes is
//! reported as an [`EgressDecision`] on a bounded queue ([`Decisions`]; the proxy never waits
//! on it, and counts what it could not queue), and [`Tally`] aggregates them per run so a
//! flood of requests cannot flood the audit log.

mod allow;
mod bridge;
mod proxy;
mod reports;
mod running;
pub mod tally;

pub use allow::{
    AllowError, Allowlist, Decision, EntryKind, Host, ResolveRefusal, check_resolved,
    parse_authority,
};
pub use bridge::{BridgeError, NO_PROXY_ENV_VARS, PROXY_ENV_VARS, bridge, run_bridge_then};
pub use proxy::{EgressDecision, Limits, MAX_HEAD_BYTES, serve, serve_with};
pub use reports::{DECISION_QUEUE, DecisionSender, Decisions, Report, aggregate, decision_channel};
pub use running::{RunningProxy, StartError};
pub use tally::{Summary, Tally};
