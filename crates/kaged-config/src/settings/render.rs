//! The default `config.toml`, written from `KEYS`: every key with its meaning, its variable and
//! its value (or a commented-out example).

use super::field::Shown;
use super::keys::KEYS;
use super::types::Settings;

/// `s` as a TOML basic string. (Rust's `{:?}` is not one: it writes `\u{1}` and `\'`.)
pub(crate) fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `config.toml` written on first per-user launch: every key, with its default and meaning.
pub fn render_default_config(s: &Settings) -> String {
    let mut sections: Vec<(&str, Vec<String>, bool)> = Vec::new();
    for spec in KEYS {
        let (line, set) = match spec.value.show(s) {
            Shown::Value(value) => (format!("{} = {value}", spec.key), true),
            Shown::Example(example) => (format!("# {} = {example}", spec.key), false),
        };
        let lines = format!("# {} (env {})\n{line}\n", spec.doc, spec.env);
        match sections.last_mut() {
            Some((section, body, any_set)) if *section == spec.section => {
                body.push(lines);
                *any_set |= set;
            }
            _ => sections.push((spec.section, vec![lines], set)),
        }
    }
    let mut out = format!(
        "# kaged configuration ({} mode), written on first launch.\n\
         # Precedence: command-line flags > KAGED_* environment > this file > defaults.\n",
        s.mode.describe()
    );
    for (section, body, any_set) in sections {
        // A section whose keys are all examples is itself commented out.
        let comment = if any_set { "" } else { "# " };
        out.push_str(&format!("\n{comment}[{section}]\n{}", body.concat()));
    }
    out
}
