//! Checks a JSON value against a JSON schema of the small subset pipe sends to models as
//! `json_schema`: `type` (object, string, integer, number), `properties`, `required`,
//! `additionalProperties: false`, `enum`, `minimum` and `maximum`. The judge checks an answer
//! against the very schema value it sent, so what the model was asked for and what is accepted
//! cannot disagree.

use serde_json::Value;

/// Every way `value` breaks `schema`, each a sentence naming the place (`scores.spec`); empty
/// when it conforms.
pub fn problems(schema: &Value, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check(schema, value, "", &mut out);
    out
}

/// `path.key`, or `key` at the top.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn check(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    let shown = if path.is_empty() { "the answer" } else { path };
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let Some(map) = value.as_object() else {
                out.push(format!("`{shown}` is not an object"));
                return;
            };
            check_object(schema, map, path, out);
        }
        Some("string") if !value.is_string() => {
            out.push(format!("`{shown}` is not a string"));
            return;
        }
        Some(kind @ ("integer" | "number")) => {
            let Some(n) = value.as_f64() else {
                out.push(format!("`{shown}` is not a number"));
                return;
            };
            if kind == "integer" && n.fract() != 0.0 {
                out.push(format!("`{shown}` = {n} is not a whole number"));
                return;
            }
            check_range(schema, n, shown, out);
        }
        _ => {}
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed
            .iter()
            .map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_string))
            .collect();
        out.push(format!(
            "`{shown}` = {value} is not one of {}",
            list.join(", ")
        ));
    }
}

fn check_object(
    schema: &Value,
    map: &serde_json::Map<String, Value>,
    path: &str,
    out: &mut Vec<String>,
) {
    let properties = schema.get("properties").and_then(Value::as_object);
    for key in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !map.contains_key(key) {
            out.push(format!("`{}` is missing", join(path, key)));
        }
    }
    for (key, v) in map {
        match properties.and_then(|p| p.get(key)) {
            Some(sub) => check(sub, v, &join(path, key), out),
            None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                let known: Vec<&str> = properties
                    .into_iter()
                    .flat_map(|p| p.keys().map(String::as_str))
                    .collect();
                out.push(format!(
                    "`{}` is not expected here (the keys are {})",
                    join(path, key),
                    known.join(", ")
                ));
            }
            None => {}
        }
    }
}

/// `minimum` and `maximum`, both inclusive.
fn check_range(schema: &Value, n: f64, shown: &str, out: &mut Vec<String>) {
    let min = schema.get("minimum").and_then(Value::as_f64);
    let max = schema.get("maximum").and_then(Value::as_f64);
    if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
        let bound = |b: Option<f64>| b.map(|b| b.to_string()).unwrap_or_default();
        out.push(format!(
            "`{shown}` = {n} is outside its scale {}..{}",
            bound(min),
            bound(max)
        ));
    }
}
