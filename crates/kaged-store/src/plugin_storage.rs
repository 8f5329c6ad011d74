//! What both engines share about plugins' key-value storage (`plugin_storage`): the per-plugin
//! quota and its check. The statements live in `sqlite/plugin_storage.rs` and
//! `postgres/plugin_storage.rs`; the guarantees in [`crate::Backend::plugin_storage_set`].

/// The most keys one plugin may hold.
pub const PLUGIN_STORAGE_MAX_KEYS: u64 = 10_000;

/// The most bytes one plugin's values may take in total, as stored (compact JSON, UTF-8).
pub const PLUGIN_STORAGE_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// Which of a plugin's storage limits a write would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginQuota {
    /// [`PLUGIN_STORAGE_MAX_KEYS`].
    Keys,
    /// [`PLUGIN_STORAGE_MAX_BYTES`].
    Bytes,
}

impl std::fmt::Display for PluginQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginQuota::Keys => write!(f, "at most {PLUGIN_STORAGE_MAX_KEYS} keys"),
            PluginQuota::Bytes => write!(
                f,
                "at most {PLUGIN_STORAGE_MAX_BYTES} bytes ({} MiB) of values in total",
                PLUGIN_STORAGE_MAX_BYTES / (1024 * 1024)
            ),
        }
    }
}

/// What the plugin's other keys hold (every key but the one being written).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Holding {
    pub keys: u64,
    pub bytes: u64,
}

impl Holding {
    /// The limit that writing one more key (or replacing the one left out) with a value of
    /// `value_bytes` would pass; `None` when it fits.
    pub(crate) fn exceeded_by(self, value_bytes: usize) -> Option<PluginQuota> {
        let value_bytes = u64::try_from(value_bytes).unwrap_or(u64::MAX);
        if self.keys.saturating_add(1) > PLUGIN_STORAGE_MAX_KEYS {
            Some(PluginQuota::Keys)
        } else if self.bytes.saturating_add(value_bytes) > PLUGIN_STORAGE_MAX_BYTES {
            Some(PluginQuota::Bytes)
        } else {
            None
        }
    }
}

/// A value as the table stores it: compact JSON.
pub(crate) fn stored(value: &serde_json::Value) -> String {
    value.to_string()
}

/// A stored value read back. The column is checked to be JSON; text that still is not reads
/// as a JSON string, never an error (as elsewhere in this crate).
pub(crate) fn read_back(text: String) -> serde_json::Value {
    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
}
