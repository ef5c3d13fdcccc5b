//! A flaky endpoint seen from a whole round: the real `pipe` binary runs the mini fixture with one
//! model (bob) moved to a local OpenAI-compatible server that builds normally, answers one
//! judgment with prose instead of the JSON the rubric asks for (a dropout after the repair turn)
//! and fails the other with 503 until it "recovers". The failed judgment must fail its node only:
//! aggregate and publish still run, the report labels the hole as the infrastructure's, `status`
//! names the failure, and the next run redoes that node and what follows it, nothing else.

mod common;
use common::{copy_dir, ids_with, read_json};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};

/// bob's implementation; its docstring tells the server which implementation a judge reviews.
const BOB_MARKER: &str = "Sum of a and b.";

/// The mock endpoint: what it was asked, and whether it has recovered.
#[derive(Default)]
struct Endpoint {
    recovered: AtomicBool,
    /// The next build request gets a 429 asking for a 300 ms wait.
    throttle_build: AtomicBool,
    /// Every build request gets a 503.
    fail_builds: AtomicBool,
    /// `(kind, turn)` per request: `build`, `judge-bob` (bob's own implementation), `judge-ann`.
    seen: Mutex<Vec<(String, usize)>>,
}

impl Endpoint {
    fn seen(&self) -> Vec<(String, usize)> {
        self.seen.lock().unwrap().clone()
    }
}

fn completion(content: &str) -> Json<Value> {
    Json(json!({
        "choices": [{ "message": { "role": "assistant", "content": content } }],
        "usage": { "prompt_tokens": 200, "completion_tokens": 20 },
    }))
}

async fn chat(
    State(endpoint): State<Arc<Endpoint>>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let first = messages
        .first()
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string();
    // A repair turn resends the first prompt, the answer, and the complaint.
    let turn = messages.len() / 2;
    let kind = if first.contains("You are implementing a task") {
        "build"
    } else if first.contains("You are reviewing an implementation") && first.contains(BOB_MARKER) {
        "judge-bob"
    } else if first.contains("You are reviewing an implementation") {
        "judge-ann"
    } else {
        "unknown"
    };
    endpoint.seen.lock().unwrap().push((kind.to_string(), turn));
    if kind == "build" && endpoint.throttle_build.swap(false, Ordering::SeqCst) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after-ms", "300")],
            Json(json!({ "error": { "message": "rate limited" } })),
        )
            .into_response();
    }
    if kind == "build" && endpoint.fail_builds.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": { "message": "upstream overloaded" } })),
        )
            .into_response();
    }
    let answer: (StatusCode, Json<Value>) = match kind {
        "build" => (
            StatusCode::OK,
            completion(&format!(
                "Here it is.\n```python path=adder.py\ndef add(a, b):\n    \"\"\"{BOB_MARKER}\"\"\"\n    return a + b\n```\n"
            )),
        ),
        "judge-bob" => (
            StatusCode::OK,
            completion("Looks good to me, I would give it a nine out of ten."),
        ),
        "judge-ann" if endpoint.recovered.load(Ordering::SeqCst) => (
            StatusCode::OK,
            completion(
                r#"{"scores": {"spec": 8, "quality": 15}, "checks": {"core-behaviour": "pass", "no-test-gaming": "pass", "no-unsafe-side-effects": "pass"}, "verdict": "ship", "note": "after the outage"}"#,
            ),
        ),
        "judge-ann" => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": { "message": "overloaded, try later" } })),
        ),
        _ => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": { "message": "unexpected prompt" } })),
        ),
    };
    answer.into_response()
}

/// Starts the endpoint on 127.0.0.1 in a thread of its own (the test itself is synchronous);
/// returns its state and base URL. The server lives as long as the test process.
fn start_endpoint() -> (Arc<Endpoint>, String) {
    let endpoint = Arc::new(Endpoint::default());
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(Arc::clone(&endpoint));
    (endpoint, common::serve_in_thread(app))
}

fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} lacks {from:?}", file.display());
    std::fs::write(file, text.replacen(from, to, 1)).unwrap();
}

fn pipe(root: &Path, args: &[&str]) -> (i32, Value, String) {
    let out = common::pipe().cwd(root).args(args).run();
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {} stderr {}", out.stdout, out.stderr));
    (out.code(), v, out.stderr)
}

/// The report's table row of a judge, in the section about the implementation `model`
/// (`### ann (...)` under "Per implementation").
fn report_row<'a>(report: &'a str, model: &str, judge: &str) -> &'a str {
    let section = report
        .split("\n#")
        .find(|s| s.starts_with(&format!("## {model} (")))
        .unwrap_or_else(|| panic!("no section about {model} in:\n{report}"));
    section
        .lines()
        .find(|l| l.starts_with(&format!("| {judge} |")))
        .unwrap_or_else(|| panic!("no row of {judge} about {model} in:\n{section}"))
}

#[test]
fn a_judgment_failing_with_503_fails_its_node_only_and_is_redone_after_recovery() {
    let (endpoint, base_url) = start_endpoint();
    let (_dir, root) = flaky_round(&base_url);

    // First run: the endpoint fails bob's judgment of ann's implementation with 503 throughout.
    first_run_fails_one_judgment(&endpoint, &root);
    let round = root.join("out/mini-2026-01-02");
    judgments_keep_the_dropout_and_not_the_failure(&round);
    the_report_labels_the_hole_as_infrastructure(&round);
    status_names_the_failure(&root);

    // Second run, the endpoint recovered: that judgment, and what follows it, only.
    endpoint.recovered.store(true, Ordering::SeqCst);
    let before = endpoint.seen().len();
    let (code, summary, stderr) = pipe(&root, &["run", "pipeline.toml", "--json"]);
    assert_eq!(code, 0, "{summary} {stderr}");
    assert_eq!(
        ids_with(&summary, "executed"),
        ["aggregate", "judge:bob->ann#1", "publish"],
        "{summary}"
    );
    assert_eq!(summary["cached"], 9, "{summary}");
    assert_eq!(endpoint.seen()[before..], [("judge-ann".to_string(), 0)]);
    let report = std::fs::read_to_string(round.join("report.md")).unwrap();
    assert!(!report.contains("(infrastructure: "), "{report}");
    assert!(!report.contains("## Infrastructure problems"), "{report}");
    assert!(
        report_row(&report, "ann", "bob").contains("after the outage"),
        "{report}"
    );
}

/// A copy of the mini round in a temp dir whose model bob asks the endpoint at `base_url`.
fn flaky_round(base_url: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().join("mini");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mini"),
        &root,
    );
    let pipeline = root.join("pipeline.toml");
    edit(
        &pipeline,
        "[[models]]",
        &format!(
            "[providers.local]\nkind = \"openai\"\nbase_url = \"{base_url}\"\nmax_concurrency = 2\n\
             timeout_secs = 10\nmax_retries = 2\nretry_base_ms = 5\nretry_max_ms = 20\n\n[[models]]"
        ),
    );
    edit(
        &pipeline,
        "id = \"bob\"\nprovider = \"replay\"",
        "id = \"bob\"\nprovider = \"local\"",
    );
    (dir, root)
}

/// The first run: bob's judgment of ann fails after its retries, everything else runs.
fn first_run_fails_one_judgment(endpoint: &Endpoint, root: &Path) {
    let (code, summary, stderr) = pipe(root, &["run", "pipeline.toml", "--json"]);
    assert_eq!(code, 1, "{summary} {stderr}");
    assert_eq!(
        ids_with(&summary, "failed"),
        ["judge:bob->ann#1"],
        "{summary}"
    );
    assert_eq!(summary["skipped"], 0, "{summary}");
    let executed = ids_with(&summary, "executed");
    for id in ["aggregate", "publish", "build:bob#1", "judge:bob->bob#1"] {
        assert!(executed.iter().any(|e| e == id), "{id} not run: {summary}");
    }
    assert_eq!(executed.len(), 11, "{summary}");
    let mut seen = endpoint.seen();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("build".to_string(), 0),
            // Three attempts: the first and max_retries = 2 more.
            ("judge-ann".to_string(), 0),
            ("judge-ann".to_string(), 0),
            ("judge-ann".to_string(), 0),
            // The prose answer, and the repair turn's.
            ("judge-bob".to_string(), 0),
            ("judge-bob".to_string(), 1),
        ]
    );
}

/// bob's build completed; his judgment of his own implementation is a dropout (a result); the
/// failed judgment left none.
fn judgments_keep_the_dropout_and_not_the_failure(round: &Path) {
    let build = read_json(&round.join("nodes/build/bob/1/build.json"));
    assert_eq!(build["outcome"], "completed", "{build}");
    // bob's own implementation, judged by bob: a dropout (a result), not a failure.
    let judgments: Vec<Value> = walk(&round.join("nodes/judge"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "judgment.json"))
        .map(|p| read_json(&p))
        .collect();
    let own = judgments
        .iter()
        .find(|j| j["judge"] == "bob" && j["impl"] == "bob")
        .expect("bob's judgment of bob");
    assert_eq!(own["turns"], 2, "{own}");
    assert!(
        own["dropout"]
            .as_str()
            .is_some_and(|d| d.starts_with("invalid answer after a repair turn")),
        "{own}"
    );
    assert!(
        !judgments
            .iter()
            .any(|j| j["judge"] == "bob" && j["impl"] == "ann"),
        "a failed node leaves no judgment"
    );
}

/// The round data and the report name the failed judgment as the infrastructure's.
fn the_report_labels_the_hole_as_infrastructure(round: &Path) {
    let data = read_json(&round.join("nodes/aggregate/round-data.json"));
    let hole = data["judgments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["judge"] == "bob" && j["model"] == "ann")
        .unwrap_or_else(|| panic!("no record of the failed judgment: {data}"));
    assert_eq!(hole["infrastructure"], true, "{hole}");

    let report = std::fs::read_to_string(round.join("report.md")).unwrap();
    let row = report_row(&report, "ann", "bob");
    assert!(row.contains("(infrastructure: "), "{row}");
    let row = report_row(&report, "bob", "bob");
    assert!(row.contains("(dropout: invalid answer"), "{row}");
    assert!(report.contains("## Infrastructure problems"), "{report}");
    assert!(report.contains("judge:bob->ann#1"), "{report}");
    // One label per failure.
    assert!(
        !report.contains("infrastructure: infrastructure"),
        "{report}"
    );
    assert!(
        report.contains("`judge:bob->ann#1` (infrastructure): endpoint failed after 3 attempt(s)"),
        "{report}"
    );
}

/// `pipe status` names the failed node and why; what follows it waits to be redone.
fn status_names_the_failure(root: &Path) {
    let (code, status, _) = pipe(root, &["status", "pipeline.toml", "--json"]);
    assert_eq!(code, 0);
    let node = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "judge:bob->ann#1")
        .unwrap()
        .clone();
    assert_eq!(node["state"], "failed", "{node}");
    let why = node["why"].as_str().unwrap();
    assert!(why.starts_with("infrastructure: "), "{why}");
    assert!(
        why.contains("after 3 attempt(s)") && why.contains("503"),
        "{why}"
    );
    // What follows the failed node waits to be redone; the rest is done.
    let mut not_done: Vec<(&str, &str)> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] != "done")
        .map(|n| (n["id"].as_str().unwrap(), n["state"].as_str().unwrap()))
        .collect();
    not_done.sort_unstable();
    assert_eq!(
        not_done,
        [
            ("aggregate", "stale"),
            ("judge:bob->ann#1", "failed"),
            ("publish", "stale")
        ],
        "{status}"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// A 429 with a wait hint on bob's build: the build waits as told and succeeds, and the report
/// and the run log say how long bob was throttled.
#[test]
#[cfg_attr(
    not(pipe_has_bwrap),
    ignore = "needs bubblewrap that can make namespaces (the gate's local sandbox): apt install bubblewrap"
)]
fn a_throttled_model_is_timed_in_the_report_and_the_log() {
    let (endpoint, base_url) = start_endpoint();
    endpoint.recovered.store(true, Ordering::SeqCst);
    endpoint.throttle_build.store(true, Ordering::SeqCst);
    let (_dir, root) = flaky_round(&base_url);
    // Hints are capped by retry_max_ms: let the 300 ms one through.
    edit(
        &root.join("pipeline.toml"),
        "retry_max_ms = 20",
        "retry_max_ms = 2000",
    );
    let (code, summary, stderr) = pipe(&root, &["run", "pipeline.toml", "--json"]);
    assert_eq!(code, 0, "{summary} {stderr}");
    let round = root.join("out/mini-2026-01-02");
    let agg = read_json(&round.join("nodes/aggregate/aggregate.json"));
    let throttled = agg["throttled"].as_array().unwrap();
    assert_eq!(throttled.len(), 1, "{agg}");
    assert_eq!(throttled[0]["model"], "bob");
    assert!(throttled[0]["build_ms"].as_u64().unwrap() >= 300, "{agg}");
    assert_eq!(throttled[0]["judge_ms"], 0);
    let report = std::fs::read_to_string(round.join("report.md")).unwrap();
    assert!(report.contains("## Throttling"), "{report}");
    assert!(report.contains("| bob | 0.3 s | 0.0 s |"), "{report}");
    let log = std::fs::read_to_string(round.join("log.jsonl")).unwrap();
    let events: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let retry = events
        .iter()
        .find(|e| e["message"] == "retry")
        .unwrap_or_else(|| panic!("no retry in {log}"));
    assert_eq!(retry["hinted"], true, "{retry}");
    assert_eq!(retry["wait_ms"], 300, "{retry}");
    let total = events
        .iter()
        .find(|e| e["message"] == "throttled")
        .unwrap_or_else(|| panic!("no throttled total in {log}"));
    assert_eq!(total["model"], "bob", "{total}");
    assert!(total["throttled_ms"].as_u64().unwrap() >= 300, "{total}");
}

/// bob's build fails with 503 throughout: the failed-builds list says why (the endpoint's last
/// error), once labelled, and with one scored implementation the report claims no separability.
#[test]
#[cfg_attr(
    not(pipe_has_bwrap),
    ignore = "needs bubblewrap that can make namespaces (the gate's local sandbox): apt install bubblewrap"
)]
fn a_failed_build_says_why_and_one_scored_implementation_is_no_ranking() {
    let (endpoint, base_url) = start_endpoint();
    endpoint.recovered.store(true, Ordering::SeqCst);
    endpoint.fail_builds.store(true, Ordering::SeqCst);
    let (_dir, root) = flaky_round(&base_url);
    let (code, summary, stderr) = pipe(&root, &["run", "pipeline.toml", "--json"]);
    assert_eq!(code, 1, "{summary} {stderr}");
    assert_eq!(ids_with(&summary, "failed"), ["build:bob#1"], "{summary}");
    let round = root.join("out/mini-2026-01-02");
    let report = std::fs::read_to_string(round.join("report.md")).unwrap();
    let line = report
        .lines()
        .find(|l| l.starts_with("- **bob**: "))
        .unwrap_or_else(|| panic!("no failed build of bob in:\n{report}"));
    assert!(
        line.starts_with("- **bob**: infrastructure: endpoint failed after 3 attempt(s)")
            && line.contains("503"),
        "{line}"
    );
    assert!(
        !report.contains("infrastructure: infrastructure"),
        "{report}"
    );
    assert!(
        report.contains("Fewer than two implementations have a composite score (1)"),
        "{report}"
    );
    assert!(!report.contains("the ranking is separable"), "{report}");
}

/// The endpoint restarts in the middle of the round: it serves bob's build, goes away for 15
/// seconds (nothing listens on its port), and comes back. bob's judgments, which start during
/// the outage, wait behind one probe without spending their retries: no node fails.
#[test]
#[cfg_attr(
    not(pipe_has_bwrap),
    ignore = "needs bubblewrap that can make namespaces (the gate's local sandbox): apt install bubblewrap"
)]
fn a_15_second_restart_of_the_endpoint_fails_no_node() {
    let endpoint = Arc::new(Endpoint::default());
    endpoint.recovered.store(true, Ordering::SeqCst);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (down_tx, down_rx) = std::sync::mpsc::channel::<()>();
    let served = Arc::clone(&endpoint);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            // Up until bob's build has its answer...
            listener.set_nonblocking(true).unwrap();
            let first = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = Router::new()
                .route("/v1/chat/completions", post(chat))
                .with_state(Arc::clone(&served));
            let until_built = {
                let served = Arc::clone(&served);
                async move {
                    while served.seen().is_empty() {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    // Let the answer leave before the port closes.
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            };
            axum::serve(first, app.clone())
                .with_graceful_shutdown(until_built)
                .await
                .unwrap();
            // ... then nothing listens for 15 seconds ...
            down_tx.send(()).unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(15)).await;
            // ... and it comes back on the same port.
            let again = tokio::net::TcpListener::bind(addr).await.unwrap();
            axum::serve(again, app).await.unwrap();
        });
    });
    let (_dir, root) = flaky_round(&format!("http://{addr}/v1"));
    let started = std::time::Instant::now();
    let (code, summary, stderr) = pipe(&root, &["run", "pipeline.toml", "--json"]);
    down_rx
        .recv_timeout(std::time::Duration::from_secs(1))
        .expect("the endpoint went down during the round");
    assert_eq!(code, 0, "{summary} {stderr}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(15),
        "the round waited the outage out"
    );
    let mut seen = endpoint.seen();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("build".to_string(), 0),
            ("judge-ann".to_string(), 0),
            ("judge-bob".to_string(), 0),
            ("judge-bob".to_string(), 1),
        ],
        "each call answered once: no retry was spent on the outage"
    );
    let round = root.join("out/mini-2026-01-02");
    let log = std::fs::read_to_string(round.join("log.jsonl")).unwrap();
    let count = |event: &str| {
        log.lines()
            .filter(|l| l.contains(&format!("\"message\":\"{event}\"")))
            .count()
    };
    assert_eq!(count("endpoint unreachable"), 1, "{log}");
    assert_eq!(count("endpoint reachable again"), 1, "{log}");
}
