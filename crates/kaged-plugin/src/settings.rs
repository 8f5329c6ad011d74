//! A plugin's settings checked against the JSON Schemas its manifest declares:
//! `system_config_schema` (the operator's `local.toml [plugins."NAME"]`, often secrets) and
//! `config_schema`. Messages name where a value is wrong and why, never the value itself:
//! settings may be secrets, and the messages reach logs, the API and the console.

use serde_json::Value as Json;

/// One setting that does not match the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingProblem {
    /// Where in the settings, as a JSON pointer (`""` for the whole).
    pub pointer: String,
    /// What is wrong, with the value masked.
    pub problem: String,
}

/// Why a manifest's schema cannot be used (it is not a JSON Schema kaged can compile, or it
/// refers to a document outside itself).
pub fn schema_problem(schema: &Json) -> Option<String> {
    jsonschema::validator_for(schema)
        .err()
        .map(|e| e.masked_with("the value").to_string())
}

/// Check `settings` against `schema`: every problem, values masked. A schema that does not
/// compile is one problem at the root (the manifest's check refuses such schemas first).
pub fn check(schema: &Json, settings: &Json) -> Vec<SettingProblem> {
    let validator = match jsonschema::validator_for(schema) {
        Ok(v) => v,
        Err(e) => {
            return vec![SettingProblem {
                pointer: String::new(),
                problem: format!(
                    "the plugin's schema cannot be used: {}",
                    e.masked_with("the value")
                ),
            }];
        }
    };
    validator
        .iter_errors(settings)
        .map(|e| SettingProblem {
            pointer: e.instance_path().as_str().to_string(),
            problem: e.masked_with("the value").to_string(),
        })
        .collect()
}

/// Why a plugin is not given settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Settings are given, but the manifest declares no schema for them: a plugin is given
    /// nothing it did not ask for.
    NotAsked,
    /// They do not match the schema (values masked).
    Mismatch(Vec<SettingProblem>),
}

/// The settings a plugin gets from `given` under its manifest's `schema` (either may be
/// absent: no settings are `{}`), or why it gets none.
pub fn settings_for(schema: Option<&Json>, given: Option<&Json>) -> Result<Json, Refusal> {
    let empty = || Json::Object(Default::default());
    match (schema, given) {
        (None, None) => Ok(empty()),
        (None, Some(_)) => Err(Refusal::NotAsked),
        (Some(schema), given) => {
            let values = given.cloned().unwrap_or_else(empty);
            match check(schema, &values) {
                problems if problems.is_empty() => Ok(values),
                problems => Err(Refusal::Mismatch(problems)),
            }
        }
    }
}

/// The problems as one line each: `at /token: the value is not of type "string"`.
pub fn describe(problems: &[SettingProblem]) -> String {
    problems
        .iter()
        .map(|p| match p.pointer.as_str() {
            "" => p.problem.clone(),
            at => format!("at {at}: {}", p.problem),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn schema() -> Json {
        json!({
            "type": "object",
            "properties": {
                "token": {"type": "string", "minLength": 8},
                "port": {"type": "integer", "minimum": 1},
            },
            "required": ["token"],
            "additionalProperties": false,
        })
    }

    #[test]
    fn matching_settings_have_no_problems() {
        assert_eq!(
            check(&schema(), &json!({"token": "s3cret-token", "port": 8})),
            vec![]
        );
    }

    #[test]
    fn every_problem_is_named_by_where_it_is_never_by_its_value() {
        let problems = check(
            &schema(),
            &json!({"token": "s3cr", "port": "s3cret-port", "extra": "s3cret-extra"}),
        );
        let text = describe(&problems);
        assert!(!text.contains("s3cr"), "{text}");
        let at: Vec<&str> = problems.iter().map(|p| p.pointer.as_str()).collect();
        assert!(
            at.contains(&"/token") && at.contains(&"/port") && at.contains(&""),
            "{problems:?}"
        );
        assert!(
            text.contains("at /port: the value is not of type \"integer\""),
            "{text}"
        );
        assert!(
            text.contains("extra"),
            "the unexpected key is named: {text}"
        );
    }

    #[test]
    fn a_missing_required_setting_is_named() {
        let text = describe(&check(&schema(), &json!({})));
        assert!(text.contains("\"token\" is a required property"), "{text}");
    }

    #[test]
    fn a_plugin_gets_only_settings_it_declared_and_that_match() {
        let schema = schema();
        let good = json!({"token": "s3cret-token"});
        assert_eq!(settings_for(None, None), Ok(json!({})));
        assert_eq!(settings_for(Some(&schema), Some(&good)), Ok(good.clone()));
        assert_eq!(settings_for(None, Some(&good)), Err(Refusal::NotAsked));
        // Nothing given is checked as `{}`: a required setting is missing.
        assert!(matches!(
            settings_for(Some(&schema), None),
            Err(Refusal::Mismatch(p)) if p.len() == 1
        ));
    }

    #[test]
    fn schemas_that_cannot_compile_or_fetch_are_refused() {
        assert!(schema_problem(&schema()).is_none());
        assert!(schema_problem(&json!({"type": "no-such-type"})).is_some());
        // No resolver: a remote reference is never fetched.
        assert!(schema_problem(&json!({"$ref": "https://example.org/schema.json"})).is_some());
        assert_eq!(check(&json!({"type": 3}), &json!({})).len(), 1);
    }
}
