//! kaged's end-to-end suite: the real binary, real HTTP and WebSockets, real bubblewrap cages.
//!
//! One test binary (one link on a small machine) with a module per area; a test's name is its
//! module path, e.g.
//! `sessions::a_flood_read_across_a_reconnect_has_no_gap_and_no_duplicate`. Tests run as threads of this one
//! process, so none may change process-wide state (environment, working directory, signal
//! handlers): each starts its own daemons on their own temporary directories and port 0, and
//! passes settings through the child's environment (`common::kaged_cmd`).
//! `tidy` checks the repository's layout rules (module docs, file length).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

mod acp_claude;
mod acp_opencode;
mod acp_shim;
mod agent_cli;
mod agents;
mod agents_failures;
mod agents_real;
mod agents_replies;
mod agents_restart;
mod agents_tools;
mod approvals;
mod auth_flow;
mod cage;
mod cage_uid;
mod client_discovery;
mod default_limits;
mod deployment_files;
mod dsl;
mod escapes;
mod full_disk;
mod holder_process;
mod lifecycle;
mod listeners;
mod notify;
mod ordinary_user;
mod plugin_cli;
mod plugins;
mod postgres;
mod preflight;
mod projects;
mod retention;
mod sessions;
mod sidecar;
mod small_things;
mod tidy;
mod tokens;
mod toolchains;
mod tools;
mod ui_approvals;
mod ui_conversation;
mod ui_plugins;
mod upgrade;
mod vpn_bind;

// These three still declare their own `mod common;` (as separate test binaries did). Loaded
// through `#[path]`, that declaration resolves next to them, to this directory's `common/`, so
// they compile unchanged. Once they say `use crate::common::*;`, drop the attributes.
mod acp;
mod acp_scripted;
mod acp_server;
#[path = "browser.rs"]
#[allow(clippy::duplicate_mod)]
mod browser;
#[path = "ui.rs"]
#[allow(clippy::duplicate_mod)]
mod ui;
#[path = "ui_vendor.rs"]
#[allow(clippy::duplicate_mod)]
mod ui_vendor;
