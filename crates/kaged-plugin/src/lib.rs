//! kaged plugins, decided without I/O.
//!
//! A plugin is a separate process in its own cage, speaking line-delimited JSON-RPC 2.0 on
//! stdio. This crate holds what can be decided on data: the `kaged-plugin.yaml` manifest
//! (`manifest`: parsed and validated like project files, with the same positioned diagnostics
//! and a published JSON Schema from the same tables), its capabilities compiled into the
//! plugin's cage (`capability`), the wire protocol's messages and error codes (`wire`), the
//! calls in flight with their ids and deadlines (`calls`), and the supervisor's restart policy
//! (`supervise`). Spawning, the pipes and the clock are the edge's.

pub mod calls;
pub mod capability;
pub mod manifest;
pub mod settings;
pub mod supervise;
pub mod wire;

pub use calls::{Calls, Timeouts, Waiting};
pub use capability::{
    Capabilities, Capability, CapabilityError, KNOWN_FORMS, PluginCage, Storage, parse_all,
};
pub use manifest::{
    HOOKS, Hook, MANIFEST_FILE, Manifest, ManifestError, SUPPORTED_API, ToolSpec, is_plugin_name,
    json_schema, load_manifest,
};
pub use supervise::{Action, Event, RestartPolicy, State, Status, Supervisor};
pub use wire::{Id, Message, RpcError, StorageOp, WireError, storage_request};
