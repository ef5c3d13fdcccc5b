//! Shared checks for operator files: unknown keys with suggestions and typed sections, each
//! problem collected as a located diagnostic instead of stopping at the first.

use serde::de::DeserializeOwned;

use super::fields::fields_of;
use crate::base::diag::{Diag, did_you_mean, suggest};
use crate::source::{KeyPath, SourceDoc};

/// Deserialises the table at `path` as `T`, reporting every unknown key (with a "did you mean")
/// and the first type error of the section. `None` when the section is absent or invalid.
pub fn section<T: DeserializeOwned>(
    doc: &SourceDoc,
    path: &KeyPath,
    what: &str,
    diags: &mut Vec<Diag>,
) -> Option<T> {
    let value = doc.get(path)?;
    let mut value = value.clone();
    let Some(map) = value.as_object_mut() else {
        diags.push(doc.error_at(
            path,
            format!("{what} must be a table, found {}", kind_of(&value)),
            false,
        ));
        return None;
    };
    let known = fields_of::<T>();
    let unknown: Vec<String> = map
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .cloned()
        .collect();
    for key in &unknown {
        diags.push(
            doc.error_at(
                &path.key(key),
                format!("unknown key `{key}` in {what}"),
                true,
            )
            .help_opt(did_you_mean(key, known.iter().copied())),
        );
        map.remove(key);
    }
    // With unknown keys the section is still returned (their errors are already recorded), so
    // the checks of its known keys run and report too.
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(t) => Some(t),
        Err(e) => {
            let at = path.join_serde(e.path());
            let message = e.inner().to_string();
            // `promt = ...` already says "did you mean `prompt`?": "missing `prompt`" is noise.
            let misspelt = missing_field(&message).is_some_and(|missing| {
                unknown
                    .iter()
                    .any(|k| suggest(k, known.iter().copied()) == Some(missing))
            });
            // `weight = nan` is reported as such by `non_finite_errors`, not as a wrong type.
            if !misspelt && !doc.is_non_finite(&at) {
                let (message, help) = explain_serde(&message, what);
                diags.push(doc.error_at(&at, message, false).help_opt(help));
            }
            None
        }
    }
}

fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .map(|rest| rest.trim_end_matches('`'))
}

/// Rewords serde's messages into the vocabulary of the file.
fn explain_serde(message: &str, what: &str) -> (String, Option<String>) {
    if let Some(key) = missing_field(message) {
        return (
            format!("{what} is missing the required key `{key}`"),
            Some(format!("add `{key} = ...`")),
        );
    }
    for (prefix, lead) in [
        ("invalid type: ", "wrong type"),
        ("invalid value: ", "invalid value"),
    ] {
        if let Some(rest) = message.strip_prefix(prefix) {
            // serde says `string "two", expected u32`: name the expected type in TOML/YAML words.
            let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
            let expected = plain_type(expected);
            let message = if expected.is_empty() {
                format!("{lead}: found {found}")
            } else {
                format!("{lead}: expected {expected}, found {found}")
            };
            let help = (found.starts_with("string ") && expected.contains("number"))
                .then(|| "write numbers without quotes".to_string());
            return (message, help);
        }
    }
    (message.to_string(), None)
}

/// serde's name for an expected type, as a file author would say it.
fn plain_type(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number (0 or more)".into(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a sequence" => "an array".into(),
        "a map" => "a table".into(),
        other if other.starts_with("struct ") => "a table".into(),
        other => other.to_string(),
    }
}

pub fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "nothing",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "a table",
    }
}
