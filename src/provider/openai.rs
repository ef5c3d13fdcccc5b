//! The OpenAI-compatible chat-completions provider.
//!
//! One [`OpenAiProvider`] per configured `openai` provider. A call POSTs
//! `{base_url}/chat/completions`, retries what is worth retrying (429, 5xx, network failures,
//! malformed 200 answers) with capped exponential backoff and full jitter, and reports every
//! retry through a `notify` callback so a long wait is never silent. The API key is read from the
//! environment at call time and never appears in an error or a notification.
//!
//! Concurrency adapts to rate limits (AIMD): the provider starts by letting `max_concurrency`
//! attempts through at once; a 429 halves that limit (down to 1), and every [`GROW_AFTER`]
//! consecutive answered attempts raise it by one again, up to `max_concurrency`. Each change is
//! announced through `notify`. A call holds a slot for one attempt at a time, never while it waits
//! out a backoff, so a lowered limit bounds the requests actually in flight.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::{CallSite, ChatRequest, ChatResponse, Message, ProviderError, ToolCall};
use crate::config::{ProviderConfig, ProviderKind};
use crate::vocab::Usage;

/// Consecutive answered attempts after which a lowered concurrency limit grows by one.
pub const GROW_AFTER: u32 = 8;
/// Longest wait a `Retry-After` header can impose.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// Longest excerpt of a response body quoted in an error.
const MAX_EXCERPT_CHARS: usize = 500;

/// A provider speaking the OpenAI-compatible chat-completions API.
#[derive(Debug)]
pub struct OpenAiProvider {
    /// Provider name from the pipeline, for messages.
    name: String,
    client: reqwest::Client,
    /// `{base_url}/chat/completions`.
    endpoint: String,
    /// Name of the environment variable holding the key; `None` sends no `Authorization`.
    api_key_env: Option<String>,
    /// Per-attempt timeout; `None` when the config says 0.
    timeout: Option<Duration>,
    max_retries: u32,
    /// Backoff ceiling of the first retry; doubles per retry up to `backoff_max`.
    backoff_base: Duration,
    backoff_max: Duration,
    /// Bounds the attempts in flight on this provider, adapting to rate limits.
    limiter: Limiter,
    /// Set once the endpoint has refused `response_format`; later calls leave it out.
    schema_unsupported: AtomicBool,
}

impl OpenAiProvider {
    /// A provider for an `openai` provider config.
    ///
    /// # Panics
    ///
    /// When `config.kind` is not [`ProviderKind::OpenAi`] (a caller bug), or when the HTTP client
    /// cannot be initialised (no usable TLS backend).
    pub fn new(config: &ProviderConfig) -> Self {
        let ProviderKind::OpenAi {
            base_url,
            api_key_env,
            timeout_secs,
            max_retries,
            retry_base_ms,
            retry_max_ms,
        } = &config.kind
        else {
            panic!("provider `{}` is not an openai provider", config.name);
        };
        let client = reqwest::Client::builder()
            .build()
            .expect("the HTTP client initialises");
        Self {
            name: config.name.clone(),
            client,
            endpoint: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            api_key_env: api_key_env.clone(),
            timeout: (*timeout_secs > 0).then(|| Duration::from_secs(*timeout_secs)),
            max_retries: *max_retries,
            backoff_base: Duration::from_millis(*retry_base_ms),
            backoff_max: Duration::from_millis((*retry_max_ms).max(*retry_base_ms)),
            limiter: Limiter::new(config.max_concurrency.max(1), GROW_AFTER),
            schema_unsupported: AtomicBool::new(false),
        }
    }

    /// How many attempts the provider currently lets through at once (`max_concurrency` until a
    /// 429 lowers it).
    pub fn concurrency_limit(&self) -> usize {
        self.limiter.limit()
    }

    /// Answers one request, retrying transient failures.
    ///
    /// Each attempt holds one of the provider's concurrency slots while it is in flight; waits
    /// between attempts hold none. `notify` receives one line per retry, one per change of the
    /// concurrency limit, and one when the endpoint refuses `response_format` and the request is
    /// resent without it.
    ///
    /// `latency_ms` counts from the moment the first attempt's slot is granted (queueing for it
    /// is not the endpoint's latency). `usage` includes whatever usage failed attempts reported,
    /// since those tokens are billed too.
    pub async fn chat(
        &self,
        site: &CallSite,
        request: &ChatRequest,
        notify: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<ChatResponse, ProviderError> {
        let key = self.api_key()?;
        let auth = key.as_deref().map(bearer).transpose()?;
        let redact = |text: &str| redact(text, key.as_deref());

        let mut started = None;
        let mut attempts = 0u32;
        let mut retries = 0u32;
        let mut spent = Usage::default();
        loop {
            let with_schema =
                request.json_schema.is_some() && !self.schema_unsupported.load(Ordering::Relaxed);
            let body = WireRequest::new(request, with_schema);
            let slot = self.limiter.acquire().await;
            let started = *started.get_or_insert_with(Instant::now);
            attempts += 1;
            let outcome = self.attempt(&body, auth.as_ref(), with_schema).await;
            self.observe(&slot, &outcome, site, attempts, notify);
            drop(slot);
            match outcome {
                Attempt::Answer {
                    content,
                    usage,
                    tool_calls,
                    finish_reason,
                } => {
                    spent.add(usage);
                    return Ok(ChatResponse {
                        content,
                        usage: spent,
                        latency_ms: millis(started.elapsed()),
                        attempts,
                        tool_calls,
                        finish_reason,
                    });
                }
                Attempt::SchemaUnsupported => {
                    self.schema_unsupported.store(true, Ordering::Relaxed);
                    notify(&format!(
                        "{}: endpoint does not support response_format -> resending without it",
                        site.model
                    ));
                }
                Attempt::Reject(message) => {
                    return Err(ProviderError::Rejected {
                        message: redact(&format!("{}: {message}", self.endpoint)),
                    });
                }
                Attempt::Retry {
                    reason,
                    detail,
                    retry_after,
                    usage,
                    ..
                } => {
                    spent.add(usage);
                    if retries >= self.max_retries {
                        let message = redact(&format!("{}: {detail}", self.endpoint));
                        tracing::warn!(
                            provider = %self.name,
                            model = %site.model,
                            attempts,
                            reason = %message,
                            "gave up after retries"
                        );
                        return Err(ProviderError::Infrastructure {
                            attempts,
                            message,
                            usage: spent,
                        });
                    }
                    retries += 1;
                    let wait = retry_after
                        .unwrap_or_else(|| backoff(self.backoff_base, self.backoff_max, retries));
                    let reason = redact(&reason);
                    tracing::info!(
                        provider = %self.name,
                        model = %site.model,
                        attempt = attempts,
                        retry = retries,
                        max_retries = self.max_retries,
                        wait_ms = millis(wait),
                        hinted = retry_after.is_some(),
                        reason = %reason,
                        "retry"
                    );
                    notify(&redact(&format!(
                        "{}: {} -> retry {}/{} in {:.1}s",
                        site.model,
                        reason,
                        retries,
                        self.max_retries,
                        wait.as_secs_f64()
                    )));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Tells the limiter what an attempt's outcome says of the endpoint's load (logging a 429),
    /// and announces a change of the limit.
    fn observe(
        &self,
        slot: &Slot<'_>,
        outcome: &Attempt,
        site: &CallSite,
        attempt: u32,
        notify: &(dyn Fn(&str) + Send + Sync),
    ) {
        let event = match outcome {
            Attempt::Answer { .. } => Event::Answered,
            Attempt::Retry {
                rate_limited: true,
                retry_after,
                ..
            } => {
                tracing::warn!(
                    provider = %self.name,
                    model = %site.model,
                    attempt,
                    retry_after_ms = retry_after.map(millis),
                    "rate limited (429)"
                );
                Event::RateLimited
            }
            _ => return,
        };
        let Some((from, to)) = self.limiter.observe(slot, event) else {
            return;
        };
        let after = match event {
            Event::RateLimited => "429".to_string(),
            Event::Answered => format!("{} answers in a row", self.limiter.grow_after),
        };
        tracing::info!(provider = %self.name, from, to, after = %after, "concurrency changed");
        notify(&format!(
            "{}: concurrency {from} -> {to} after {after}",
            self.name
        ));
    }

    /// A per-attempt timeout finer than the config's whole seconds (tests).
    #[cfg(test)]
    fn with_timeout(self, timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
            ..self
        }
    }

    /// Grows a lowered limit after `n` answers in a row instead of [`GROW_AFTER`] (tests).
    #[cfg(test)]
    fn with_grow_after(self, n: u32) -> Self {
        Self {
            limiter: Limiter::new(self.limiter.max, n),
            ..self
        }
    }

    /// The API key, read from the configured variable now. `Ok(None)` when no variable is
    /// configured (local servers need no key).
    fn api_key(&self) -> Result<Option<String>, ProviderError> {
        let Some(var) = &self.api_key_env else {
            return Ok(None);
        };
        match std::env::var(var) {
            Ok(key) if !key.trim().is_empty() => Ok(Some(key.trim().to_string())),
            Ok(_) | Err(std::env::VarError::NotPresent) => Err(ProviderError::Rejected {
                message: format!(
                    "provider `{}`: environment variable {var} (the API key) is not set or empty",
                    self.name
                ),
            }),
            Err(std::env::VarError::NotUnicode(_)) => Err(ProviderError::Rejected {
                message: format!(
                    "provider `{}`: environment variable {var} (the API key) is not valid UTF-8",
                    self.name
                ),
            }),
        }
    }

    /// One HTTP exchange, classified.
    async fn attempt(
        &self,
        body: &WireRequest<'_>,
        auth: Option<&HeaderValue>,
        schema_sent: bool,
    ) -> Attempt {
        let mut builder = self.client.post(&self.endpoint).json(body);
        if let Some(timeout) = self.timeout {
            builder = builder.timeout(timeout);
        }
        if let Some(auth) = auth {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        let response = match builder.send().await {
            Ok(response) => response,
            Err(err) => return self.transport_failure(&err, false),
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        match response.text().await {
            Ok(text) => classify(status, retry_after, &text, schema_sent),
            Err(err) if status.is_success() => self.transport_failure(&err, true),
            // The status says enough on its own when an error body cannot be read.
            Err(_) => classify(status, retry_after, "", schema_sent),
        }
    }

    /// Classifies a failure to send a request or (`reading_body`) to read a 2xx answer's body.
    fn transport_failure(&self, err: &reqwest::Error, reading_body: bool) -> Attempt {
        if err.is_builder() {
            return Attempt::Reject(format!("cannot build the request: {}", error_chain(err)));
        }
        let chain = error_chain(err);
        let lower = chain.to_ascii_lowercase();
        let reason = if err.is_timeout() {
            match self.timeout {
                Some(timeout) => format!("timed out after {timeout:?}"),
                None => "timed out".to_string(),
            }
        } else if err.is_connect() {
            "connection failed".to_string()
        } else if lower.contains("connection reset") {
            "connection reset".to_string()
        } else if reading_body {
            "truncated answer".to_string()
        } else if lower.contains("closed before message completed")
            || lower.contains("incomplete message")
        {
            "connection closed mid-answer".to_string()
        } else {
            "request failed".to_string()
        };
        let detail = format!("{reason}: {chain}");
        Attempt::Retry {
            reason,
            detail,
            retry_after: None,
            rate_limited: false,
            usage: Usage::default(),
        }
    }
}

/// What an attempt tells the concurrency limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// The endpoint answered with a usable completion.
    Answered,
    /// HTTP 429.
    RateLimited,
}

/// An adaptive bound on the attempts in flight, on top of a semaphore.
///
/// The semaphore holds `limit + debt` permits in all (available or held). Lowering the limit
/// forgets the permits that are available and records the rest as `debt`, paid by forgetting
/// permits as attempts give them back; raising it cancels debt first, then adds a permit. Each
/// decrease starts a new `epoch`: 429s of attempts let through before it were answered at the
/// old limit and do not lower the limit again (one halving per wave of rejections).
#[derive(Debug)]
struct Limiter {
    permits: Semaphore,
    max: usize,
    grow_after: u32,
    state: Mutex<LimitState>,
}

#[derive(Debug)]
struct LimitState {
    limit: usize,
    debt: usize,
    epoch: u64,
    /// Answered attempts since the last 429 or change of limit.
    streak: u32,
}

/// One attempt's place in the limiter; gives the permit back (or pays debt with it) on drop.
struct Slot<'a> {
    limiter: &'a Limiter,
    permit: Option<SemaphorePermit<'a>>,
    epoch: u64,
}

impl Limiter {
    fn new(max: usize, grow_after: u32) -> Self {
        Self {
            permits: Semaphore::new(max),
            max,
            grow_after: grow_after.max(1),
            state: Mutex::new(LimitState {
                limit: max,
                debt: 0,
                epoch: 0,
                streak: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LimitState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn limit(&self) -> usize {
        self.lock().limit
    }

    async fn acquire(&self) -> Slot<'_> {
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the limiter's semaphore is never closed");
        Slot {
            limiter: self,
            permit: Some(permit),
            epoch: self.lock().epoch,
        }
    }

    /// Adjusts the limit after an attempt; returns `(from, to)` when it changed.
    fn observe(&self, slot: &Slot<'_>, event: Event) -> Option<(usize, usize)> {
        let mut state = self.lock();
        let from = state.limit;
        match event {
            Event::RateLimited => {
                state.streak = 0;
                if slot.epoch != state.epoch || from == 1 {
                    return None;
                }
                let to = (from / 2).max(1);
                let cut = from - to;
                let forgotten = self.permits.forget_permits(cut);
                state.debt += cut - forgotten;
                state.limit = to;
                state.epoch += 1;
                Some((from, to))
            }
            Event::Answered => {
                if from >= self.max {
                    return None;
                }
                state.streak += 1;
                if state.streak < self.grow_after {
                    return None;
                }
                state.streak = 0;
                state.limit += 1;
                if state.debt > 0 {
                    state.debt -= 1;
                } else {
                    self.permits.add_permits(1);
                }
                Some((from, from + 1))
            }
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let mut state = self.limiter.lock();
        if state.debt > 0 {
            state.debt -= 1;
            permit.forget();
        } else {
            drop(permit);
        }
    }
}

/// What one attempt came to.
#[derive(Debug, PartialEq)]
enum Attempt {
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
    /// A 400 about `response_format` for a request that carried one.
    SchemaUnsupported,
    /// Retrying will not help.
    Reject(String),
}

/// The request body sent to the endpoint.
#[derive(Debug, Serialize)]
struct WireRequest<'a> {
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
}

impl<'a> WireRequest<'a> {
    fn new(request: &'a ChatRequest, with_schema: bool) -> Self {
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

/// Classifies a response that was read in full.
fn classify(
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
    if status.is_server_error() {
        return retry(summary, detail);
    }
    if schema_sent && status == StatusCode::BAD_REQUEST && mentions_response_format(text) {
        return Attempt::SchemaUnsupported;
    }
    Attempt::Reject(detail)
}

/// Whether an error body is about `response_format` / `json_schema`.
fn mentions_response_format(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("response_format") || lower.contains("json_schema")
}

/// `Retry-After` in seconds (the HTTP-date form is ignored), capped at [`MAX_RETRY_AFTER`].
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()?;
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())))
}

/// Wait before retry number `retry` (1-based): full jitter, uniform over
/// `0..=min(max, base * 2^(retry-1))`.
fn backoff(base: Duration, max: Duration, retry: u32) -> Duration {
    let exponent = f64::from(retry.saturating_sub(1).min(32));
    let ceiling = (base.as_secs_f64() * exponent.exp2()).min(max.as_secs_f64());
    if ceiling <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(rand::random_range(0.0..=ceiling))
}

/// The `Authorization` header for a key, marked sensitive so it never shows in debug output.
fn bearer(key: &str) -> Result<HeaderValue, ProviderError> {
    let mut value =
        HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| ProviderError::Rejected {
            message: "the API key contains characters not allowed in an HTTP header".to_string(),
        })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Replaces every occurrence of the key in a message headed for the user: an endpoint may echo
/// what it was sent.
fn redact(text: &str, key: Option<&str>) -> String {
    match key {
        Some(key) if !key.is_empty() && text.contains(key) => text.replace(key, "[redacted]"),
        _ => text.to_string(),
    }
}

/// The start of a response body, at most [`MAX_EXCERPT_CHARS`] characters.
fn excerpt(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_string();
    }
    if text.chars().count() <= MAX_EXCERPT_CHARS {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(MAX_EXCERPT_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// An error and its sources, joined with `: ` (a source already quoted by its parent is skipped).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// Milliseconds of a duration, saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::State;
    use axum::http::{HeaderMap as AxumHeaders, HeaderName, StatusCode as AxumStatus};
    use axum::routing::post;
    use serde_json::{Value, json};

    use super::*;
    use crate::vocab::Sampling;

    /// One scripted answer of the mock endpoint. `{auth}` in the body is replaced with the
    /// `Authorization` header received (to play a server that echoes credentials).
    #[derive(Clone)]
    struct Reply {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
        delay: Duration,
    }

    impl Reply {
        fn new(status: u16, body: impl Into<String>) -> Self {
            Self {
                status,
                headers: Vec::new(),
                body: body.into(),
                delay: Duration::ZERO,
            }
        }
        fn ok(content: &str) -> Self {
            Self::new(200, answer(content))
        }
        fn header(mut self, name: &'static str, value: &str) -> Self {
            self.headers.push((name, value.to_string()));
            self
        }
        fn delay(mut self, delay: Duration) -> Self {
            self.delay = delay;
            self
        }
    }

    /// What the mock endpoint received.
    #[derive(Debug, Clone)]
    struct Seen {
        path: String,
        authorization: Option<String>,
        body: Value,
    }

    /// Shared state of the mock endpoint: the script (its last reply repeats forever), what was
    /// received, and how many requests were in flight at most.
    #[derive(Default)]
    struct Mock {
        script: Mutex<VecDeque<Reply>>,
        seen: Mutex<Vec<Seen>>,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
        /// Requests in flight when each request arrived (itself included), in arrival order.
        arrivals: Mutex<Vec<usize>>,
    }

    impl Mock {
        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
        fn requests(&self) -> usize {
            self.seen.lock().unwrap().len()
        }
    }

    async fn handle(
        State(mock): State<Arc<Mock>>,
        uri: axum::http::Uri,
        headers: AxumHeaders,
        body: String,
    ) -> (AxumStatus, AxumHeaders, String) {
        let now = mock.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        mock.max_in_flight.fetch_max(now, Ordering::SeqCst);
        mock.arrivals.lock().unwrap().push(now);
        let authorization = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string());
        mock.seen.lock().unwrap().push(Seen {
            path: uri.path().to_string(),
            authorization: authorization.clone(),
            body: serde_json::from_str(&body).unwrap_or(Value::String(body)),
        });
        let reply = {
            let mut script = mock.script.lock().unwrap();
            if script.len() > 1 {
                script.pop_front()
            } else {
                script.front().cloned()
            }
        }
        .unwrap_or_else(|| Reply::ok("default"));
        tokio::time::sleep(reply.delay).await;
        mock.in_flight.fetch_sub(1, Ordering::SeqCst);
        let mut out = AxumHeaders::new();
        for (name, value) in &reply.headers {
            out.insert(HeaderName::from_static(name), value.parse().unwrap());
        }
        let body = reply
            .body
            .replace("{auth}", authorization.as_deref().unwrap_or(""));
        (AxumStatus::from_u16(reply.status).unwrap(), out, body)
    }

    /// Starts a mock endpoint on a free local port; returns its state and a base URL (with a
    /// trailing slash, which the provider must trim).
    async fn serve(script: Vec<Reply>) -> (Arc<Mock>, String) {
        let mock = Arc::new(Mock {
            script: Mutex::new(script.into()),
            ..Mock::default()
        });
        let app = Router::new()
            .fallback(post(handle))
            .with_state(Arc::clone(&mock));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (mock, format!("http://{addr}/v1/"))
    }

    fn provider(
        base_url: &str,
        key_env: Option<&str>,
        timeout_secs: u64,
        max_retries: u32,
    ) -> OpenAiProvider {
        provider_with(base_url, key_env, timeout_secs, max_retries, 4)
    }

    fn provider_with(
        base_url: &str,
        key_env: Option<&str>,
        timeout_secs: u64,
        max_retries: u32,
        max_concurrency: usize,
    ) -> OpenAiProvider {
        let config = ProviderConfig {
            name: "test".into(),
            kind: ProviderKind::OpenAi {
                base_url: base_url.into(),
                api_key_env: key_env.map(str::to_string),
                timeout_secs,
                max_retries,
                retry_base_ms: 10,
                retry_max_ms: 100,
            },
            max_concurrency,
        };
        OpenAiProvider::new(&config)
    }

    /// A well-formed answer with usage (cached tokens as `OpenAI` reports them).
    fn answer(content: &str) -> String {
        json!({
            "id": "cmpl-1",
            "object": "chat.completion",
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": content },
                "finish_reason": "stop",
            }],
            "usage": {
                "prompt_tokens": 120,
                "completion_tokens": 30,
                "total_tokens": 150,
                "prompt_tokens_details": { "cached_tokens": 100 },
            },
        })
        .to_string()
    }

    fn site() -> CallSite {
        CallSite {
            stage: crate::base::names::SafeName::new("build").unwrap(),
            model: crate::base::names::SafeName::new("alpha").unwrap(),
            subject: "1".into(),
            turn: 0,
        }
    }

    fn request() -> ChatRequest {
        ChatRequest {
            model: "test/model".into(),
            messages: vec![Message::system("be brief"), Message::user("write fizzbuzz")],
            sampling: Sampling {
                temperature: Some(0.25),
                seed: Some(7),
                max_tokens: Some(512),
            },
            json_schema: None,
            tools: Vec::new(),
        }
    }

    fn schema_request() -> ChatRequest {
        ChatRequest {
            json_schema: Some(json!({
                "type": "object",
                "properties": { "score": { "type": "integer" } },
                "required": ["score"],
            })),
            ..request()
        }
    }

    /// A `notify` callback that keeps every line.
    fn recorder() -> (Arc<Mutex<Vec<String>>>, impl Fn(&str) + Send + Sync) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        (log, move |line: &str| {
            sink.lock().unwrap().push(line.to_string());
        })
    }

    /// Sets a test-only variable. Each test uses its own variable name.
    fn set_env(var: &str, value: &str) {
        // SAFETY: edition 2024 marks `set_var` unsafe because another thread may read the
        // environment at the same moment. Every test here sets a distinct, test-only variable
        // before starting the calls that read it; no code reads these variables otherwise.
        unsafe { std::env::set_var(var, value) }
    }

    #[tokio::test]
    async fn success_sends_the_request_and_reads_answer_and_usage() {
        let (mock, base) = serve(vec![Reply::ok("fn main() {}")]).await;
        set_env("PIPE_TEST_KEY_1", "sk-test-one");
        let provider = provider(&base, Some("PIPE_TEST_KEY_1"), 5, 2);
        let (log, notify) = recorder();

        let response = provider
            .chat(&site(), &schema_request(), &notify)
            .await
            .unwrap();

        assert_eq!(response.content, "fn main() {}");
        assert_eq!(
            response.usage,
            Usage {
                input_tokens: 120,
                output_tokens: 30,
                cache_read_tokens: 100
            }
        );
        assert_eq!(response.attempts, 1);
        assert!(log.lock().unwrap().is_empty());

        let seen = mock.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/v1/chat/completions");
        assert_eq!(seen[0].authorization.as_deref(), Some("Bearer sk-test-one"));
        let body = &seen[0].body;
        assert_eq!(body["model"], "test/model");
        assert_eq!(
            body["messages"],
            json!([
                { "role": "system", "content": "be brief" },
                { "role": "user", "content": "write fizzbuzz" },
            ])
        );
        assert_eq!(body["temperature"], json!(0.25));
        assert_eq!(body["seed"], json!(7));
        assert_eq!(body["max_tokens"], json!(512));
        assert_eq!(body["response_format"]["type"], "json_schema");
        assert_eq!(body["response_format"]["json_schema"]["name"], "answer");
        assert_eq!(body["response_format"]["json_schema"]["strict"], true);
        assert_eq!(
            body["response_format"]["json_schema"]["schema"],
            schema_request().json_schema.unwrap()
        );
    }

    #[tokio::test]
    async fn tools_are_sent_and_tool_calls_read_back() {
        let reply = json!({
            "choices": [{
                "message": {
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [{
                        "id": "call_1",
                        "type": "function",
                        "function": { "name": "read_file", "arguments": "{\"path\": \"a.py\"}" },
                    }],
                },
                "finish_reason": "tool_calls",
            }],
            "usage": { "prompt_tokens": 50, "completion_tokens": 7 },
        });
        let (mock, base) = serve(vec![Reply::new(200, reply.to_string())]).await;
        let provider = provider(&base, None, 5, 0);
        let tool = json!({"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}});
        let request = ChatRequest {
            messages: vec![
                Message::user("go"),
                Message::assistant_calls("", vec![ToolCall::new("call_0", "list_dir", "{}")]),
                Message::tool("call_0", "a.py"),
            ],
            tools: vec![tool.clone()],
            ..request()
        };
        let response = provider
            .chat(&site(), &request, &|_: &str| {})
            .await
            .unwrap();
        assert_eq!(response.content, "");
        assert_eq!(
            response.tool_calls,
            vec![ToolCall::new("call_1", "read_file", r#"{"path": "a.py"}"#)]
        );
        assert_eq!(response.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(response.usage.input_tokens, 50);
        let body = &mock.seen()[0].body;
        assert_eq!(body["tools"], json!([tool]));
        assert_eq!(
            body["messages"],
            json!([
                { "role": "user", "content": "go" },
                { "role": "assistant", "content": "", "tool_calls": [
                    { "id": "call_0", "type": "function", "function": { "name": "list_dir", "arguments": "{}" } }
                ] },
                { "role": "tool", "content": "a.py", "tool_call_id": "call_0" },
            ])
        );
    }

    #[tokio::test]
    async fn malformed_tool_calls_are_retried_as_a_bad_answer() {
        let bad = json!({"choices": [{"message": {"content": null, "tool_calls": [{"id": 3}]}}]});
        let (_mock, base) = serve(vec![Reply::new(200, bad.to_string())]).await;
        let provider = provider(&base, None, 5, 0);
        let err = provider
            .chat(&site(), &request(), &|_: &str| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("malformed tool_calls"), "{err}");
    }

    #[tokio::test]
    async fn unset_sampling_and_schema_are_left_out_and_no_key_sends_no_header() {
        let (mock, base) = serve(vec![Reply::new(
            200,
            json!({
                "choices": [{ "message": { "content": "ok" } }],
                "usage": { "prompt_tokens": 10, "completion_tokens": 2, "cache_read_input_tokens": 4 },
            })
            .to_string(),
        )])
        .await;
        let provider = provider(base.trim_end_matches('/'), None, 5, 0);
        let request = ChatRequest {
            sampling: Sampling::default(),
            ..request()
        };

        let response = provider
            .chat(&site(), &request, &|_: &str| {})
            .await
            .unwrap();

        assert_eq!(response.content, "ok");
        assert_eq!(
            response.usage,
            Usage {
                input_tokens: 10,
                output_tokens: 2,
                cache_read_tokens: 4
            }
        );
        let seen = mock.seen();
        assert_eq!(seen[0].path, "/v1/chat/completions");
        assert_eq!(seen[0].authorization, None);
        let body = seen[0].body.as_object().unwrap();
        let mut keys: Vec<&str> = body.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["messages", "model"]);
    }

    #[tokio::test]
    async fn rate_limit_honours_retry_after() {
        let (mock, base) = serve(vec![
            Reply::new(429, r#"{"error":{"message":"slow down"}}"#).header("retry-after", "1"),
            Reply::ok("done"),
        ])
        .await;
        let provider = provider(&base, None, 5, 3);
        let (log, notify) = recorder();
        let started = Instant::now();

        let response = provider.chat(&site(), &request(), &notify).await.unwrap();

        assert_eq!(response.content, "done");
        assert_eq!(response.attempts, 2);
        assert!(
            started.elapsed() >= Duration::from_millis(950),
            "{:?}",
            started.elapsed()
        );
        assert!(response.latency_ms >= 950, "{}", response.latency_ms);
        assert_eq!(mock.requests(), 2);
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(log[0], "test: concurrency 4 -> 2 after 429");
        assert!(log[1].starts_with("alpha: HTTP 429"), "{}", log[1]);
        assert!(log[1].ends_with("-> retry 1/3 in 1.0s"), "{}", log[1]);
        assert_eq!(provider.concurrency_limit(), 2);
    }

    #[tokio::test]
    async fn server_errors_are_retried() {
        let (mock, base) = serve(vec![
            Reply::new(503, "unavailable"),
            Reply::new(502, "bad gateway"),
            Reply::ok("third time lucky"),
        ])
        .await;
        let provider = provider(&base, None, 5, 3);
        let (log, notify) = recorder();

        let response = provider.chat(&site(), &request(), &notify).await.unwrap();

        assert_eq!(response.content, "third time lucky");
        assert_eq!(response.attempts, 3);
        assert_eq!(mock.requests(), 3);
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 2);
        assert!(
            log[0].contains("HTTP 503") && log[0].contains("retry 1/3"),
            "{}",
            log[0]
        );
        assert!(
            log[1].contains("HTTP 502") && log[1].contains("retry 2/3"),
            "{}",
            log[1]
        );
    }

    #[tokio::test]
    async fn timeouts_are_retried_then_reported_as_infrastructure() {
        let (mock, base) = serve(vec![Reply::ok("too late").delay(Duration::from_secs(4))]).await;
        let provider = provider(&base, None, 1, 1);
        let (log, notify) = recorder();
        let started = Instant::now();

        let err = provider
            .chat(&site(), &request(), &notify)
            .await
            .unwrap_err();

        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
        match &err {
            ProviderError::Infrastructure {
                attempts,
                message,
                usage,
            } => {
                assert_eq!(*attempts, 2);
                assert!(message.contains("timed out after 1s"), "{message}");
                assert_eq!(*usage, Usage::default());
            }
            other => panic!("expected Infrastructure, got {other:?}"),
        }
        assert_eq!(mock.requests(), 2);
        assert_eq!(log.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn connection_failures_are_retried_then_reported() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let provider = provider(&format!("http://{addr}/v1"), None, 2, 2);
        let (log, notify) = recorder();

        let err = provider
            .chat(&site(), &request(), &notify)
            .await
            .unwrap_err();

        match &err {
            ProviderError::Infrastructure {
                attempts, message, ..
            } => {
                assert_eq!(*attempts, 3);
                assert!(message.contains("connection failed"), "{message}");
            }
            other => panic!("expected Infrastructure, got {other:?}"),
        }
        assert_eq!(log.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn bad_request_is_rejected_without_retry() {
        let long_tail = "x".repeat(2000);
        let (mock, base) = serve(vec![Reply::new(
            400,
            format!(r#"{{"error":{{"message":"bad request: unknown model"}}}}{long_tail}"#),
        )])
        .await;
        let provider = provider(&base, None, 5, 3);
        let (log, notify) = recorder();

        let err = provider
            .chat(&site(), &schema_request(), &notify)
            .await
            .unwrap_err();

        match &err {
            ProviderError::Rejected { message } => {
                assert!(message.contains("400"), "{message}");
                assert!(message.contains("bad request: unknown model"), "{message}");
                assert!(message.chars().count() < 700, "{message}");
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
        assert_eq!(mock.requests(), 1);
        assert!(log.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn unset_key_variable_is_rejected_before_any_request() {
        let (mock, base) = serve(vec![Reply::ok("never")]).await;
        let provider = provider(&base, Some("PIPE_TEST_KEY_6_UNSET"), 5, 3);

        let err = provider
            .chat(&site(), &request(), &|_: &str| {})
            .await
            .unwrap_err();

        match &err {
            ProviderError::Rejected { message } => {
                assert!(message.contains("PIPE_TEST_KEY_6_UNSET"), "{message}");
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
        assert_eq!(mock.requests(), 0);
    }

    #[tokio::test]
    async fn the_key_never_appears_in_errors_or_notifications() {
        const KEY: &str = "sk-SENTINEL-d41d8cd98f00b204";
        set_env("PIPE_TEST_KEY_6", KEY);
        // A hostile server that echoes the credentials it receives.
        let (mock, base) = serve(vec![
            Reply::new(500, "internal error; you sent {auth}"),
            Reply::new(401, "invalid key {auth}"),
        ])
        .await;
        let provider = provider(&base, Some("PIPE_TEST_KEY_6"), 5, 2);
        let (log, notify) = recorder();

        let rejected = provider
            .chat(&site(), &request(), &notify)
            .await
            .unwrap_err();
        assert!(
            matches!(rejected, ProviderError::Rejected { .. }),
            "{rejected:?}"
        );
        assert_eq!(mock.requests(), 2);

        // And an Infrastructure failure: every attempt echoes the key.
        let (_mock, base) = serve(vec![Reply::new(503, "overloaded ({auth})")]).await;
        let second = provider_with(&base, Some("PIPE_TEST_KEY_6"), 5, 1, 4);
        let failed = second.chat(&site(), &request(), &notify).await.unwrap_err();
        assert!(
            matches!(failed, ProviderError::Infrastructure { .. }),
            "{failed:?}"
        );

        for err in [&rejected, &failed] {
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(KEY), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
        }
        for line in log.lock().unwrap().iter() {
            assert!(!line.contains(KEY), "{line}");
        }
        assert!(!format!("{provider:?} {second:?}").contains(KEY));
    }

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn retries_429s_limits_and_giving_up_are_logged_without_the_key() {
        const KEY: &str = "sk-SENTINEL-log-5f4dcc3b5aa765d6";
        set_env("PIPE_TEST_KEY_LOG", KEY);
        let (_mock, base) = serve(vec![
            Reply::new(429, "slow down, {auth}").header("retry-after", "0"),
            Reply::new(503, "overloaded ({auth})"),
        ])
        .await;
        let provider = provider(&base, Some("PIPE_TEST_KEY_LOG"), 5, 2);
        let (_, notify) = recorder();
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || sink.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        let err = provider
            .chat(&site(), &request(), &notify)
            .await
            .unwrap_err();
        drop(guard);
        assert!(
            matches!(err, ProviderError::Infrastructure { attempts: 3, .. }),
            "{err:?}"
        );

        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains(KEY), "{text}");
        let events: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["target"] == "pipe::provider::openai")
            .collect();
        let messages: Vec<&str> = events
            .iter()
            .map(|e| e["message"].as_str().unwrap())
            .collect();
        assert_eq!(
            messages,
            [
                "rate limited (429)",
                "concurrency changed",
                "retry",
                "retry",
                "gave up after retries"
            ],
            "{text}"
        );
        assert_eq!(events[0]["attempt"], 1);
        assert_eq!(events[0]["retry_after_ms"], 0);
        assert_eq!(
            (&events[1]["from"], &events[1]["to"]),
            (&json!(4), &json!(2))
        );
        assert_eq!(events[1]["after"], "429");
        assert_eq!(events[2]["hinted"], true, "{}", events[2]);
        assert_eq!(events[2]["wait_ms"], 0);
        assert!(
            events[2]["reason"].as_str().unwrap().contains("429"),
            "{}",
            events[2]
        );
        assert_eq!(events[3]["hinted"], false);
        assert_eq!(
            (&events[3]["retry"], &events[3]["max_retries"]),
            (&json!(2), &json!(2))
        );
        assert_eq!(events[4]["attempts"], 3);
        assert!(
            events[4]["reason"].as_str().unwrap().contains("[redacted]"),
            "{}",
            events[4]
        );
    }

    #[tokio::test]
    async fn malformed_answers_are_retried_and_their_usage_counted() {
        let (mock, base) = serve(vec![
            Reply::new(200, r#"{"choices": [{"message": {"content": "cut of"#),
            Reply::new(
                200,
                r#"{"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}"#,
            ),
            Reply::new(200, r#"{"choices": [{"message": {"role": "assistant"}}]}"#),
            Reply::ok("finally"),
        ])
        .await;
        let provider = provider(&base, None, 5, 3);
        let (log, notify) = recorder();

        let response = provider.chat(&site(), &request(), &notify).await.unwrap();

        assert_eq!(response.content, "finally");
        assert_eq!(response.attempts, 4);
        assert_eq!(
            response.usage,
            Usage {
                input_tokens: 125,
                output_tokens: 31,
                cache_read_tokens: 100
            }
        );
        assert_eq!(mock.requests(), 4);
        let log = log.lock().unwrap();
        assert!(log[0].contains("invalid JSON"), "{}", log[0]);
        assert!(log[1].contains("no choices"), "{}", log[1]);
        assert!(log[2].contains("no message content"), "{}", log[2]);
    }

    #[tokio::test]
    async fn spent_retries_report_the_usage_of_failed_attempts() {
        let (mock, base) = serve(vec![Reply::new(
            200,
            r#"{"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}"#,
        )])
        .await;
        let provider = provider(&base, None, 5, 2);

        let err = provider
            .chat(&site(), &request(), &|_: &str| {})
            .await
            .unwrap_err();

        match err {
            ProviderError::Infrastructure {
                attempts,
                usage,
                message,
            } => {
                assert_eq!(attempts, 3);
                assert_eq!(
                    usage,
                    Usage {
                        input_tokens: 21,
                        output_tokens: 9,
                        cache_read_tokens: 0
                    }
                );
                assert!(message.contains("no choices"), "{message}");
            }
            other => panic!("expected Infrastructure, got {other:?}"),
        }
        assert_eq!(mock.requests(), 3);
    }

    #[tokio::test]
    async fn unsupported_response_format_falls_back_and_is_remembered() {
        let (mock, base) = serve(vec![
            Reply::new(
                400,
                r#"{"error":{"message":"Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model."}}"#,
            ),
            Reply::ok(r#"{"score": 3}"#),
        ])
        .await;
        // No retries at all: the fallback does not spend the retry budget.
        let provider = provider(&base, None, 5, 0);
        let (log, notify) = recorder();

        let response = provider
            .chat(&site(), &schema_request(), &notify)
            .await
            .unwrap();

        assert_eq!(response.content, r#"{"score": 3}"#);
        assert_eq!(response.attempts, 2);
        let seen = mock.seen();
        assert_eq!(seen.len(), 2);
        assert!(seen[0].body.get("response_format").is_some());
        assert!(seen[1].body.get("response_format").is_none());
        assert_eq!(seen[1].body["model"], "test/model");
        assert!(log.lock().unwrap()[0].contains("response_format"));

        // Later calls on the same provider leave it out from the start.
        let response = provider
            .chat(&site(), &schema_request(), &notify)
            .await
            .unwrap();
        assert_eq!(response.attempts, 1);
        let seen = mock.seen();
        assert_eq!(seen.len(), 3);
        assert!(seen[2].body.get("response_format").is_none());
    }

    #[tokio::test]
    async fn concurrency_is_bounded_by_max_concurrency() {
        let (mock, base) = serve(vec![Reply::ok("slow").delay(Duration::from_millis(200))]).await;
        let provider = provider_with(&base, None, 5, 0, 2);
        let (site, request) = (site(), request());
        let calls = (0..5).map(|_| provider.chat(&site, &request, &|_: &str| {}));

        let started = Instant::now();
        let results = futures_join_all(calls).await;

        assert!(results.iter().all(Result::is_ok));
        assert_eq!(mock.requests(), 5);
        assert_eq!(mock.max_in_flight.load(Ordering::SeqCst), 2);
        // Three waves of 200 ms.
        assert!(
            started.elapsed() >= Duration::from_millis(550),
            "{:?}",
            started.elapsed()
        );
    }

    /// Drives futures concurrently on the current task (no extra dependency for `join_all`).
    async fn futures_join_all<F: std::future::Future>(
        futures: impl Iterator<Item = F>,
    ) -> Vec<F::Output> {
        let mut set = Vec::new();
        for future in futures {
            set.push(Box::pin(future));
        }
        let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (future, output) in set.iter_mut().zip(outputs.iter_mut()) {
                if output.is_none() {
                    match future.as_mut().poll(cx) {
                        std::task::Poll::Ready(value) => *output = Some(value),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        outputs.into_iter().map(Option::unwrap).collect()
    }

    #[test]
    fn chat_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let provider = provider("http://127.0.0.1:9", None, 1, 0);
        let (site, request) = (site(), request());
        let future = provider.chat(&site, &request, &|_: &str| {});
        assert_send(&future);
    }

    #[test]
    fn endpoint_trims_a_trailing_slash() {
        assert_eq!(
            provider("http://h:1/v1/", None, 1, 0).endpoint,
            "http://h:1/v1/chat/completions"
        );
        assert_eq!(
            provider("http://h:1/v1", None, 1, 0).endpoint,
            "http://h:1/v1/chat/completions"
        );
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_capped() {
        let headers = |value: &str| {
            let mut map = HeaderMap::new();
            map.insert(RETRY_AFTER, value.parse().unwrap());
            map
        };
        assert_eq!(retry_after(&headers("3")), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&headers("0")), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers("86400")), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(&headers("-1")), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn backoff_is_jittered_exponential_and_capped() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        for _ in 0..200 {
            assert!(backoff(base, max, 1) <= Duration::from_secs(1));
            assert!(backoff(base, max, 3) <= Duration::from_secs(4));
            assert!(backoff(base, max, 40) <= max);
            assert!(backoff(base, Duration::from_millis(1500), 3) <= Duration::from_millis(1500));
            assert_eq!(backoff(Duration::ZERO, max, 5), Duration::ZERO);
        }
        // Full jitter: waits spread over the whole range rather than sitting at the ceiling.
        let waits: Vec<Duration> = (0..200).map(|_| backoff(base, max, 3)).collect();
        assert!(waits.iter().any(|w| *w < Duration::from_secs(2)));
        assert!(waits.iter().any(|w| *w > Duration::from_secs(2)));
    }

    #[test]
    fn classify_sorts_statuses() {
        let retried = |status: u16| {
            matches!(
                classify(StatusCode::from_u16(status).unwrap(), None, "{}", false),
                Attempt::Retry { .. }
            )
        };
        assert!(retried(429) && retried(500) && retried(503) && retried(504));
        assert!(!retried(400) && !retried(401) && !retried(404));
        // A 400 about response_format only means "unsupported" when one was sent.
        let body = r#"{"error":"response_format is not supported"}"#;
        assert_eq!(
            classify(StatusCode::BAD_REQUEST, None, body, true),
            Attempt::SchemaUnsupported
        );
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, None, body, false),
            Attempt::Reject(_)
        ));
    }

    #[test]
    fn excerpts_are_bounded() {
        assert_eq!(excerpt("  short  "), "short");
        assert_eq!(excerpt(""), "(empty body)");
        let long = "é".repeat(2000);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), MAX_EXCERPT_CHARS);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn the_limiter_halves_once_per_wave_pays_debt_and_grows_back() {
        let limiter = Limiter::new(4, 2);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let slots: Vec<Slot<'_>> = (0..4).map(|_| rt.block_on(limiter.acquire())).collect();
        assert_eq!(limiter.permits.available_permits(), 0);

        // Four 429s of the same wave: one halving.
        assert_eq!(limiter.observe(&slots[0], Event::RateLimited), Some((4, 2)));
        for slot in &slots[1..] {
            assert_eq!(limiter.observe(slot, Event::RateLimited), None);
        }
        assert_eq!(limiter.lock().debt, 2);
        drop(slots);
        // Two permits paid the debt, two came back.
        assert_eq!(limiter.permits.available_permits(), 2);
        assert_eq!(limiter.lock().debt, 0);

        // The next wave halves again; a lone 429 at 1 changes nothing.
        let slot = rt.block_on(limiter.acquire());
        assert_eq!(limiter.observe(&slot, Event::RateLimited), Some((2, 1)));
        drop(slot);
        assert_eq!(limiter.permits.available_permits(), 1);
        let slot = rt.block_on(limiter.acquire());
        assert_eq!(limiter.observe(&slot, Event::RateLimited), None);

        // Two answers in a row grow the limit by one; a 429 in between restarts the count.
        assert_eq!(limiter.observe(&slot, Event::Answered), None);
        let fresh = Slot {
            limiter: &limiter,
            permit: None,
            epoch: limiter.lock().epoch,
        };
        assert_eq!(limiter.observe(&fresh, Event::RateLimited), None);
        assert_eq!(limiter.observe(&slot, Event::Answered), None);
        assert_eq!(limiter.observe(&slot, Event::Answered), Some((1, 2)));
        drop(slot);
        assert_eq!(limiter.permits.available_permits(), 2);
        for _ in 0..2 {
            limiter.observe(&fresh, Event::Answered);
        }
        for _ in 0..2 {
            limiter.observe(&fresh, Event::Answered);
        }
        assert_eq!(limiter.limit(), 4);
        assert_eq!(limiter.permits.available_permits(), 4);
        // Never above the maximum.
        for _ in 0..10 {
            assert_eq!(limiter.observe(&fresh, Event::Answered), None);
        }
        assert_eq!(limiter.permits.available_permits(), 4);
    }

    #[tokio::test]
    async fn sustained_429s_shrink_concurrency_to_one_and_answers_grow_it_back() {
        let mut script = vec![
            Reply::new(429, r#"{"error":{"message":"rate limited"}}"#)
                .delay(Duration::from_millis(30));
            30
        ];
        script.push(Reply::ok("at last").delay(Duration::from_millis(20)));
        let (mock, base) = serve(script).await;
        let provider = provider_with(&base, None, 5, 100, 4).with_grow_after(3);
        let (log, notify) = recorder();
        let (site, request) = (site(), request());

        let results =
            futures_join_all((0..8).map(|_| provider.chat(&site, &request, &notify))).await;

        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let arrivals = mock.arrivals.lock().unwrap().clone();
        assert_eq!(arrivals.len(), 38);
        assert_eq!(arrivals[0..4], [1, 2, 3, 4], "{arrivals:?}");
        // After a few 429s, one request at a time for as long as the 429s last.
        assert!(arrivals[10..31].iter().all(|n| *n == 1), "{arrivals:?}");
        {
            let log = log.lock().unwrap();
            let changes: Vec<&String> = log.iter().filter(|l| l.contains("concurrency")).collect();
            assert_eq!(
                changes,
                [
                    "test: concurrency 4 -> 2 after 429",
                    "test: concurrency 2 -> 1 after 429",
                    "test: concurrency 1 -> 2 after 3 answers in a row",
                    "test: concurrency 2 -> 3 after 3 answers in a row",
                ],
                "{log:?}"
            );
        }
        assert_eq!(provider.concurrency_limit(), 3);

        // The endpoint has recovered: the limit grows back to max_concurrency and no further.
        mock.arrivals.lock().unwrap().clear();
        let results =
            futures_join_all((0..20).map(|_| provider.chat(&site, &request, &notify))).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(provider.concurrency_limit(), 4);
        let arrivals = mock.arrivals.lock().unwrap().clone();
        assert_eq!(arrivals.iter().max(), Some(&4), "{arrivals:?}");
        assert!(
            log.lock()
                .unwrap()
                .iter()
                .any(|l| l == "test: concurrency 3 -> 4 after 3 answers in a row")
        );
    }

    /// One scripted behaviour of the raw fault server, for faults axum cannot produce.
    #[derive(Clone, Debug)]
    enum Fault {
        /// A complete HTTP response (the connection closes after it).
        Respond {
            status: u16,
            headers: Vec<(&'static str, String)>,
            body: String,
        },
        /// Accept the connection and drop it at once, unread (the peer sees a reset).
        DropOnAccept,
        /// Read the request, then close with a TCP reset.
        Reset,
        /// Read the request, write part of the status line and headers, close.
        HalfResponse,
        /// Read the request and never answer.
        Hang,
        /// A 200 whose `Content-Length` promises more than the body sent before the close.
        Truncated,
    }

    impl Fault {
        fn respond(status: u16, body: impl Into<String>) -> Self {
            Self::Respond {
                status,
                headers: Vec::new(),
                body: body.into(),
            }
        }
        fn ok() -> Self {
            Self::respond(200, answer("recovered"))
        }
    }

    /// Reads one HTTP/1.1 request (headers and a `Content-Length` body).
    async fn read_request(stream: &mut tokio::net::TcpStream) -> std::io::Result<()> {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    }

    /// A raw TCP server playing `script` one connection at a time (its last entry repeats
    /// forever); returns the count of connections served and a base URL.
    async fn fault_server(script: Vec<Fault>) -> (Arc<AtomicUsize>, String) {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&served);
        tokio::spawn(async move {
            let mut script: VecDeque<Fault> = script.into();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let fault = if script.len() > 1 {
                    script.pop_front().unwrap()
                } else {
                    script.front().cloned().unwrap()
                };
                tokio::spawn(async move {
                    if matches!(fault, Fault::DropOnAccept) {
                        stream.set_zero_linger().unwrap();
                        drop(stream);
                        return;
                    }
                    if read_request(&mut stream).await.is_err() {
                        return;
                    }
                    let raw = match fault {
                        Fault::Respond {
                            status,
                            headers,
                            body,
                        } => {
                            let mut head = format!(
                                "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                                AxumStatus::from_u16(status)
                                    .unwrap()
                                    .canonical_reason()
                                    .unwrap_or("Whatever"),
                                body.len()
                            );
                            for (name, value) in headers {
                                head.push_str(name);
                                head.push_str(": ");
                                head.push_str(&value);
                                head.push_str("\r\n");
                            }
                            format!("{head}\r\n{body}")
                        }
                        Fault::Reset => {
                            stream.set_zero_linger().unwrap();
                            return;
                        }
                        Fault::HalfResponse => "HTTP/1.1 200 OK\r\ncontent-type: appl".to_string(),
                        Fault::Hang => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            return;
                        }
                        Fault::Truncated => format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4000\r\n\r\n{}",
                            &answer("never whole")[..40]
                        ),
                        Fault::DropOnAccept => unreachable!(),
                    };
                    let _ = stream.write_all(raw.as_bytes()).await;
                    let _ = stream.flush().await;
                });
            }
        });
        (served, format!("http://{addr}/v1"))
    }

    /// Usage that some failing answers report (billed although the attempt failed).
    const FAULT_USAGE: Usage = Usage {
        input_tokens: 7,
        output_tokens: 3,
        cache_read_tokens: 0,
    };

    /// Usage of [`answer`].
    const ANSWER_USAGE: Usage = Usage {
        input_tokens: 120,
        output_tokens: 30,
        cache_read_tokens: 100,
    };

    fn times(usage: Usage, n: u64) -> Usage {
        Usage {
            input_tokens: usage.input_tokens * n,
            output_tokens: usage.output_tokens * n,
            cache_read_tokens: usage.cache_read_tokens * n,
        }
    }

    /// A provider for the fault matrix: 2 retries, 300 ms per attempt, backoff of at most 20 ms.
    fn fault_provider(base: &str) -> OpenAiProvider {
        let config = ProviderConfig {
            name: "faulty".into(),
            kind: ProviderKind::OpenAi {
                base_url: base.into(),
                api_key_env: None,
                timeout_secs: 1,
                max_retries: 2,
                retry_base_ms: 5,
                retry_max_ms: 20,
            },
            max_concurrency: 4,
        };
        OpenAiProvider::new(&config).with_timeout(Duration::from_millis(300))
    }

    /// The two halves of a row of the fault matrix: the fault twice then an answer (success on
    /// the third attempt, failed attempts' usage included), and the fault forever
    /// (Infrastructure after 3 attempts, with their summed usage and `expect` in the message).
    /// Returns the notifications of both calls.
    async fn fault_matrix_row(fault: Fault, expect: &str, usage: Usage) -> Vec<String> {
        let (served, base) = fault_server(vec![fault.clone(), fault.clone(), Fault::ok()]).await;
        let provider = fault_provider(&base);
        let (log, notify) = recorder();

        let response = provider
            .chat(&site(), &request(), &notify)
            .await
            .unwrap_or_else(|e| panic!("{fault:?} then recovery: {e:?}"));
        assert_eq!(response.content, "recovered");
        assert_eq!(response.attempts, 3);
        let mut total = times(usage, 2);
        total.add(ANSWER_USAGE);
        assert_eq!(response.usage, total, "{fault:?}");
        assert_eq!(served.load(Ordering::SeqCst), 3, "{fault:?}");

        let (served, base) = fault_server(vec![fault.clone()]).await;
        let provider = fault_provider(&base);
        let err = provider
            .chat(&site(), &request(), &notify)
            .await
            .unwrap_err();
        match &err {
            ProviderError::Infrastructure {
                attempts,
                message,
                usage: spent,
            } => {
                assert_eq!(*attempts, 3, "{fault:?}");
                assert_eq!(*spent, times(usage, 3), "{fault:?}");
                assert!(message.contains(expect), "{fault:?}: {message}");
                assert!(message.contains("/v1/chat/completions"), "{message}");
            }
            other => panic!("{fault:?}: expected Infrastructure, got {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("endpoint failed after 3 attempt(s)"),
            "{err}"
        );
        assert_eq!(served.load(Ordering::SeqCst), 3, "{fault:?}");
        let log = log.lock().unwrap().clone();
        let retries = log.iter().filter(|l| l.contains("-> retry")).count();
        assert_eq!(retries, 4, "{fault:?}: {log:?}");
        log
    }

    #[tokio::test]
    async fn fault_429_with_retry_after_waits_as_told() {
        let fault = Fault::Respond {
            status: 429,
            headers: vec![("retry-after", "0.2".into())],
            body: r#"{"error":{"message":"slow down"}}"#.into(),
        };
        let started = Instant::now();
        let log = fault_matrix_row(fault, "HTTP 429 Too Many Requests", Usage::default()).await;
        // Four waits of 0.2 s in all.
        assert!(
            started.elapsed() >= Duration::from_millis(800),
            "{:?}",
            started.elapsed()
        );
        assert!(
            log.iter()
                .filter(|l| l.contains("-> retry"))
                .all(|l| l.contains("(rate limited)") && l.ends_with("in 0.2s")),
            "{log:?}"
        );
        assert!(
            log.iter()
                .any(|l| l == "faulty: concurrency 4 -> 2 after 429"),
            "{log:?}"
        );
    }

    #[tokio::test]
    async fn fault_429_without_retry_after_backs_off() {
        let fault = Fault::respond(429, r#"{"error":{"message":"slow down"}}"#);
        let started = Instant::now();
        let log = fault_matrix_row(fault, "HTTP 429 Too Many Requests", Usage::default()).await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert!(
            log.iter()
                .any(|l| l.contains("(rate limited) -> retry 2/2")),
            "{log:?}"
        );
    }

    #[tokio::test]
    async fn fault_500_with_billed_usage() {
        let body = r#"{"error":{"message":"upstream died mid-generation"},"usage":{"prompt_tokens":7,"completion_tokens":3}}"#;
        fault_matrix_row(
            Fault::respond(500, body),
            "HTTP 500 Internal Server Error: {\"error\"",
            FAULT_USAGE,
        )
        .await;
    }

    #[tokio::test]
    async fn fault_502() {
        fault_matrix_row(
            Fault::respond(502, "<html>bad gateway</html>"),
            "HTTP 502 Bad Gateway: <html>bad gateway</html>",
            Usage::default(),
        )
        .await;
    }

    #[tokio::test]
    async fn fault_503() {
        fault_matrix_row(
            Fault::respond(503, ""),
            "HTTP 503 Service Unavailable: (empty body)",
            Usage::default(),
        )
        .await;
    }

    #[tokio::test]
    async fn fault_connection_dropped_on_accept() {
        fault_matrix_row(Fault::DropOnAccept, "connection reset", Usage::default()).await;
    }

    #[tokio::test]
    async fn fault_connection_reset_after_the_request() {
        fault_matrix_row(Fault::Reset, "connection reset", Usage::default()).await;
    }

    #[tokio::test]
    async fn fault_half_a_response_then_close() {
        fault_matrix_row(
            Fault::HalfResponse,
            "connection closed mid-answer",
            Usage::default(),
        )
        .await;
    }

    #[tokio::test]
    async fn fault_hang_past_the_timeout() {
        let started = Instant::now();
        fault_matrix_row(Fault::Hang, "timed out after 300ms", Usage::default()).await;
        // Five timed-out attempts of 300 ms, and no more.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    }

    #[tokio::test]
    async fn fault_truncated_body() {
        fault_matrix_row(
            Fault::Truncated,
            "truncated answer: error decoding response body",
            Usage::default(),
        )
        .await;
    }

    #[tokio::test]
    async fn fault_invalid_json() {
        fault_matrix_row(
            Fault::respond(200, r#"{"choices": [{"message": {"content": "cut of"#),
            "invalid JSON in HTTP 200 answer: {\"choices\"",
            Usage::default(),
        )
        .await;
    }

    #[tokio::test]
    async fn fault_empty_choices() {
        fault_matrix_row(
            Fault::respond(
                200,
                r#"{"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}"#,
            ),
            "answer has no choices",
            FAULT_USAGE,
        )
        .await;
    }
}
