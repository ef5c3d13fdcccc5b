//! What goes over the wire: the request body, and the classification of what came back.

use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::excerpt;
use crate::provider::{ChatRequest, Message, ToolCall};
use crate::vocab::Usage;

/// What one attempt came to.
#[derive(Debug, PartialEq)]
pub(super) enum Attempt {
    Answer {
        content: String,
        usage: Usage,
        tool_calls: Vec<ToolCall>,
        finish_reason: Option<String>,
    },
    /// Transient failure: `reason` is short (for notifications), `detail` ends up in the error
    /// when retries run out.
    Retry {
        reason: String,
        detail: String,
        retry_after: Option<Duration>,
        /// HTTP 429: the endpoint asks for fewer calls.
        rate_limited: bool,
        usage: Usage,
    },
    /// The endpoint refused the connection (or could not be reached at all): down, or restarting.
    Unreachable { reason: String, detail: String },
    /// A 400 about `response_format` for a request that carried one.
    SchemaUnsupported,
    /// Retrying will not help.
    Reject(String),
}

/// The request body sent to the endpoint.
#[derive(Debug, Serialize)]
pub(super) struct WireRequest<'a> {
    model: &'a str,
    messages: &'a [Message],
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tools: &'a [serde_json::Value],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a serde_json::Value>,
}

impl<'a> WireRequest<'a> {
    pub(super) fn new(request: &'a ChatRequest, with_schema: bool) -> Self {
        let response_format = request
            .json_schema
            .as_ref()
            .filter(|_| with_schema)
            .map(|schema| {
                serde_json::json!({
                    "type": "json_schema",
                    "json_schema": { "name": "answer", "strict": true, "schema": schema },
                })
            });
        Self {
            model: &request.model,
            messages: &request.messages,
            temperature: request.sampling.temperature,
            seed: request.sampling.seed,
            max_tokens: request.sampling.max_tokens,
            response_format,
            tools: &request.tools,
            tool_choice: request.tool_choice.as_ref(),
        }
    }
}

/// The `usage` object of a chat-completions answer, as the various compatible APIs spell it.
#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct PromptTokensDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(wire: WireUsage) -> Self {
        let cached = wire.prompt_tokens_details.and_then(|d| d.cached_tokens);
        Usage {
            input_tokens: wire.prompt_tokens.unwrap_or(0),
            output_tokens: wire.completion_tokens.unwrap_or(0),
            cache_read_tokens: cached.or(wire.cache_read_input_tokens).unwrap_or(0),
        }
    }
}

/// Usage reported in a parsed body, zero when absent or malformed.
fn usage_of(body: &serde_json::Value) -> Usage {
    body.get("usage")
        .and_then(|u| WireUsage::deserialize(u).ok())
        .map(Usage::from)
        .unwrap_or_default()
}

/// Classifies a response that was read in full. `retry_after` is the answer's wait hint
/// ([`super::hints::wait_hint`]); it applies to a 429 and to the other transient statuses.
pub(super) fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    text: &str,
    schema_sent: bool,
) -> Attempt {
    let parsed = serde_json::from_str::<serde_json::Value>(text).ok();
    let usage = parsed.as_ref().map(usage_of).unwrap_or_default();
    let retry = |reason: String, detail: String| Attempt::Retry {
        reason,
        detail,
        retry_after: None,
        rate_limited: false,
        usage,
    };

    if status.is_success() {
        let malformed =
            |reason: &str| retry(reason.to_string(), format!("{reason}: {}", excerpt(text)));
        let Some(body) = parsed else {
            return malformed(&format!("invalid JSON in HTTP {} answer", status.as_u16()));
        };
        let choices = body.get("choices").and_then(serde_json::Value::as_array);
        let Some(choice) = choices.and_then(|c| c.first()) else {
            return malformed("answer has no choices");
        };
        let tool_calls = match choice.pointer("/message/tool_calls") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(calls) => match Vec::<ToolCall>::deserialize(calls) {
                Ok(calls) => calls,
                Err(e) => return malformed(&format!("answer has malformed tool_calls ({e})")),
            },
        };
        // An answer that only calls tools may carry no text (`"content": null`).
        let content = match choice.pointer("/message/content") {
            Some(serde_json::Value::String(text)) => text.clone(),
            None | Some(serde_json::Value::Null) if !tool_calls.is_empty() => String::new(),
            _ => return malformed("answer has no message content"),
        };
        let finish_reason = choice
            .get("finish_reason")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string);
        return Attempt::Answer {
            content,
            usage,
            tool_calls,
            finish_reason,
        };
    }

    let summary = format!("HTTP {status}");
    let detail = format!("{summary}: {}", excerpt(text));
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Attempt::Retry {
            reason: format!("{summary} (rate limited)"),
            detail,
            retry_after,
            rate_limited: true,
            usage,
        };
    }
    if is_transient(status) {
        return Attempt::Retry {
            reason: summary,
            detail,
            retry_after,
            rate_limited: false,
            usage,
        };
    }
    if schema_sent && status == StatusCode::BAD_REQUEST && mentions_response_format(text) {
        return Attempt::SchemaUnsupported;
    }
    Attempt::Reject(detail)
}

/// Statuses worth another attempt besides 429: the request timed out upstream (408), met a
/// conflicting request in flight (409), came too early (425), or the server failed (5xx). Other
/// 4xx (400, 401, 403, 404, 422, ...) say the request or the setup is wrong: retrying cannot help.
pub(super) fn is_transient(status: StatusCode) -> bool {
    status.is_server_error()
        || matches!(
            status,
            StatusCode::REQUEST_TIMEOUT | StatusCode::CONFLICT | StatusCode::TOO_EARLY
        )
}

/// Whether an error body is about `response_format` / `json_schema`.
fn mentions_response_format(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("response_format") || lower.contains("json_schema")
}
