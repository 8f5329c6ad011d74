//! What a row of `KEYS` carries besides its names: how its value is parsed and stored in its
//! field of [`Settings`], its default, and how `config.toml` shows it. Typed per key, so a
//! parsed value always lands in its own field: there is no "some other kind of value" case in
//! which a key could quietly fall back to its default.

use super::keys::KeySpec;
use super::types::Settings;
use super::value::{Problem, Raw};
use crate::mode::ModeDecision;

/// How a `KAGED_*` variable's text is read before the key's parser sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    /// `true`/`1`/`yes`, `false`/`0`/`no`; other text stays text (and is refused).
    Bool,
    /// An integer; other text stays text (and is refused).
    Number,
    /// Comma-separated, empty items dropped.
    List,
}

/// How the default `config.toml` writes a key.
pub(crate) enum Shown {
    /// `key = VALUE`.
    Value(String),
    /// `# key = EXAMPLE`: keys without a useful default (a listener list, a secret) stay
    /// commented out.
    Example(&'static str),
}

/// One key's behaviour; implemented once, by [`Typed`], for every field type.
pub(crate) trait Field {
    fn kind(&self) -> Kind;
    /// Parse `raw` and store it in the key's field of `settings`.
    fn set(&self, spec: &KeySpec, raw: Raw, settings: &mut Settings) -> Result<(), Problem>;
    /// Store the key's default; keys listed earlier in `KEYS` are already set.
    fn set_default(&self, decision: &ModeDecision, settings: &mut Settings);
    fn show(&self, settings: &Settings) -> Shown;
}

/// A key whose field has type `T`.
pub(crate) struct Typed<T> {
    pub kind: Kind,
    pub parse: fn(&KeySpec, Raw) -> Result<T, Problem>,
    pub default: fn(&ModeDecision, &Settings) -> T,
    pub field: fn(&mut Settings) -> &mut T,
    pub show: fn(&Settings) -> Shown,
}

impl<T> Field for Typed<T> {
    fn kind(&self) -> Kind {
        self.kind
    }

    fn set(&self, spec: &KeySpec, raw: Raw, settings: &mut Settings) -> Result<(), Problem> {
        let value = (self.parse)(spec, raw)?;
        *(self.field)(settings) = value;
        Ok(())
    }

    fn set_default(&self, decision: &ModeDecision, settings: &mut Settings) {
        let value = (self.default)(decision, settings);
        *(self.field)(settings) = value;
    }

    fn show(&self, settings: &Settings) -> Shown {
        (self.show)(settings)
    }
}

impl Shown {
    /// A TOML string.
    pub(crate) fn text(text: &str) -> Shown {
        Shown::Value(super::render::toml_string(text))
    }

    /// A number or boolean, as Rust prints it (which is how TOML writes it).
    pub(crate) fn plain(value: impl std::fmt::Display) -> Shown {
        Shown::Value(value.to_string())
    }
}
