//! A live round through a real OpenAI-compatible proxy: LiteLLM's proxy, the version
//! `scripts/litellm` installs, serves on 127.0.0.1 between the real `pipe` binary and the mini
//! fixture's two models. The proxy answers ann itself (`mock_response`: one canned answer holding
//! a file for her build and a judgment for her reviews, each stage reading its part) and forwards
//! bob to an upstream this test serves on 127.0.0.1. On the way:
//!
//! - the upstream answers bob's first build with 408, which the proxy passes on (as its own
//!   `litellm.Timeout`, still 408);
//! - it answers bob's first judgment of ann with 429 and `retry-after: 1`, which reaches pipe as
//!   `llm_provider-retry-after: 1` (the proxy prefixes what it forwards); the proxy then cools
//!   bob's deployment down for 3 s and answers bob's calls itself with 429 and `retry-after: 3`
//!   (its cooldown time, however much of it is left);
//! - while bob's judgment of his own implementation is in flight, the proxy is killed and, 3 s
//!   later, started again on the same port.
//!
//! Every node must end done. The upstream saw each wait honoured and the cut judgment asked again
//! after the restart; the round's log shows the retries. Nothing leaves 127.0.0.1: the proxy
//! reads its bundled model cost map and has no master key, no database and no telemetry.

mod common;
use common::{copy_dir, ids_with};
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};

/// bob's implementation's docstring: tells the upstream which implementation bob reviews.
const BOB_MARKER: &str = "Sum of a and b.";
/// What the upstream's 429 asks to wait, in seconds (`retry-after`).
const UPSTREAM_WAIT_SECS: u64 = 1;
/// How long the proxy cools bob's deployment down after that 429, in seconds.
const COOLDOWN_SECS: u64 = 3;
/// How long the proxy stays down when it is restarted.
const DOWN_FOR: Duration = Duration::from_secs(3);
/// The round's judgment cut by the restart, and the one answered 429.
const CUT: &str = "judge:bob->bob#1";
const LIMITED: &str = "judge:bob->ann#1";

/// The judgment every judge gives (it fits the fixture's rubric).
const JUDGMENT: &str = r#"{"scores": {"spec": 8, "quality": 15}, "checks": {"core-behaviour": "pass", "no-test-gaming": "pass", "no-unsafe-side-effects": "pass"}, "verdict": "ship", "note": "fine"}"#;

/// Starts a proxy process in two steps, so that a restart costs what starting the server costs
/// and not LiteLLM's import (15 to 25 s): the process imports the proxy, prints `warm`, and runs
/// LiteLLM's own command line (`litellm --config ...`) once it reads `go` on stdin.
const LAUNCHER: &str = "\
import sys
import litellm.proxy.proxy_server
from litellm import run_server
print('warm', flush=True)
if sys.stdin.readline().strip() != 'go':
    sys.exit(0)
sys.argv = ['litellm', *sys.argv[1:]]
sys.exit(run_server())
";

#[test]
#[cfg_attr(
    not(pipe_has_litellm),
    ignore = "needs LiteLLM's proxy: run scripts/litellm, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
fn a_round_through_litellm_survives_a_408_a_429_with_a_wait_hint_and_a_restart_of_the_proxy() {
    let venv = common::needs::litellm();
    let deadline = Instant::now() + Duration::from_secs(300);
    let (upstream, upstream_url) = start_upstream();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(dir.path().join("proxy.yaml"), proxy_config(&upstream_url)).unwrap();
    // The second process imports while the first serves, ready to take over the port.
    let mut first = Proxy::spawn(&venv, dir.path(), "first", port);
    let mut second = Proxy::spawn(&venv, dir.path(), "second", port);
    first.serve(port, deadline);

    let root = round(dir.path(), port);
    let stdout = dir.path().join("pipe.out");
    let stderr = dir.path().join("pipe.err");
    let mut pipe = Running(
        common::pipe()
            .cwd(&root)
            .args(["run", "pipeline.toml", "--json"])
            .env_remove("PIPE_LOG")
            .env("NO_PROXY", "127.0.0.1")
            .spawn_with(
                File::create(&stdout).unwrap().into(),
                File::create(&stderr).unwrap().into(),
            ),
    );
    let log = root.join("out/mini-2026-01-02/log.jsonl");
    let ran = || {
        format!(
            "pipe's stdout:\n{}\nstderr:\n{}",
            std::fs::read_to_string(&stdout).unwrap_or_default(),
            std::fs::read_to_string(&stderr).unwrap_or_default()
        )
    };

    // The restart: once bob's judgment of ann is done (its waits are over) and his judgment of
    // his own implementation is held by the upstream, in flight through the proxy.
    while !(upstream.count("judge-bob") >= 1 && finished(&log, LIMITED)) {
        if let Some(status) = pipe.0.try_wait().unwrap() {
            panic!(
                "pipe ended ({status}) before the restart; the upstream saw {:?}\n{}",
                upstream.kinds(),
                ran()
            );
        }
        assert!(Instant::now() < deadline, "no restart in time\n{}", ran());
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill();
    let killed_at = Instant::now();
    upstream.killed.store(true, Ordering::SeqCst);
    second.wait_warm(deadline);
    std::thread::sleep(DOWN_FOR.saturating_sub(killed_at.elapsed()));
    second.go();
    let restarted_at = Instant::now();
    assert!(
        pipe.0.try_wait().unwrap().is_none(),
        "pipe was still running during the restart\n{}",
        ran()
    );

    let status = loop {
        if let Some(status) = pipe.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() <= deadline,
            "pipe did not finish in time; the upstream saw {:?}\n{}\nproxy after the restart:\n{}",
            upstream.kinds(),
            ran(),
            second.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        live(port),
        "the restarted proxy serves\n{}",
        second.output()
    );
    assert_eq!(status.code(), Some(0), "{}", ran());
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&stdout).unwrap())
        .unwrap_or_else(|e| panic!("{e}\n{}", ran()));
    every_node_is_done(&root, &summary);
    the_upstream_saw_the_waits_and_the_restart(&upstream, restarted_at);
    the_log_shows_the_retries(&log);
}

/// The run executed every node and `pipe status` calls each one done.
fn every_node_is_done(root: &Path, summary: &Value) {
    assert_eq!(
        ids_with(summary, "failed"),
        Vec::<String>::new(),
        "{summary}"
    );
    assert_eq!(summary["skipped"], 0, "{summary}");
    assert_eq!(ids_with(summary, "executed").len(), 12, "{summary}");
    let out = common::pipe()
        .cwd(root)
        .args(["status", "pipeline.toml", "--json"])
        .run();
    out.assert_success();
    let status = out.json();
    let not_done: Vec<&Value> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] != "done")
        .collect();
    assert!(not_done.is_empty(), "{not_done:?}");
}

/// What reached the upstream: bob's build twice (408, then answered); his judgment of ann twice,
/// the second time after the proxy's cooldown (so after every wait asked); his judgment of his
/// own implementation twice, the second time after the restart.
fn the_upstream_saw_the_waits_and_the_restart(upstream: &Upstream, restarted_at: Instant) {
    let kinds = upstream.kinds();
    let at = |kind: &str| -> Vec<Instant> {
        upstream
            .seen()
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, t)| *t)
            .collect()
    };
    assert_eq!(at("build").len(), 2, "{kinds:?}");
    let limited = at("judge-ann");
    assert_eq!(limited.len(), 2, "{kinds:?}");
    let waited = limited[1] - limited[0];
    assert!(
        waited >= Duration::from_millis(COOLDOWN_SECS * 1000 - 100),
        "bob's judgment of ann came back {waited:?} after its 429"
    );
    let cut = at("judge-bob");
    assert_eq!(cut.len(), 2, "{kinds:?}");
    assert!(
        cut[1] > restarted_at,
        "the cut judgment was asked again after the restart"
    );
    assert!(!kinds.contains(&"unknown"), "{kinds:?}");
}

/// The round's log: bob's build retried after the 408; his judgment of ann retried first after
/// the upstream's wait (`llm_provider-retry-after`), then after the proxy's (`retry-after`).
fn the_log_shows_the_retries(log: &Path) {
    let lines = log_lines(log);
    let retries_of = |node: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["message"] == "retry" && l["span"]["id"] == node)
            .collect()
    };
    let build = retries_of("build:bob#1");
    assert_eq!(build.len(), 1, "{build:?}");
    assert!(
        build[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("408")),
        "{}",
        build[0]
    );

    let limited = retries_of(LIMITED);
    assert!(limited.len() >= 2, "{limited:?}");
    // The upstream's wait, which reached pipe as `llm_provider-retry-after`.
    assert_eq!(limited[0]["hinted"], true, "{}", limited[0]);
    assert_eq!(
        limited[0]["wait_ms"],
        UPSTREAM_WAIT_SECS * 1000,
        "{}",
        limited[0]
    );
    // The proxy's own 429 during its cooldown: `retry-after`, its cooldown time.
    assert!(
        limited[1..]
            .iter()
            .any(|r| r["hinted"] == true && r["wait_ms"] == COOLDOWN_SECS * 1000),
        "{limited:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "rate limited (429)" && l["span"]["id"] == LIMITED),
        "the 429s are logged"
    );
    assert!(
        finished(log, CUT),
        "the judgment cut by the restart finished"
    );
}

/// The log's complete lines, parsed (a line being written is left out).
fn log_lines(log: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Whether the log says node `id` finished, done.
fn finished(log: &Path, id: &str) -> bool {
    log_lines(log).iter().any(|l| {
        l["message"] == "node finished" && l["span"]["id"] == id && l["outcome"] != "failed"
    })
}

/// The mini fixture in `dir`, its two models on the proxy at `port`. Backoff stays short
/// (`retry_base_ms`), while `retry_max_ms`, which caps the endpoint's wait hints, lets the
/// proxy's hints through as they are.
fn round(dir: &Path, port: u16) -> PathBuf {
    let root = dir.join("mini");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mini"),
        &root,
    );
    let pipeline = root.join("pipeline.toml");
    edit(
        &pipeline,
        "[[models]]",
        &format!(
            "[providers.litellm]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\n\
             max_concurrency = 8\ntimeout_secs = 30\nmax_retries = 4\nretry_base_ms = 5\n\
             retry_max_ms = 5000\n\n[[models]]"
        ),
    );
    edit(
        &pipeline,
        "id = \"ann\"\nprovider = \"replay\"\nmodel = \"example/ann\"",
        "id = \"ann\"\nprovider = \"litellm\"\nmodel = \"mock/ann\"",
    );
    edit(
        &pipeline,
        "id = \"bob\"\nprovider = \"replay\"\nmodel = \"example/bob\"",
        "id = \"bob\"\nprovider = \"litellm\"\nmodel = \"upstream/bob\"",
    );
    root
}

fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} lacks {from:?}", file.display());
    std::fs::write(file, text.replacen(from, to, 1)).unwrap();
}

/// The proxy's config: ann answered by the proxy itself, after a second; bob forwarded to the
/// upstream, put in cooldown by a single 429; no retries of the proxy's own, so pipe sees every
/// failure. (YAML reads JSON strings, which quote the canned answer.)
fn proxy_config(upstream_url: &str) -> String {
    let ann = format!(
        "Here it is.\n```python path=adder.py\ndef add(a, b):\n    return a + b\n```\n\nMy review: {JUDGMENT}\n"
    );
    format!(
        "model_list:
  - model_name: mock/ann
    litellm_params:
      model: openai/ann
      mock_response: {ann}
      mock_delay: 1
  - model_name: upstream/bob
    litellm_params:
      model: openai/bob
      api_base: {upstream_url}
      # The upstream takes no key; the proxy's OpenAI client wants one set.
      api_key: none
      cooldown_time: {COOLDOWN_SECS}
    model_info:
      allowed_fails_policy:
        RateLimitErrorAllowedFails: 0
litellm_settings:
  num_retries: 0
router_settings:
  num_retries: 0
",
        ann = serde_json::to_string(&ann).unwrap()
    )
}

/// A proxy process (see [`LAUNCHER`]), killed when dropped.
struct Proxy {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its stdout and stderr.
    out: PathBuf,
}

impl Proxy {
    fn spawn(venv: &Path, dir: &Path, name: &str, port: u16) -> Self {
        let out = dir.join(format!("proxy-{name}.log"));
        let file = File::create(&out).unwrap();
        let mut child = Command::new(venv.join("bin/python"))
            .arg("-c")
            .arg(LAUNCHER)
            .args(["--config", "proxy.yaml", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .current_dir(dir)
            // Nothing of the caller's environment (keys, a database URL, HTTP proxies).
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("LANG", "C.UTF-8")
            .env("NO_PROXY", "127.0.0.1")
            // The bundled model cost map, not the one on GitHub; no telemetry; no master key
            // (the proxy refuses to start without one unless told it runs locally).
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("LITELLM_TELEMETRY_DISABLED", "true")
            .env(
                "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY",
                "true",
            )
            .stdin(Stdio::piped())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", venv.join("bin/python").display()));
        let stdin = child.stdin.take();
        Self { child, stdin, out }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits until the process has imported the proxy.
    fn wait_warm(&mut self, deadline: Instant) {
        while !self.output().lines().any(|l| l == "warm") {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the proxy exited ({status}):\n{}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "the proxy did not import in time:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn go(&mut self) {
        let mut stdin = self.stdin.take().expect("told to serve once");
        stdin.write_all(b"go\n").unwrap();
    }

    /// Starts serving and waits until the proxy answers its liveness probe.
    fn serve(&mut self, port: u16, deadline: Instant) {
        self.wait_warm(deadline);
        self.go();
        while !live(port) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the proxy exited ({status}):\n{}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "the proxy did not start in time:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the proxy stops at once, whatever it was doing.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process killed when dropped (pipe, when a failed assertion ends the test early).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether the proxy on `port` answers `GET /health/liveliness` with 200.
fn live(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if s.write_all(b"GET /health/liveliness HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
}

/// A port free on 127.0.0.1 now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// bob's endpoint behind the proxy: what it was asked and when, and whether the proxy has been
/// killed (which releases the judgment held until then).
#[derive(Default)]
struct Upstream {
    /// `(kind, arrival)` per request: `build`, `judge-ann` (bob reviewing ann's implementation),
    /// `judge-bob` (his own).
    seen: Mutex<Vec<(&'static str, Instant)>>,
    killed: AtomicBool,
}

impl Upstream {
    fn seen(&self) -> Vec<(&'static str, Instant)> {
        self.seen.lock().unwrap().clone()
    }

    fn kinds(&self) -> Vec<&'static str> {
        self.seen().into_iter().map(|(k, _)| k).collect()
    }

    fn count(&self, kind: &str) -> usize {
        self.seen().iter().filter(|(k, _)| *k == kind).count()
    }
}

fn completion(content: &str) -> (StatusCode, HeaderMap, Json<Value>) {
    (
        StatusCode::OK,
        HeaderMap::new(),
        Json(json!({
            "id": "chatcmpl-upstream",
            "object": "chat.completion",
            "created": 1,
            "model": "bob",
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": content },
                "finish_reason": "stop",
            }],
            "usage": { "prompt_tokens": 200, "completion_tokens": 20, "total_tokens": 220 },
        })),
    )
}

fn error(
    status: StatusCode,
    headers: HeaderMap,
    message: &str,
) -> (StatusCode, HeaderMap, Json<Value>) {
    (
        status,
        headers,
        Json(json!({ "error": { "message": message } })),
    )
}

async fn chat(
    State(upstream): State<Arc<Upstream>>,
    Json(body): Json<Value>,
) -> (StatusCode, HeaderMap, Json<Value>) {
    let first = body["messages"][0]["content"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let kind = if first.contains("You are implementing a task") {
        "build"
    } else if first.contains("You are reviewing an implementation") && first.contains(BOB_MARKER) {
        "judge-bob"
    } else if first.contains("You are reviewing an implementation") {
        "judge-ann"
    } else {
        "unknown"
    };
    let earlier = {
        let mut seen = upstream.seen.lock().unwrap();
        seen.push((kind, Instant::now()));
        seen.iter().filter(|(k, _)| *k == kind).count() - 1
    };
    match (kind, earlier) {
        ("build", 0) => error(
            StatusCode::REQUEST_TIMEOUT,
            HeaderMap::new(),
            "request timed out",
        ),
        ("build", _) => completion(&format!(
            "Here it is.\n```python path=adder.py\ndef add(a, b):\n    \"\"\"{BOB_MARKER}\"\"\"\n    return a + b\n```\n"
        )),
        ("judge-ann", 0) => {
            let mut headers = HeaderMap::new();
            headers.insert(
                "retry-after",
                HeaderValue::from_str(&UPSTREAM_WAIT_SECS.to_string()).unwrap(),
            );
            error(StatusCode::TOO_MANY_REQUESTS, headers, "slow down")
        }
        ("judge-bob", 0) => {
            // Held in flight until the proxy is gone; the answer then reaches no one.
            let start = Instant::now();
            while !upstream.killed.load(Ordering::SeqCst)
                && start.elapsed() < Duration::from_secs(120)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            completion(JUDGMENT)
        }
        ("judge-ann" | "judge-bob", _) => completion(JUDGMENT),
        _ => error(
            StatusCode::BAD_REQUEST,
            HeaderMap::new(),
            "unexpected prompt",
        ),
    }
}

/// Starts the upstream on 127.0.0.1 in a thread of its own; returns it and its base URL. It lives
/// as long as the test process.
fn start_upstream() -> (Arc<Upstream>, String) {
    let upstream = Arc::new(Upstream::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(Arc::clone(&upstream));
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (upstream, format!("http://{addr}/v1"))
}
