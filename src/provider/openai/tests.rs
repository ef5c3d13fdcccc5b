use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap as AxumHeaders, HeaderName, StatusCode as AxumStatus};
use axum::routing::post;
use serde_json::{Value, json};

use reqwest::StatusCode;

use super::*;
use crate::provider::{Message, ToolCall};
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
    headers: AxumHeaders,
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
        headers: headers.clone(),
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mock = serve_on(listener, script);
    (mock, format!("http://{addr}/v1/"))
}

/// Serves the mock endpoint on a listener already bound.
fn serve_on(listener: tokio::net::TcpListener, script: Vec<Reply>) -> Arc<Mock> {
    let mock = Arc::new(Mock {
        script: Mutex::new(script.into()),
        ..Mock::default()
    });
    let app = Router::new()
        .fallback(post(handle))
        .with_state(Arc::clone(&mock));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    mock
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
            outage_secs: 0,
            headers: BTreeMap::new(),
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
        tool_choice: None,
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
    let provider = provider(&base, None, 5, 3).with_retry_max(Duration::from_secs(5));
    let (log, notify) = recorder();
    let started = Instant::now();

    let response = provider.chat(&site(), &request(), &notify).await.unwrap();

    assert_eq!(response.content, "done");
    assert_eq!(response.attempts, 2);
    // The wait after the 429 was time spent throttled.
    assert!(response.throttled_ms >= 950, "{}", response.throttled_ms);
    assert_eq!(millis(provider.throttled()["alpha"]), response.throttled_ms);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert!(response.latency_ms >= 950, "{}", response.latency_ms);
    assert_eq!(mock.requests(), 2);
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0], "alpha on test: concurrency 4 -> 2 after 429");
    assert!(log[1].starts_with("alpha: HTTP 429"), "{}", log[1]);
    assert!(log[1].ends_with("-> retry 1/3 in 1.0s"), "{}", log[1]);
    assert_eq!(provider.concurrency_limit("test/model"), 2);
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
            assert!(message.contains("connection refused"), "{message}");
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
fn classify_sorts_statuses() {
    let retried = |status: u16| {
        matches!(
            classify(StatusCode::from_u16(status).unwrap(), None, "{}", false),
            Attempt::Retry { .. }
        )
    };
    for status in [408, 409, 425, 429, 500, 502, 503, 504, 529] {
        assert!(retried(status), "{status} is retried");
    }
    for status in [400, 401, 403, 404, 405, 413, 422] {
        assert!(!retried(status), "{status} is rejected");
    }
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

    let results = futures_join_all((0..8).map(|_| provider.chat(&site, &request, &notify))).await;

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
                "alpha on test: concurrency 4 -> 2 after 429",
                "alpha on test: concurrency 2 -> 1 after 429",
                "alpha on test: concurrency 1 -> 2 after 3 answers in a row",
                "alpha on test: concurrency 2 -> 3 after 3 answers in a row",
            ],
            "{log:?}"
        );
    }
    assert_eq!(provider.concurrency_limit("test/model"), 3);

    // The endpoint has recovered: the limit grows back to max_concurrency and no further.
    mock.arrivals.lock().unwrap().clear();
    let results = futures_join_all((0..20).map(|_| provider.chat(&site, &request, &notify))).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(provider.concurrency_limit("test/model"), 4);
    let arrivals = mock.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.iter().max(), Some(&4), "{arrivals:?}");
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .any(|l| l == "alpha on test: concurrency 3 -> 4 after 3 answers in a row")
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
            retry_max_ms: 1000,
            outage_secs: 0,
            headers: BTreeMap::new(),
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
            .any(|l| l == "alpha on faulty: concurrency 4 -> 2 after 429"),
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

/// A roster model other than [`site`]'s `alpha`.
fn site_of(model: &str) -> CallSite {
    CallSite {
        model: crate::base::names::SafeName::new(model).unwrap(),
        ..site()
    }
}

fn request_for(model: &str) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        ..request()
    }
}

#[tokio::test]
async fn transient_statuses_are_retried_and_setup_errors_are_not() {
    for status in [408, 409, 425, 500, 503, 504] {
        let (mock, base) = serve(vec![
            Reply::new(status, r#"{"error":{"message":"try again"}}"#),
            Reply::ok("done"),
        ])
        .await;
        let (log, notify) = recorder();
        let response = provider(&base, None, 5, 2)
            .chat(&site(), &request(), &notify)
            .await
            .unwrap_or_else(|e| panic!("{status}: {e}"));
        assert_eq!(response.attempts, 2, "{status}");
        assert_eq!(mock.requests(), 2, "{status}");
        let log = log.lock().unwrap();
        assert!(log[0].contains(&format!("HTTP {status}")), "{log:?}");
    }
    for status in [400, 401, 403, 404, 422] {
        let (mock, base) = serve(vec![
            Reply::new(status, r#"{"error":{"message":"no"}}"#),
            Reply::ok("never"),
        ])
        .await;
        let (_, notify) = recorder();
        let err = provider(&base, None, 5, 2)
            .chat(&site(), &request(), &notify)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProviderError::Rejected { .. }),
            "{status}: {err:?}"
        );
        assert!(err.to_string().contains(&format!("HTTP {status}")), "{err}");
        assert_eq!(mock.requests(), 1, "{status}: no retry");
    }
}

/// Every spelling of a wait hint, served by the endpoint, is waited out (and no longer than
/// `retry_max_ms`).
#[tokio::test]
async fn every_wait_hint_is_honoured_and_capped() {
    // The HTTP date is made when its case runs.
    let http_date = || {
        let later = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_millis(2500))
            .unwrap();
        jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&later)
            .unwrap()
    };
    // An HTTP date has whole seconds: 2.5 s ahead is a wait of 1.5 to 2.5 s.
    let cases: [(u16, &'static str, String, u64); 7] = [
        (429, "retry-after", "0.6".into(), 600),
        (503, "retry-after", "DATE".into(), 1400),
        (429, "retry-after-ms", "650".into(), 650),
        (429, "llm_provider-retry-after", "0.6".into(), 600),
        (429, "x-ratelimit-reset-requests", "600ms".into(), 600),
        (429, "x-ratelimit-reset-tokens", "0.6s".into(), 600),
        // Capped at retry_max_ms (3 s here).
        (429, "retry-after", "30".into(), 3000),
    ];
    for (status, header, value, at_least_ms) in cases {
        let value = if value == "DATE" { http_date() } else { value };
        let (_, base) = serve(vec![
            Reply::new(status, "{}").header(header, &value),
            Reply::ok("done"),
        ])
        .await;
        let (log, notify) = recorder();
        let provider = provider(&base, None, 5, 2).with_retry_max(Duration::from_secs(3));
        let started = Instant::now();
        provider.chat(&site(), &request(), &notify).await.unwrap();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(at_least_ms) && took < Duration::from_millis(3900),
            "{header}: {value}: {took:?}"
        );
        let log = log.lock().unwrap();
        assert!(log.iter().any(|l| l.contains("-> retry 1/2")), "{log:?}");
    }
}

#[tokio::test]
async fn user_agent_and_fixed_headers_are_sent() {
    let (mock, base) = serve(vec![Reply::ok("hi")]).await;
    let config = ProviderConfig {
        name: "router".into(),
        kind: ProviderKind::OpenAi {
            base_url: base,
            api_key_env: None,
            timeout_secs: 5,
            max_retries: 0,
            retry_base_ms: 10,
            retry_max_ms: 100,
            outage_secs: 0,
            headers: BTreeMap::from([
                (
                    "HTTP-Referer".to_string(),
                    "https://bench.example".to_string(),
                ),
                ("X-Title".to_string(), "pipe round".to_string()),
            ]),
        },
        max_concurrency: 1,
    };
    let (_, notify) = recorder();
    OpenAiProvider::new(&config)
        .chat(&site(), &request(), &notify)
        .await
        .unwrap();
    let seen = mock.seen();
    let h = &seen[0].headers;
    assert_eq!(
        h["user-agent"].to_str().unwrap(),
        format!("pipe/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(h["http-referer"], "https://bench.example");
    assert_eq!(h["x-title"], "pipe round");
}

/// One model's 429s lower that model's limit only; the other model of the same provider keeps
/// its own, and the throttled time is the first model's alone.
#[tokio::test]
async fn a_429_throttles_its_own_model_only() {
    let (_, base) = serve(vec![
        Reply::new(429, "{}").header("retry-after", "0.3"),
        Reply::ok("done"),
    ])
    .await;
    let provider = provider(&base, None, 5, 3).with_retry_max(Duration::from_secs(5));
    let (log, notify) = recorder();
    let slow = provider
        .chat(&site_of("alpha"), &request_for("vendor/slow"), &notify)
        .await
        .unwrap();
    let fast = provider
        .chat(&site_of("bravo"), &request_for("vendor/fast"), &notify)
        .await
        .unwrap();
    assert_eq!(provider.concurrency_limit("vendor/slow"), 2);
    assert_eq!(provider.concurrency_limit("vendor/fast"), 4);
    assert!(slow.throttled_ms >= 290, "{}", slow.throttled_ms);
    assert_eq!(fast.throttled_ms, 0);
    let throttled = provider.throttled();
    assert!(throttled.contains_key("alpha") && !throttled.contains_key("bravo"));
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .any(|l| l == "alpha on test: concurrency 4 -> 2 after 429")
    );
}

/// A port nothing listens on yet.
fn free_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// The endpoint is down when eight calls start and comes back 1.2 s later: every call answers,
/// none spends a retry, the calls wait behind one probe (a handful of refused connections, not
/// eight calls' worth of retries), and the outage is announced once and its end once.
#[tokio::test]
async fn an_outage_is_one_event_and_no_call_fails() {
    let addr = free_port();
    let provider = Arc::new(
        provider(&format!("http://{addr}/v1"), None, 5, 1)
            .with_outage(Duration::from_secs(30), Duration::from_millis(50)),
    );
    let (log, notify) = recorder();
    let notify = Arc::new(notify);
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let (provider, notify) = (provider.clone(), notify.clone());
            tokio::spawn(async move {
                let site = CallSite {
                    subject: i.to_string(),
                    ..site()
                };
                provider.chat(&site, &request(), &*notify).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let mock = serve_on(listener, vec![Reply::ok("back")]);
    for call in calls {
        let response = call.await.unwrap().expect("no call fails");
        assert_eq!(response.content, "back");
    }
    assert_eq!(mock.requests(), 8, "one answered request per call");
    let log = log.lock().unwrap();
    let unreachable = log
        .iter()
        .filter(|l| l.contains("endpoint unreachable"))
        .count();
    let back = log.iter().filter(|l| l.contains("reachable again")).count();
    assert_eq!((unreachable, back), (1, 1), "{log:?}");
    assert!(
        !log.iter().any(|l| l.contains("-> retry")),
        "no retry spent on the outage: {log:?}"
    );
}

/// An endpoint gone for longer than the tolerance fails every waiting call, saying for how long
/// and why.
#[tokio::test]
async fn an_outage_past_the_tolerance_fails_the_calls() {
    let addr = free_port();
    let provider = Arc::new(
        provider(&format!("http://{addr}/v1"), None, 5, 5)
            .with_outage(Duration::from_millis(600), Duration::from_millis(50)),
    );
    let started = Instant::now();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let provider = provider.clone();
            tokio::spawn(async move {
                let (_, notify) = recorder();
                provider.chat(&site(), &request(), &notify).await
            })
        })
        .collect();
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, ProviderError::Infrastructure { .. }),
            "{message}"
        );
        assert!(message.contains("(outage_secs)"), "{message}");
        assert!(message.contains("connection refused"), "{message}");
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(3),
        "{took:?}"
    );
}
