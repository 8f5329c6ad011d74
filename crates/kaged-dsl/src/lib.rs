//! kaged project files (`.kaged/project.yaml`), decided without I/O.
//!
//! This first part is the foundation the schema builds on: a YAML tree in which every key and
//! value keeps its source position, diagnostics that name file, line, column and key path, and
//! the `project.local.yaml` overlay merge (objects merge, arrays replace, `null` removes, locked
//! keys stay). The project schema itself (agents, cages, tasks) comes next (issue 4).

mod tree;

pub use tree::{Diagnostic, Entry, Kind, Node, Pos, Value, merge, parse};
