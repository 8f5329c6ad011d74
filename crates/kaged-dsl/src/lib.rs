//! kaged project files (`.kaged/project.yaml`), decided without I/O.
//!
//! This first part is the foundation the schema builds on: a YAML tree in which every key and
//! value keeps its source position, diagnostics that name file, line, column and key path, and
//! the `project.local.yaml` overlay merge (objects merge, arrays replace, `null` removes, locked
//! keys stay). The project schema itself (agents, cages, tasks) comes next (issue 4).

mod project;
pub mod schema;
mod tree;
mod validate;

pub use project::{
    BASE, Checked, LOCAL, LOCKED_KEYS, MAX_DIAGNOSTICS, check_project, diagnostics_json,
    load_project, to_json,
};
pub use schema::json_schema;
pub use tree::{Diagnostic, Entry, Kind, MAX_DEPTH, Node, Pos, Value, merge, parse};
pub use validate::validate;
