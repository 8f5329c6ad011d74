//! kaged project files (`.kaged/project.yaml`), decided without I/O.
//!
//! A YAML tree in which every key and value keeps its source position (`tree`), diagnostics
//! that name file, line, column and key path, and the `project.local.yaml` overlay merge
//! (objects merge, arrays replace, `null` removes, locked keys stay). The v1 schema is written
//! once as data (`schema`): the validator (`validate`, portability rules included) and the
//! published JSON Schema both come from it. `load_project` parses, overlays and validates; a
//! valid project's resolved configuration becomes the typed [`Project`] model (`model`), which
//! `kaged-cage` plans runs and cages from. Other strict YAML files (plugin manifests) reuse the
//! tree, the walk ([`validate_object`]) and the schema's output with tables of their own and
//! [`schema::Custom`] rules.

pub mod model;
mod project;
pub mod schema;
mod tighten;
mod tree;
mod validate;

pub use model::{Agent, Approval, ModelError, Project, ProjectPath, Protocol, Tool};
pub use project::{
    BASE, Checked, LOCAL, LOCKED_KEYS, MAX_DIAGNOSTICS, check_project, diagnostics_json,
    encoding_rules, finish_diagnostics, load_project, to_json,
};
pub use schema::json_schema;
pub use tree::{Diagnostic, Entry, Kind, MAX_DEPTH, Node, Pos, Value, merge, parse};
pub use validate::{looks_like_secret, validate, validate_object};
