//! The OpenAI-compatible chat-completions provider.
//!
//! One [`OpenAiProvider`] per configured `openai` provider. A call POSTs
//! `{base_url}/chat/completions`, retries what is worth retrying (429, 5xx, network failures,
//! malformed 200 answers) with jittered exponential backoff, and reports every retry through a
//! `notify` callback so a long wait is never silent. The API key is read from the environment at
//! call time and never appears in an error or a notification.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::{CallSite, ChatRequest, ChatResponse, Message, ProviderError, Usage};
use crate::config::{ProviderConfig, ProviderKind};

/// Default backoff base between retries.
const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
/// Longest backoff wait, whatever the attempt number.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
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
    backoff_base: Duration,
    /// Bounds the calls in flight on this provider.
    permits: Semaphore,
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
            backoff_base: DEFAULT_BACKOFF,
            permits: Semaphore::new(config.max_concurrency.max(1)),
            schema_unsupported: AtomicBool::new(false),
        }
    }

    /// Backoff base for retries (default 1 s); tests set it small.
    #[must_use]
    pub fn with_backoff(self, base: Duration) -> Self {
        Self {
            backoff_base: base,
            ..self
        }
    }

    /// Answers one request, retrying transient failures.
    ///
    /// Holds one of the provider's concurrency permits for the whole call (every attempt and
    /// every wait). `notify` receives one line per retry, and one when the endpoint refuses
    /// `response_format` and the request is resent without it.
    ///
    /// `latency_ms` counts from the moment the permit is granted (queueing for a permit is not
    /// the endpoint's latency). `usage` includes whatever usage failed attempts reported, since
    /// those tokens are billed too.
    pub async fn chat(
        &self,
        site: &CallSite,
        request: &ChatRequest,
        notify: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<ChatResponse, ProviderError> {
        let key = self.api_key()?;
        let auth = key.as_deref().map(bearer).transpose()?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ProviderError::Infrastructure {
                attempts: 0,
                message: format!("provider `{}` is shut down", self.name),
                usage: Usage::default(),
            })?;
        let started = Instant::now();
        let redact = |text: &str| redact(text, key.as_deref());

        let mut attempts = 0u32;
        let mut retries = 0u32;
        let mut spent = Usage::default();
        loop {
            let with_schema =
                request.json_schema.is_some() && !self.schema_unsupported.load(Ordering::Relaxed);
            let body = WireRequest::new(request, with_schema);
            attempts += 1;
            match self.attempt(&body, auth.as_ref(), with_schema).await {
                Attempt::Answer { content, usage } => {
                    spent.add(usage);
                    return Ok(ChatResponse {
                        content,
                        usage: spent,
                        latency_ms: millis(started.elapsed()),
                        attempts,
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
                } => {
                    spent.add(usage);
                    if retries >= self.max_retries {
                        return Err(ProviderError::Infrastructure {
                            attempts,
                            message: redact(&format!("{}: {detail}", self.endpoint)),
                            usage: spent,
                        });
                    }
                    retries += 1;
                    let wait = retry_after.unwrap_or_else(|| backoff(self.backoff_base, retries));
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
            Err(err) => return self.transport_failure(&err),
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        match response.text().await {
            Ok(text) => classify(status, retry_after, &text, schema_sent),
            Err(err) if status.is_success() => {
                let mut failure = self.transport_failure(&err);
                if let Attempt::Retry { reason, .. } = &mut failure {
                    *reason = format!("truncated response ({reason})");
                }
                failure
            }
            // The status says enough on its own when an error body cannot be read.
            Err(_) => classify(status, retry_after, "", schema_sent),
        }
    }

    /// Classifies a failure to send a request or read its answer.
    fn transport_failure(&self, err: &reqwest::Error) -> Attempt {
        if err.is_builder() {
            return Attempt::Reject(format!("cannot build the request: {}", error_chain(err)));
        }
        let reason = if err.is_timeout() {
            match self.timeout {
                Some(timeout) => format!("timed out after {}s", timeout.as_secs()),
                None => "timed out".to_string(),
            }
        } else if err.is_connect() {
            "connection failed".to_string()
        } else {
            "request failed".to_string()
        };
        let detail = format!("{reason}: {}", error_chain(err));
        Attempt::Retry {
            reason,
            detail,
            retry_after: None,
            usage: Usage::default(),
        }
    }
}

/// What one attempt came to.
#[derive(Debug, PartialEq)]
enum Attempt {
    Answer {
        content: String,
        usage: Usage,
    },
    /// Transient failure: `reason` is short (for notifications), `detail` ends up in the error
    /// when retries run out.
    Retry {
        reason: String,
        detail: String,
        retry_after: Option<Duration>,
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
        let Some(content) = choice
            .pointer("/message/content")
            .and_then(serde_json::Value::as_str)
        else {
            return malformed("answer has no message content");
        };
        return Attempt::Answer {
            content: content.to_string(),
            usage,
        };
    }

    let summary = format!("HTTP {status}");
    let detail = format!("{summary}: {}", excerpt(text));
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Attempt::Retry {
            reason: format!("{summary} (rate limited)"),
            detail,
            retry_after,
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

/// Wait before retry number `retry` (1-based): full jitter over `base * 2^(retry-1)`, capped at
/// [`MAX_BACKOFF`].
fn backoff(base: Duration, retry: u32) -> Duration {
    let exponent = f64::from(retry.saturating_sub(1).min(32));
    let ceiling = (base.as_secs_f64() * exponent.exp2()).min(MAX_BACKOFF.as_secs_f64());
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
    use crate::provider::Sampling;

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
            },
            max_concurrency,
        };
        OpenAiProvider::new(&config).with_backoff(Duration::from_millis(10))
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
            stage: "build".into(),
            model: "alpha".into(),
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
        assert_eq!(log.len(), 1);
        assert!(log[0].starts_with("alpha: HTTP 429"), "{}", log[0]);
        assert!(log[0].ends_with("-> retry 1/3 in 1.0s"), "{}", log[0]);
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
        for _ in 0..200 {
            assert!(backoff(base, 1) <= Duration::from_secs(1));
            assert!(backoff(base, 3) <= Duration::from_secs(4));
            assert!(backoff(base, 40) <= MAX_BACKOFF);
            assert_eq!(backoff(Duration::ZERO, 5), Duration::ZERO);
        }
        // Full jitter: waits spread over the whole range rather than sitting at the ceiling.
        let waits: Vec<Duration> = (0..200).map(|_| backoff(base, 3)).collect();
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
}
