//! Where values come from: the `--bind` flag, `KAGED_*` variables and `config.toml` (read with
//! positions). Each value found is offered to the resolution with its source and location.

use std::collections::BTreeMap;
use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::Resolution;
use super::field::Kind;
use super::keys::{self, KEYS};
use super::types::{FlagOverrides, Source};
use super::value::Raw;
use crate::error::{ConfigError, Location, line_column};
use crate::suggest::closest;

/// The command-line flag that sets a key: only `--bind` does.
pub(crate) fn read_flags(flags: &FlagOverrides, resolution: &mut Resolution) {
    if let (Some(bind), Some(spec)) = (&flags.bind, keys::find("daemon", "bind")) {
        let flag = "--bind".to_string();
        resolution.offer(
            spec,
            Raw::Str(bind.clone()),
            Source::Flag { flag: flag.clone() },
            Location::Flag { flag },
        );
    }
}

pub(crate) fn read_env(
    env: &BTreeMap<String, String>,
    flags: &FlagOverrides,
    resolution: &mut Resolution,
) {
    for spec in KEYS {
        let Some(text) = env.get(spec.env).filter(|v| !v.is_empty()) else {
            continue;
        };
        // A flag for the same key shadows the variable, valid or not.
        if spec.section == "daemon" && spec.key == "bind" && flags.bind.is_some() {
            continue;
        }
        let var = spec.env.to_string();
        resolution.offer(
            spec,
            raw_from_env(spec.value.kind(), text),
            Source::Env { var: var.clone() },
            Location::Env { var },
        );
    }
}

/// Environment variables carry lists, booleans and numbers as text.
fn raw_from_env(kind: Kind, text: &str) -> Raw {
    match kind {
        Kind::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Raw::Bool(true),
            "false" | "0" | "no" => Raw::Bool(false),
            _ => Raw::Str(text.to_string()),
        },
        Kind::Number => match text.trim().parse::<i64>() {
            Ok(n) => Raw::Int(n),
            Err(_) => Raw::Str(text.to_string()),
        },
        Kind::List => Raw::List(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        ),
        Kind::Text => Raw::Str(text.to_string()),
    }
}

fn toml_type(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "string",
        DeValue::Integer(_) => "integer",
        DeValue::Float(_) => "float",
        DeValue::Boolean(_) => "boolean",
        DeValue::Datetime(_) => "datetime",
        DeValue::Array(_) => "array",
        DeValue::Table(_) => "table",
    }
}

fn raw_from_toml(v: &DeValue<'_>) -> Raw {
    match v {
        DeValue::String(s) => Raw::Str(s.to_string()),
        DeValue::Boolean(b) => Raw::Bool(*b),
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Raw::Int(n),
            Err(_) => Raw::Other("integer too large"),
        },
        DeValue::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                match item.get_ref() {
                    DeValue::String(s) => out.push(s.to_string()),
                    other => {
                        return Raw::Other(if toml_type(other) == "string" {
                            "array"
                        } else {
                            "array of non-strings"
                        });
                    }
                }
            }
            Raw::List(out)
        }
        other => Raw::Other(toml_type(other)),
    }
}

pub(crate) fn read_file(path: &Path, text: &str, resolution: &mut Resolution) {
    let at = |offset: usize| {
        let (line, column) = line_column(text, offset);
        Location::File {
            path: path.to_path_buf(),
            line,
            column,
        }
    };
    let root = match DeTable::parse(text) {
        Ok(t) => t,
        Err(e) => {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            resolution.errors.push(ConfigError {
                location: at(offset),
                key: String::new(),
                problem: format!("TOML syntax error: {}", e.message().trim()),
                hint: "fix the syntax at this position (strings need double quotes)".into(),
            });
            return;
        }
    };
    let sections = keys::sections();
    // Top-level tables, then nested ones such as [auth.proxy], in file order.
    let mut tables: Vec<(String, &DeTable<'_>)> = Vec::new();
    for (name, value) in root.get_ref().iter() {
        let section = name.get_ref().as_ref();
        let DeValue::Table(table) = value.get_ref() else {
            resolution.errors.push(ConfigError {
                location: at(name.span().start),
                key: section.to_string(),
                problem: format!("top-level key {section:?} must be a [section]"),
                hint: format!("known sections: {}", sections.join(", ")),
            });
            continue;
        };
        if !sections.contains(&section) {
            let hint = match closest(section, &sections) {
                Some(s) => format!(
                    "did you mean [{s}]? known sections: {}",
                    sections.join(", ")
                ),
                None => format!("remove it; known sections: {}", sections.join(", ")),
            };
            resolution.errors.push(ConfigError {
                location: at(name.span().start),
                key: section.to_string(),
                problem: format!("unknown section [{section}]"),
                hint,
            });
            continue;
        }
        tables.push((section.to_string(), table));
    }
    let mut index = 0;
    while index < tables.len() {
        let (section, table) = (tables[index].0.clone(), tables[index].1);
        index += 1;
        for (k, v) in table.iter() {
            let key = k.get_ref().as_ref();
            let location = at(k.span().start);
            let nested = format!("{section}.{key}");
            if let DeValue::Table(sub) = v.get_ref()
                && sections.contains(&nested.as_str())
            {
                tables.push((nested, sub));
                continue;
            }
            let Some(spec) = keys::find(&section, key) else {
                let known = keys::keys_of(&section);
                let hint = match closest(key, &known) {
                    Some(s) => format!(
                        "did you mean `{s}`? keys of [{section}]: {}",
                        known.join(", ")
                    ),
                    None => format!("remove it; keys of [{section}]: {}", known.join(", ")),
                };
                resolution.errors.push(ConfigError {
                    location,
                    key: nested,
                    problem: format!("unknown key `{key}` in [{section}]"),
                    hint,
                });
                continue;
            };
            let line = match &location {
                Location::File { line, .. } => *line,
                _ => 0,
            };
            resolution.offer(
                spec,
                raw_from_toml(v.get_ref()),
                Source::File { line },
                location,
            );
        }
    }
}
