//! Shared checks for operator files: unknown keys with suggestions and typed sections, each
//! problem collected as a located diagnostic instead of stopping at the first.

use serde::de::DeserializeOwned;

use super::fields::fields_of;
use crate::diag::{Diag, did_you_mean};
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
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(t) if unknown.is_empty() => Some(t),
        Ok(_) => None,
        Err(e) => {
            let at = path.join_serde(e.path());
            let message = e.inner().to_string();
            let (message, help) = explain_serde(&message, what);
            diags.push(doc.error_at(&at, message, false).help_opt(help));
            None
        }
    }
}

/// Rewords serde's messages into the vocabulary of the file.
fn explain_serde(message: &str, what: &str) -> (String, Option<String>) {
    if let Some(rest) = message.strip_prefix("missing field `") {
        let key = rest.trim_end_matches('`');
        return (
            format!("{what} is missing the required key `{key}`"),
            Some(format!("add `{key} = ...`")),
        );
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        return (format!("wrong type: {rest}"), None);
    }
    (message.to_string(), None)
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
