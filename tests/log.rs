//! The run log: the real `pipe` binary runs the mini fixture round and appends JSON lines to
//! `out/<round>/log.jsonl` (run started, cache hits, a span per node, run finished; the
//! provider's retries, 429s and concurrency changes), never the API key, and never through a
//! symbolic link planted in its place.

mod common;
use common::{all_files, copy_dir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};

const ROUND: &str = "out/mini-2026-01-02";

/// A copy of the mini fixture round in a temp dir; returns the dir (kept alive) and the root.
fn fixture() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mini");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mini"),
        &root,
    );
    (dir, root)
}

fn pipe(root: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pipe"));
    c.current_dir(root)
        .args(["run", "pipeline.toml", "--json"])
        .env_remove("PIPE_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Every line of the round's log, each checked to be one JSON object.
fn log_lines(root: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(root.join(ROUND).join("log.jsonl")).unwrap();
    assert!(text.ends_with('\n'), "the last line is complete");
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert!(v.is_object(), "{l}");
            v
        })
        .collect()
}

fn with_message<'a>(lines: &'a [Value], message: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["message"] == message).collect()
}

#[test]
fn every_run_appends_its_story_to_the_round_log() {
    let (_dir, root) = fixture();
    let out = pipe(&root, &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let first = log_lines(&root);

    let started = with_message(&first, "run started");
    assert_eq!(started.len(), 1, "{first:#?}");
    let started = started[0];
    assert_eq!(started["level"], "INFO");
    assert!(started["sandbox"].is_string(), "{started}");
    assert_eq!(started["jobs"], 16);
    assert_eq!(
        (&started["nodes"], &started["to_run"]),
        (&json!(12), &json!(12))
    );
    assert_eq!(started["cached"], 0);
    let run = started["span"]["run"].as_str().unwrap().to_string();
    assert_eq!(started["span"]["round"], "mini-2026-01-02");

    let finished = with_message(&first, "node finished");
    let mut ids: Vec<&str> = finished
        .iter()
        .map(|l| l["span"]["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 12, "one `node finished` per node: {ids:?}");
    assert_eq!(finished.len(), 12);
    for l in &finished {
        assert_eq!(l["outcome"], "executed", "{l}");
        assert!(l["wall_ms"].is_u64(), "{l}");
        assert_eq!(l["span"]["name"], "node");
        assert_eq!(l["span"]["run"], run.as_str());
        assert!(l["span"]["stage"].is_string() && l["span"]["kind"].is_string());
    }
    assert_eq!(with_message(&first, "node started").len(), 12);
    assert!(with_message(&first, "cache hits").is_empty());
    let done = with_message(&first, "run finished");
    assert_eq!(done.len(), 1);
    assert_eq!(
        (&done[0]["executed"], &done[0]["cached"]),
        (&json!(12), &json!(0))
    );
    assert_eq!(first.last().unwrap()["message"], "run finished");

    // A re-run appends: the first run's lines stay, the new ones say everything was cached, per
    // stage (and per node at debug).
    let out = pipe(&root, &[("PIPE_LOG", "debug")]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let all = log_lines(&root);
    assert_eq!(
        all[..first.len()],
        first[..],
        "the first run's lines are kept"
    );
    let second = &all[first.len()..];
    let started = with_message(second, "run started");
    assert_eq!(started.len(), 1);
    assert_eq!(
        (&started[0]["to_run"], &started[0]["cached"]),
        (&json!(0), &json!(12))
    );
    assert_ne!(
        started[0]["span"]["run"],
        run.as_str(),
        "each run has its own id"
    );
    let hits = with_message(second, "cache hits");
    let mut stages: Vec<&str> = hits.iter().map(|l| l["stage"].as_str().unwrap()).collect();
    stages.sort_unstable();
    assert_eq!(
        stages,
        ["aggregate", "build", "env", "gate", "judge", "publish"]
    );
    let total: u64 = hits.iter().map(|l| l["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 12);
    assert_eq!(
        with_message(second, "cache hit").len(),
        12,
        "one per node at debug"
    );
    assert!(with_message(second, "node finished").is_empty());
    assert_eq!(with_message(second, "run finished")[0]["cached"], 12);
}

#[test]
fn a_link_planted_as_the_log_is_refused_and_the_run_goes_on() {
    let (dir, root) = fixture();
    let round = root.join(ROUND);
    std::fs::create_dir_all(&round).unwrap();
    let target = dir.path().join("elsewhere.txt");
    std::fs::write(&target, "untouched\n").unwrap();
    std::os::unix::fs::symlink(&target, round.join("log.jsonl")).unwrap();
    let out = pipe(&root, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: not writing the run log") && stderr.contains("symbolic link"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched\n");
    assert!(
        std::fs::symlink_metadata(round.join("log.jsonl"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

/// bob's implementation; its docstring tells the endpoint which implementation a judge reviews.
const BOB_MARKER: &str = "Sum of a and b.";
const KEY: &str = "sk-pipe-log-sentinel-2718281828";

fn completion(content: &str) -> (StatusCode, HeaderMap, Json<Value>) {
    (
        StatusCode::OK,
        HeaderMap::new(),
        Json(json!({
            "choices": [{ "message": { "role": "assistant", "content": content } }],
            "usage": { "prompt_tokens": 200, "completion_tokens": 20 },
        })),
    )
}

/// An endpoint that echoes the credentials it receives: the first request gets a 429
/// (with `Retry-After: 0`), bob's judgment of ann's implementation a 503 every time.
async fn chat(
    State(requests): State<Arc<AtomicUsize>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, HeaderMap, Json<Value>) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let echo = |status: StatusCode, what: &str| {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "0".parse().unwrap());
        let message = format!("{what}; you sent {auth}");
        (status, h, Json(json!({ "error": { "message": message } })))
    };
    if requests.fetch_add(1, Ordering::SeqCst) == 0 {
        return echo(StatusCode::TOO_MANY_REQUESTS, "slow down");
    }
    let first = body["messages"][0]["content"].as_str().unwrap_or("");
    if first.contains("You are implementing a task") {
        completion(&format!(
            "Here it is.\n```python path=adder.py\ndef add(a, b):\n    \"\"\"{BOB_MARKER}\"\"\"\n    return a + b\n```\n"
        ))
    } else if first.contains(BOB_MARKER) {
        completion(
            r#"{"scores": {"spec": 8, "quality": 15}, "checks": {"core-behaviour": "pass", "no-test-gaming": "pass", "no-unsafe-side-effects": "pass"}, "verdict": "ship", "note": "fine"}"#,
        )
    } else {
        echo(StatusCode::SERVICE_UNAVAILABLE, "overloaded")
    }
}

/// Starts the endpoint in a thread of its own; returns its base URL.
fn start_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(Arc::new(AtomicUsize::new(0)));
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{addr}/v1")
}

fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} lacks {from:?}", file.display());
    std::fs::write(file, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn retries_429s_and_spent_retries_are_logged_and_the_key_is_not() {
    let base_url = start_endpoint();
    let (_dir, root) = fixture();
    let pipeline = root.join("pipeline.toml");
    edit(
        &pipeline,
        "[[models]]",
        &format!(
            "[providers.local]\nkind = \"openai\"\nbase_url = \"{base_url}\"\n\
             api_key_env = \"PIPE_LOG_TEST_KEY\"\nmax_concurrency = 2\ntimeout_secs = 10\n\
             max_retries = 1\nretry_base_ms = 5\nretry_max_ms = 20\n\n[[models]]"
        ),
    );
    edit(
        &pipeline,
        "id = \"bob\"\nprovider = \"replay\"",
        "id = \"bob\"\nprovider = \"local\"",
    );
    let out = pipe(&root, &[("PIPE_LOG_TEST_KEY", KEY)]);
    // bob's judgment of ann fails (503 throughout); everything else finishes.
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    let lines = log_lines(&root);
    let text = std::fs::read_to_string(root.join(ROUND).join("log.jsonl")).unwrap();
    assert!(!text.contains(KEY), "the key is in the log:\n{text}");
    for f in all_files(&root.join(ROUND)) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(KEY),
            "{} holds the key",
            f.display()
        );
    }

    let limited = with_message(&lines, "rate limited (429)");
    assert!(!limited.is_empty(), "{text}");
    assert_eq!(limited[0]["level"], "WARN");
    assert_eq!(limited[0]["provider"], "local");
    assert_eq!(limited[0]["span"]["name"], "node", "inside the node's span");
    let changed = with_message(&lines, "concurrency changed");
    assert!(
        changed.iter().any(|l| l["from"] == 2 && l["to"] == 1),
        "{text}"
    );
    let retries = with_message(&lines, "retry");
    assert!(
        retries
            .iter()
            .any(|l| l["hinted"] == true && l["wait_ms"] == 0),
        "{text}"
    );
    for r in &retries {
        assert!(r["attempt"].is_u64() && r["reason"].is_string(), "{r}");
    }
    let gave_up = with_message(&lines, "gave up after retries");
    assert_eq!(gave_up.len(), 1, "{text}");
    assert_eq!(gave_up[0]["span"]["id"], "judge:bob->ann#1");
    assert!(
        gave_up[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("[redacted]")),
        "{}",
        gave_up[0]
    );
    let failed: Vec<&Value> = with_message(&lines, "node finished")
        .into_iter()
        .filter(|l| l["outcome"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{text}");
    assert_eq!(failed[0]["span"]["id"], "judge:bob->ann#1");
    assert_eq!(with_message(&lines, "run finished")[0]["failed"], 1);
}
