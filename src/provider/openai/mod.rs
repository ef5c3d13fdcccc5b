//! The OpenAI-compatible chat-completions provider.
//!
//! One [`OpenAiProvider`] per configured `openai` provider. A call POSTs
//! `{base_url}/chat/completions` with `User-Agent: pipe/<version>` and the provider's fixed
//! headers, and retries what is worth retrying: 408, 409, 425, 429, 5xx ([`wire::is_transient`]),
//! timeouts, resets and malformed 200 answers, waiting as the endpoint hints ([`hints`]) or else
//! with capped exponential backoff and full jitter. 400, 401, 403, 404, 422 and the other 4xx are
//! rejected at once: the setup is wrong. Every retry is reported through a `notify` callback so a
//! long wait is never silent. The API key is read from the environment at call time and never
//! appears in an error or a notification.
//!
//! Concurrency adapts to rate limits (AIMD) per model: each endpoint model starts with
//! `max_concurrency` attempts in flight; a 429 halves that model's limit (down to 1), and every
//! [`GROW_AFTER`] consecutive answered attempts raise it by one again, up to `max_concurrency`.
//! Other models of the same provider keep their own limits; `max_concurrency` also bounds the
//! provider's attempts in flight in all. A call holds a slot for one attempt at a time, never
//! while it waits out a backoff, so a lowered limit bounds the requests actually in flight. The
//! time a call spends throttled (waiting after a 429, or queued behind a lowered limit) is
//! reported with its answer and summed per model.
//!
//! An endpoint that refuses connections is one outage, not N failures ([`outage`]).

mod hints;
mod limiter;
mod outage;
mod wire;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use tokio::sync::Semaphore;

use super::{CallSite, ChatRequest, ChatResponse, ProviderError};
use crate::config::{ProviderConfig, ProviderKind};
use crate::vocab::Usage;
use limiter::{Event, Limiter, Slot};
use outage::Outage;
use wire::{Attempt, WireRequest, classify};

/// Consecutive answered attempts after which a lowered concurrency limit grows by one.
pub const GROW_AFTER: u32 = 8;
/// Longest excerpt of a response body quoted in an error.
const MAX_EXCERPT_CHARS: usize = 500;
/// What every request says it is.
pub const USER_AGENT: &str = concat!("pipe/", env!("CARGO_PKG_VERSION"));

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
    /// Backoff ceiling of the first retry; doubles per retry up to `backoff_max`, which also
    /// caps an endpoint's wait hint.
    backoff_base: Duration,
    backoff_max: Duration,
    /// `max_concurrency`: the provider's attempts in flight, all models together.
    permits: Semaphore,
    max_concurrency: usize,
    grow_after: u32,
    /// Each endpoint model's adaptive limit, made on its first call.
    limiters: Mutex<HashMap<String, Arc<Limiter>>>,
    /// Time spent throttled, per model of the roster.
    throttled: Mutex<BTreeMap<String, Duration>>,
    /// Reachability; none when `outage_secs` is 0 (a refused connection is retried like any
    /// other failure).
    outage: Option<Outage>,
    /// Set once the endpoint has refused `response_format`; later calls leave it out.
    schema_unsupported: AtomicBool,
}

/// One call in progress: what it has spent and how it went so far.
struct Call<'a> {
    site: &'a CallSite,
    notify: &'a (dyn Fn(&str) + Send + Sync),
    key: Option<&'a str>,
    /// When the first attempt got its slot.
    started: Option<Instant>,
    attempts: u32,
    retries: u32,
    spent: Usage,
    throttled: Duration,
}

impl Call<'_> {
    fn redact(&self, text: &str) -> String {
        redact(text, self.key)
    }
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
            outage_secs,
            headers,
        } = &config.kind
        else {
            panic!("provider `{}` is not an openai provider", config.name);
        };
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .default_headers(fixed_headers(headers))
            .build()
            .expect("the HTTP client initialises");
        let backoff_base = Duration::from_millis(*retry_base_ms);
        let backoff_max = Duration::from_millis((*retry_max_ms).max(*retry_base_ms));
        let max_concurrency = config.max_concurrency.max(1);
        Self {
            name: config.name.clone(),
            client,
            endpoint: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            api_key_env: api_key_env.clone(),
            timeout: (*timeout_secs > 0).then(|| Duration::from_secs(*timeout_secs)),
            max_retries: *max_retries,
            backoff_base,
            backoff_max,
            permits: Semaphore::new(max_concurrency),
            max_concurrency,
            grow_after: GROW_AFTER,
            limiters: Mutex::new(HashMap::new()),
            throttled: Mutex::new(BTreeMap::new()),
            outage: (*outage_secs > 0).then(|| {
                Outage::new(
                    Duration::from_secs(*outage_secs),
                    backoff_base,
                    backoff_max.min(outage::PROBE_MAX),
                )
            }),
            schema_unsupported: AtomicBool::new(false),
        }
    }

    /// How many attempts the provider currently lets through at once for an endpoint model
    /// (`max_concurrency` until a 429 lowers it).
    pub fn concurrency_limit(&self, model: &str) -> usize {
        self.limiter(model).limit()
    }

    /// Time each model of the roster has spent throttled so far, by model.
    pub fn throttled(&self) -> BTreeMap<String, Duration> {
        lock(&self.throttled).clone()
    }

    /// The adaptive limit of an endpoint model.
    fn limiter(&self, model: &str) -> Arc<Limiter> {
        let mut limiters = lock(&self.limiters);
        Arc::clone(
            limiters
                .entry(model.to_string())
                .or_insert_with(|| Arc::new(Limiter::new(self.max_concurrency, self.grow_after))),
        )
    }

    /// Answers one request, retrying transient failures.
    ///
    /// Each attempt holds one of its model's concurrency slots (and one of the provider's) while
    /// it is in flight; waits between attempts hold none. `notify` receives one line per retry,
    /// one per change of a concurrency limit, one when an outage begins and ends, and one when
    /// the endpoint refuses `response_format` and the request is resent without it.
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
        let limiter = self.limiter(&request.model);
        let mut call = Call {
            site,
            notify,
            key: key.as_deref(),
            started: None,
            attempts: 0,
            retries: 0,
            spent: Usage::default(),
            throttled: Duration::ZERO,
        };
        loop {
            let turn = match &self.outage {
                Some(outage) => Some(outage.turn().await.map_err(|gave_up| {
                    self.gave_up(
                        &call,
                        &format!(
                            "unreachable for {}s (outage_secs): {}",
                            gave_up.down_for.as_secs(),
                            gave_up.last
                        ),
                    )
                })?),
                None => None,
            };
            let with_schema =
                request.json_schema.is_some() && !self.schema_unsupported.load(Ordering::Relaxed);
            let body = WireRequest::new(request, with_schema);
            let outcome = self
                .attempt_in_slot(&limiter, &mut call, &body, auth.as_ref(), with_schema)
                .await;
            self.reachability(&outcome, &call);
            drop(turn);
            match outcome {
                Attempt::Answer {
                    content,
                    usage,
                    tool_calls,
                    finish_reason,
                } => {
                    call.spent.add(usage);
                    return Ok(self.answered(&call, content, tool_calls, finish_reason));
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
                        message: call.redact(&format!("{}: {message}", self.endpoint)),
                    });
                }
                // One outage, not one failure per call: no retry is spent; the next turn waits
                // behind the probe.
                Attempt::Unreachable { .. } if self.outage.is_some() => {}
                Attempt::Unreachable { reason, detail } => {
                    let wait = self.retry_or_give_up(&mut call, &reason, &detail, None, false)?;
                    tokio::time::sleep(wait).await;
                }
                Attempt::Retry {
                    reason,
                    detail,
                    retry_after,
                    rate_limited,
                    usage,
                } => {
                    call.spent.add(usage);
                    let wait = self.retry_or_give_up(
                        &mut call,
                        &reason,
                        &detail,
                        retry_after,
                        rate_limited,
                    )?;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One attempt inside its model's slot and a provider permit; the wait for a slot of a
    /// lowered limit counts as throttled.
    async fn attempt_in_slot(
        &self,
        limiter: &Limiter,
        call: &mut Call<'_>,
        body: &WireRequest<'_>,
        auth: Option<&HeaderValue>,
        with_schema: bool,
    ) -> Attempt {
        let queued = Instant::now();
        let lowered = limiter.limit() < limiter.max;
        let slot = limiter.acquire().await;
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the provider's semaphore is never closed");
        if lowered {
            call.throttled += queued.elapsed();
        }
        call.started.get_or_insert_with(Instant::now);
        call.attempts += 1;
        let outcome = self.attempt(body, auth, with_schema).await;
        drop(permit);
        self.observe(limiter, &slot, &outcome, call);
        outcome
    }

    /// Keeps the outage up to date with an attempt's outcome (before the probe's turn is given
    /// back, so the next probe is paced).
    fn reachability(&self, outcome: &Attempt, call: &Call<'_>) {
        let Some(outage) = &self.outage else { return };
        if let Attempt::Unreachable { detail, .. } = outcome {
            let detail = call.redact(detail);
            if outage.unreachable(&detail) {
                tracing::warn!(provider = %self.name, model = %call.site.model, reason = %detail, "endpoint unreachable");
                (call.notify)(&format!(
                    "{}: endpoint unreachable ({detail}) -> calls wait behind one probe, up to {}s",
                    self.name,
                    self.outage_tolerance().as_secs()
                ));
            }
        } else if let Some(down) = outage.reachable() {
            tracing::info!(provider = %self.name, down_ms = millis(down), "endpoint reachable again");
            (call.notify)(&format!(
                "{}: endpoint reachable again after {:.1}s",
                self.name,
                down.as_secs_f64()
            ));
        }
    }

    fn outage_tolerance(&self) -> Duration {
        self.outage
            .as_ref()
            .map_or(Duration::ZERO, Outage::tolerance)
    }

    /// The answer of a call that succeeded; its throttled time is added to the model's total.
    fn answered(
        &self,
        call: &Call<'_>,
        content: String,
        tool_calls: Vec<super::ToolCall>,
        finish_reason: Option<String>,
    ) -> ChatResponse {
        self.add_throttled(call);
        ChatResponse {
            content,
            usage: call.spent,
            latency_ms: call.started.map_or(0, |s| millis(s.elapsed())),
            attempts: call.attempts,
            tool_calls,
            finish_reason,
            throttled_ms: millis(call.throttled),
        }
    }

    fn add_throttled(&self, call: &Call<'_>) {
        if millis(call.throttled) == 0 {
            return;
        }
        *lock(&self.throttled)
            .entry(call.site.model.to_string())
            .or_default() += call.throttled;
        tracing::info!(
            provider = %self.name,
            model = %call.site.model,
            throttled_ms = millis(call.throttled),
            "call throttled"
        );
    }

    /// The error of a call that cannot go on (`detail` says why), with what it spent.
    fn gave_up(&self, call: &Call<'_>, detail: &str) -> ProviderError {
        self.add_throttled(call);
        let message = call.redact(&format!("{}: {detail}", self.endpoint));
        tracing::warn!(
            provider = %self.name,
            model = %call.site.model,
            attempts = call.attempts,
            reason = %message,
            "gave up after retries"
        );
        ProviderError::Infrastructure {
            attempts: call.attempts,
            message,
            usage: call.spent,
        }
    }

    /// After a transient failure: the wait before the next attempt (the endpoint's hint, else
    /// backoff), or the error once the retries are spent. A wait after a 429 is throttled time.
    fn retry_or_give_up(
        &self,
        call: &mut Call<'_>,
        reason: &str,
        detail: &str,
        hint: Option<Duration>,
        rate_limited: bool,
    ) -> Result<Duration, ProviderError> {
        if call.retries >= self.max_retries {
            return Err(self.gave_up(call, detail));
        }
        call.retries += 1;
        let wait = hint
            .unwrap_or_else(|| hints::backoff(self.backoff_base, self.backoff_max, call.retries));
        if rate_limited {
            call.throttled += wait;
        }
        let reason = call.redact(reason);
        tracing::info!(
            provider = %self.name,
            model = %call.site.model,
            attempt = call.attempts,
            retry = call.retries,
            max_retries = self.max_retries,
            wait_ms = millis(wait),
            hinted = hint.is_some(),
            reason = %reason,
            "retry"
        );
        (call.notify)(&call.redact(&format!(
            "{}: {} -> retry {}/{} in {:.1}s",
            call.site.model,
            reason,
            call.retries,
            self.max_retries,
            wait.as_secs_f64()
        )));
        Ok(wait)
    }

    /// Tells the model's limiter what an attempt's outcome says of the endpoint's load (logging
    /// a 429), and announces a change of the limit.
    fn observe(&self, limiter: &Limiter, slot: &Slot<'_>, outcome: &Attempt, call: &Call<'_>) {
        let event = match outcome {
            Attempt::Answer { .. } => Event::Answered,
            Attempt::Retry {
                rate_limited: true,
                retry_after,
                ..
            } => {
                tracing::warn!(
                    provider = %self.name,
                    model = %call.site.model,
                    attempt = call.attempts,
                    retry_after_ms = retry_after.map(millis),
                    "rate limited (429)"
                );
                Event::RateLimited
            }
            _ => return,
        };
        let Some((from, to)) = limiter.observe(slot, event) else {
            return;
        };
        let after = match event {
            Event::RateLimited => "429".to_string(),
            Event::Answered => format!("{} answers in a row", limiter.grow_after),
        };
        tracing::info!(provider = %self.name, model = %call.site.model, from, to, after = %after, "concurrency changed");
        (call.notify)(&format!(
            "{} on {}: concurrency {from} -> {to} after {after}",
            call.site.model, self.name
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
            grow_after: n,
            ..self
        }
    }

    /// A longest wait (backoff and hints) other than the test default (tests).
    #[cfg(test)]
    fn with_retry_max(self, max: Duration) -> Self {
        Self {
            backoff_max: max,
            ..self
        }
    }

    /// An outage tolerance and probe pacing finer than whole seconds (tests).
    #[cfg(test)]
    fn with_outage(self, tolerance: Duration, probe_base: Duration) -> Self {
        Self {
            outage: Some(Outage::new(tolerance, probe_base, probe_base * 4)),
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
        let rate_limited = status == reqwest::StatusCode::TOO_MANY_REQUESTS;
        let hint = (rate_limited || wire::is_transient(status))
            .then(|| {
                hints::wait_hint(
                    response.headers(),
                    rate_limited,
                    jiff::Timestamp::now(),
                    self.backoff_max,
                )
            })
            .flatten();
        match response.text().await {
            Ok(text) => classify(status, hint, &text, schema_sent),
            Err(err) if status.is_success() => self.transport_failure(&err, true),
            // The status says enough on its own when an error body cannot be read.
            Err(_) => classify(status, hint, "", schema_sent),
        }
    }

    /// Classifies a failure to send a request or (`reading_body`) to read a 2xx answer's body.
    fn transport_failure(&self, err: &reqwest::Error, reading_body: bool) -> Attempt {
        if err.is_builder() {
            return Attempt::Reject(format!("cannot build the request: {}", error_chain(err)));
        }
        let chain = error_chain(err);
        if refused(err) {
            let reason = "connection refused".to_string();
            return Attempt::Unreachable {
                detail: format!("{reason}: {chain}"),
                reason,
            };
        }
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

/// Whether a request failed because the endpoint refused the connection (nothing listens on
/// the port: the endpoint is down or restarting). A name that does not resolve or a TLS failure
/// is not an outage: it is retried like any other failure, and soon reported.
fn refused(err: &reqwest::Error) -> bool {
    if !err.is_connect() {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = e.source();
    }
    error_chain(err)
        .to_ascii_lowercase()
        .contains("connection refused")
}

/// The provider's fixed headers (checked when the pipeline was loaded).
fn fixed_headers(headers: &BTreeMap<String, String>) -> HeaderMap {
    headers
        .iter()
        .filter_map(|(name, value)| {
            Some((
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_str(value).ok()?,
            ))
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
mod tests;
