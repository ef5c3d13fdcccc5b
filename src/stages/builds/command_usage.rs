//! Token and cost figures an agent CLI reports in a machine-readable form, for the command
//! harness. Accepted: one JSON object, from the `usage` file the pipeline names, from
//! `$PIPE_USAGE`, or from the last line of the CLI's stdout that is such an object (or the whole
//! stdout, when it is one). The figures are read from the object itself or from its `usage`,
//! `stats` or `result` member:
//!
//! | figure       | keys (first found)                                                              |
//! |--------------|---------------------------------------------------------------------------------|
//! | input        | `input_tokens`, `prompt_tokens`, `inputTokens`, `promptTokens`                  |
//! | output       | `output_tokens`, `completion_tokens`, `outputTokens`, `completionTokens`        |
//! | cache read   | `cache_read_tokens`, `cached_tokens`, `cached_input_tokens`, `prompt_tokens_details.cached_tokens` (part of input) |
//! | cache (Anthropic) | `cache_read_input_tokens`, `cache_creation_input_tokens` (counted apart from input: added to it) |
//! | cost, USD    | `cost_usd`, `total_cost_usd`, `total_cost`, `cost`                              |
//!
//! Tokens are known when an input or output count is found; otherwise they are unknown (not
//! zero), and the cost is the reported one if any.

use serde_json::Value;

use crate::vocab::Usage;

/// What a CLI reported.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reported {
    pub usage: Option<Usage>,
    pub cost_usd: Option<f64>,
}

impl Reported {
    pub fn is_empty(&self) -> bool {
        self.usage.is_none() && self.cost_usd.is_none()
    }
}

const INPUT: [&str; 4] = [
    "input_tokens",
    "prompt_tokens",
    "inputTokens",
    "promptTokens",
];
const OUTPUT: [&str; 4] = [
    "output_tokens",
    "completion_tokens",
    "outputTokens",
    "completionTokens",
];
const CACHED: [&str; 4] = [
    "cache_read_tokens",
    "cached_tokens",
    "cached_input_tokens",
    "cacheReadTokens",
];
const ANTHROPIC_CACHE: [&str; 2] = ["cache_read_input_tokens", "cache_creation_input_tokens"];
const COST: [&str; 4] = ["cost_usd", "total_cost_usd", "total_cost", "cost"];

fn count(obj: &serde_json::Map<String, Value>, keys: &[&str]) -> Option<u64> {
    keys.iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_u64))
}

/// The figures of one JSON value, when it is an object that reports any.
pub fn from_value(v: &Value) -> Reported {
    let Some(top) = v.as_object() else {
        return Reported::default();
    };
    let scopes: Vec<&serde_json::Map<String, Value>> = std::iter::once(top)
        .chain(
            ["usage", "stats", "result"]
                .iter()
                .filter_map(|k| top.get(*k).and_then(Value::as_object)),
        )
        .collect();
    let usage = scopes.iter().find_map(|o| {
        let input = count(o, &INPUT);
        let output = count(o, &OUTPUT);
        if input.is_none() && output.is_none() {
            return None;
        }
        let anthropic: u64 = ANTHROPIC_CACHE
            .iter()
            .filter_map(|k| o.get(*k).and_then(Value::as_u64))
            .sum();
        let cache_read = count(o, &CACHED)
            .or_else(|| {
                o.get("prompt_tokens_details")
                    .and_then(|d| d.get("cached_tokens"))
                    .and_then(Value::as_u64)
            })
            .or_else(|| o.get("cache_read_input_tokens").and_then(Value::as_u64))
            .unwrap_or(0);
        Some(Usage {
            input_tokens: input.unwrap_or(0) + anthropic,
            output_tokens: output.unwrap_or(0),
            cache_read_tokens: cache_read,
        })
    });
    let cost_usd = scopes.iter().find_map(|o| {
        COST.iter()
            .find_map(|k| o.get(*k).and_then(Value::as_f64))
            .filter(|c| c.is_finite() && *c >= 0.0)
    });
    Reported { usage, cost_usd }
}

/// The figures of a file's content (one JSON object).
pub fn from_file(bytes: &[u8]) -> Reported {
    serde_json::from_slice::<Value>(bytes)
        .map(|v| from_value(&v))
        .unwrap_or_default()
}

/// The figures of a CLI's stdout: the whole of it when it is one JSON object, else the last
/// line that is a JSON object reporting any.
pub fn from_stdout(stdout: &str) -> Reported {
    let whole = from_file(stdout.trim().as_bytes());
    if !whole.is_empty() {
        return whole;
    }
    stdout
        .lines()
        .rev()
        .map(str::trim)
        .filter(|l| l.starts_with('{'))
        .map(|l| from_file(l.as_bytes()))
        .find(|r| !r.is_empty())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64, cache: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: cache,
        }
    }

    #[test]
    fn flat_file_with_cost() {
        let r = from_file(br#"{"input_tokens": 1200, "output_tokens": 300, "cost_usd": 0.0042}"#);
        assert_eq!(r.usage, Some(usage(1200, 300, 0)));
        assert_eq!(r.cost_usd, Some(0.0042));
    }

    #[test]
    fn openai_shape_under_usage() {
        let r = from_value(&serde_json::json!({
            "usage": {"prompt_tokens": 10, "completion_tokens": 5,
                      "prompt_tokens_details": {"cached_tokens": 4}},
            "total_cost": 0.5
        }));
        assert_eq!(r.usage, Some(usage(10, 5, 4)));
        assert_eq!(r.cost_usd, Some(0.5));
    }

    #[test]
    fn anthropic_cache_counts_are_added_to_input() {
        let r = from_value(&serde_json::json!({
            "type": "result", "total_cost_usd": 0.12,
            "usage": {"input_tokens": 5, "output_tokens": 7,
                      "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20}
        }));
        assert_eq!(r.usage, Some(usage(125, 7, 100)));
        assert_eq!(r.cost_usd, Some(0.12));
    }

    #[test]
    fn stdout_takes_the_last_reporting_json_line() {
        let out = "thinking...\n{\"type\":\"turn.completed\",\"usage\":{\"input_tokens\":1,\"output_tokens\":2}}\n{\"type\":\"done\"}\nbye\n";
        assert_eq!(from_stdout(out).usage, Some(usage(1, 2, 0)));
        let pretty = "{\n  \"usage\": {\"input_tokens\": 3, \"output_tokens\": 4}\n}\n";
        assert_eq!(from_stdout(pretty).usage, Some(usage(3, 4, 0)));
    }

    #[test]
    fn nothing_reported_is_unknown_not_zero() {
        assert!(from_stdout("all done\n").is_empty());
        assert!(from_file(b"not json").is_empty());
        assert!(from_file(br#"{"tokens": "many"}"#).is_empty());
        let cost_only = from_file(br#"{"cost": 0.25}"#);
        assert_eq!(cost_only.usage, None);
        assert_eq!(cost_only.cost_usd, Some(0.25));
        assert_eq!(from_file(br#"{"cost": -1}"#).cost_usd, None);
    }
}
