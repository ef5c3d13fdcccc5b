//! The result store seen from whole rounds: the real `pipe` binary runs the mini fixture with both
//! models on a local OpenAI-compatible server that counts what it is asked. Switching the rubric
//! A -> B -> A restores the third run's judgments, aggregate and report from the store without a
//! single model call, byte for byte; a store whose blobs were tampered with restores nothing and
//! the nodes run; `pipe store stats` and `pipe store gc` say and remove what it holds. A round
//! recorded live with `--record` replays exactly with `--replay`, the server down.

mod common;
use common::{all_files, copy_dir, ids_with};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};

/// The endpoint: how many requests it answered, and whether it is down.
#[derive(Default)]
struct Endpoint {
    calls: AtomicUsize,
    down: AtomicBool,
}

async fn chat(
    State(endpoint): State<Arc<Endpoint>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if endpoint.down.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": { "message": "down" } })),
        );
    }
    endpoint.calls.fetch_add(1, Ordering::SeqCst);
    // Time a model takes: the latency a recording keeps, which a replay reports again.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let first = body["messages"][0]["content"].as_str().unwrap_or("");
    let content = if first.contains("You are implementing a task") {
        "Here it is.\n```python path=adder.py\ndef add(a, b):\n    return a + b\n```\n".to_string()
    } else {
        // The judges say which rubric they were shown.
        let rubric = if first.contains("All numbered requirements") {
            "B"
        } else {
            "A"
        };
        format!(
            r#"{{"scores": {{"spec": 8, "quality": 15}}, "checks": {{"core-behaviour": "pass", "no-test-gaming": "pass", "no-unsafe-side-effects": "pass"}}, "verdict": "ship", "note": "under rubric {rubric}"}}"#
        )
    };
    (
        StatusCode::OK,
        Json(json!({
            "choices": [{ "message": { "role": "assistant", "content": content } }],
            "usage": { "prompt_tokens": 200, "completion_tokens": 20 },
        })),
    )
}

/// Starts the endpoint on 127.0.0.1 in a thread of its own; returns its state and base URL.
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
    std::fs::write(file, text.replace(from, to)).unwrap();
}

/// A copy of the mini round (without its `env` stage) whose models both ask the endpoint, with
/// a second rubric `rubric-b.toml` whose guidance differs; publishes the report and the dataset.
fn live_round(base_url: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mini");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mini"),
        &root,
    );
    let pipeline = root.join("pipeline.toml");
    edit(
        &pipeline,
        "[[models]]\nid = \"ann\"",
        &format!(
            "[providers.local]\nkind = \"openai\"\nbase_url = \"{base_url}\"\nmax_concurrency = 4\n\
             timeout_secs = 10\nmax_retries = 0\n\n[[models]]\nid = \"ann\""
        ),
    );
    edit(&pipeline, "provider = \"replay\"", "provider = \"local\"");
    edit(
        &pipeline,
        "[stages.env]\nkind = \"command\"\nneeds = [\"build\"]\ncommand = \"env; sleep ${PIPE_TEST_SLEEP:-0}\"\n",
        "",
    );
    edit(
        &pipeline,
        "needs = [\"judge\", \"env\"]",
        "needs = [\"judge\"]",
    );
    edit(
        &pipeline,
        "kind = \"publish\"",
        "kind = \"publish\"\nformats = [\"markdown\", \"dataset\"]",
    );
    let rubric = std::fs::read_to_string(root.join("rubric.toml")).unwrap();
    let b = rubric.replace("Every numbered requirement", "All numbered requirements");
    assert_ne!(rubric, b);
    std::fs::write(root.join("rubric-b.toml"), b).unwrap();
    (dir, root)
}

fn run(root: &Path, args: &[&str]) -> Value {
    let ran = common::pipe()
        .cwd(root)
        .args(["run", "pipeline.toml", "--json"])
        .args(args)
        .run();
    ran.assert_success();
    ran.json()
}

fn use_rubric(root: &Path, from: &str, to: &str) {
    edit(
        &root.join("pipeline.toml"),
        &format!("rubric = \"{from}\""),
        &format!("rubric = \"{to}\""),
    );
}

/// Every output file under `dir` (the records, whose times differ, left out) with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    all_files(dir)
        .into_iter()
        .filter(|p| !p.ends_with("node.json"))
        .map(|p| {
            let bytes = std::fs::read(dir.join(&p)).unwrap();
            (p, bytes)
        })
        .collect()
}

const REPLAYED: &str =
    "> Replayed round: every model answer comes from recordings, not from live calls.\n\n";
const ROUND: &str = "out/mini-2026-01-02";
const MODEL_NODES: [&str; 6] = [
    "aggregate",
    "judge:ann->ann#1",
    "judge:ann->bob#1",
    "judge:bob->ann#1",
    "judge:bob->bob#1",
    "publish",
];

#[test]
fn switching_the_rubric_back_restores_every_node_without_a_model_call() {
    let (endpoint, base_url) = start_endpoint();
    let (_dir, root) = live_round(&base_url);
    let round = root.join(ROUND);

    let first = run(&root, &[]);
    assert_eq!(first["executed"], 10, "{first}");
    assert_eq!(endpoint.calls.load(Ordering::SeqCst), 6);
    let report_a = std::fs::read(round.join("report.md")).unwrap();
    let judged_a = snapshot(&round.join("nodes/judge"));
    assert!(String::from_utf8_lossy(&report_a).contains("under rubric A"));

    use_rubric(&root, "rubric.toml", "rubric-b.toml");
    let second = run(&root, &[]);
    assert_eq!(ids_with(&second, "executed"), MODEL_NODES, "{second}");
    assert_eq!(endpoint.calls.load(Ordering::SeqCst), 10);
    let report_b = std::fs::read(round.join("report.md")).unwrap();
    assert!(String::from_utf8_lossy(&report_b).contains("under rubric B"));

    use_rubric(&root, "rubric-b.toml", "rubric.toml");
    let third = run(&root, &[]);
    assert_eq!(ids_with(&third, "restored"), MODEL_NODES, "{third}");
    assert_eq!(
        (third["executed"].as_u64(), third["cached"].as_u64()),
        (Some(0), Some(4))
    );
    assert_eq!(third["restored"], 6, "{third}");
    assert_eq!(
        endpoint.calls.load(Ordering::SeqCst),
        10,
        "the third run called a model"
    );
    // Byte for byte what the first run computed, and every record stands.
    assert!(std::fs::read(round.join("report.md")).unwrap() == report_a);
    assert_eq!(snapshot(&round.join("nodes/judge")), judged_a);
    let status = common::pipe()
        .cwd(&root)
        .args(["status", "pipeline.toml", "--json"])
        .run();
    status.assert_success();
    assert!(!status.stdout.contains("\"pending\"") && !status.stdout.contains("\"stale\""));
    let log = std::fs::read_to_string(round.join("log.jsonl")).unwrap();
    assert_eq!(log.matches("\"node restored\"").count(), 6);

    // Tampered blobs are found out: nothing is restored from them, the nodes run.
    let store = root.join("out/.store");
    for blob in all_files(&store.join("blobs")) {
        let path = store.join("blobs").join(blob);
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        std::fs::write(&path, vec![b'x'; len]).unwrap();
    }
    use_rubric(&root, "rubric.toml", "rubric-b.toml");
    let fourth = run(&root, &[]);
    assert_eq!(ids_with(&fourth, "executed"), MODEL_NODES, "{fourth}");
    assert_eq!(fourth["restored"], 0, "{fourth}");
    assert_eq!(endpoint.calls.load(Ordering::SeqCst), 14);
    assert!(std::fs::read(round.join("report.md")).unwrap() == report_b);

    stats_and_gc(&root);
    // An emptied store restores nothing: rubric A runs its judges again.
    use_rubric(&root, "rubric-b.toml", "rubric.toml");
    let fifth = run(&root, &[]);
    assert_eq!(ids_with(&fifth, "executed"), MODEL_NODES, "{fifth}");
    assert_eq!(endpoint.calls.load(Ordering::SeqCst), 18);
    // --no-store neither restores nor keeps.
    use_rubric(&root, "rubric.toml", "rubric-b.toml");
    let sixth = run(&root, &["--no-store"]);
    assert_eq!(ids_with(&sixth, "executed"), MODEL_NODES, "{sixth}");
}

/// `pipe store stats` and `pipe store gc`, after four runs: one entry per node run with its
/// upstream done (10, then 6 per rubric switch that ran), then removed by size.
fn stats_and_gc(root: &Path) {
    let stats = common::pipe()
        .cwd(root)
        .args(["store", "stats", "--json"])
        .run();
    stats.assert_success();
    let s = stats.json();
    assert_eq!(s["entries"], 16, "{s}");
    assert_eq!(s["invalid_entries"], 0, "{s}");
    let human = common::pipe().cwd(root).args(["store", "stats"]).run();
    human.assert_success();
    insta::assert_snapshot!("store_stats", redact(&human.stdout));

    let aged = common::pipe()
        .cwd(root)
        .args(["store", "gc", "--older-than", "1d", "--json"])
        .run();
    aged.assert_success();
    assert_eq!(aged.json()["entries_removed"], 0);
    let dry = common::pipe()
        .cwd(root)
        .args(["store", "gc", "--max-size", "0", "--dry-run"])
        .run();
    dry.assert_success();
    insta::assert_snapshot!("store_gc_dry_run", redact(&dry.stdout));
    let gone = common::pipe()
        .cwd(root)
        .args(["store", "gc", "--max-size", "0", "--json"])
        .run();
    gone.assert_success();
    assert_eq!(gone.json()["entries_removed"], 16);
    let after = common::pipe()
        .cwd(root)
        .args(["store", "stats", "--json"])
        .run();
    assert_eq!(
        (
            after.json()["entries"].as_u64(),
            after.json()["blobs"].as_u64()
        ),
        (Some(0), Some(0))
    );
    let bad = common::pipe()
        .cwd(root)
        .args(["store", "gc", "--max-size", "lots"])
        .run();
    bad.assert_code(2);
    assert!(bad.stderr.contains("not a size"), "{}", bad.stderr);
}

/// What varies from run to run (the temp dir, times, sizes, how many blobs the outputs make)
/// as placeholders.
fn redact(text: &str) -> String {
    text.lines()
        .map(|l| {
            let l = match l.split_once("  ") {
                Some(("store" | "used", _)) => return format!("{}  [redacted]", &l[..5]),
                _ => l.to_string(),
            };
            let mut out = String::new();
            let mut rest = l.as_str();
            // Sizes in parentheses or after a comma; blob counts.
            while let Some(i) = rest.find(|c: char| c.is_ascii_digit()) {
                out.push_str(&rest[..i]);
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .unwrap_or(tail.len());
                let after = &tail[end..];
                let unit = ["B", "KiB", "MiB", "GiB"]
                    .into_iter()
                    .find(|u| after.starts_with(&format!(" {u}")));
                if let Some(u) = unit {
                    out.push_str("[size]");
                    rest = &after[1 + u.len()..];
                } else if after.starts_with(" blob")
                    || after.starts_with(" named")
                    || after.starts_with(" (") && l.starts_with("blobs")
                {
                    out.push_str("[n]");
                    rest = after;
                } else {
                    out.push_str(&tail[..end]);
                    rest = after;
                }
            }
            out.push_str(rest);
            out
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `generated_at` of a dataset as a placeholder.
fn generated_at(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with("\"generated_at\"") {
                "generated_at"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_recorded_live_round_replays_exactly_with_the_server_down() {
    let (endpoint, base_url) = start_endpoint();
    let (_dir, root) = live_round(&base_url);
    // No date: the live round is today's, and the recording pins it.
    edit(&root.join("pipeline.toml"), "date = \"2026-01-02\"\n", "");
    let live = run(&root, &["--record", "rec"]);
    assert_eq!(live["executed"], 10, "{live}");
    let pin = common::read_json(&root.join("rec/round.json"));
    let id = live["round"].as_str().unwrap().to_string();
    assert_eq!(pin["round"], id.as_str(), "{pin}");
    assert_eq!(
        pin["models"],
        json!({"ann": "local", "bob": "local"}),
        "{pin}"
    );

    endpoint.down.store(true, Ordering::SeqCst);
    // The pinned date, whatever today is: a pipeline dated otherwise is replayed as recorded.
    edit(
        &root.join("pipeline.toml"),
        "name = \"mini\"\n",
        "name = \"mini\"\ndate = \"2001-01-01\"\n",
    );
    let replayed = run(&root, &["--replay", "rec", "--out", "again", "--no-store"]);
    assert_eq!(replayed["executed"], 10, "{replayed}");
    assert_eq!(replayed["round"], id.as_str(), "{replayed}");
    assert_eq!(
        endpoint.calls.load(Ordering::SeqCst),
        6,
        "the replay called the server"
    );
    for file in ["dataset.json", "report.md"] {
        let a = std::fs::read_to_string(root.join("out").join(&id).join(file)).unwrap();
        let b = std::fs::read_to_string(root.join("again").join(&id).join(file)).unwrap();
        // The report says that a replayed round's answers come from recordings: that line only.
        let b = b.replace(REPLAYED, "");
        // When the dataset was written differs, nothing else.
        let (a, b) = (generated_at(&a), generated_at(&b));
        let differ: Vec<(&str, &str)> = a.lines().zip(b.lines()).filter(|(x, y)| x != y).collect();
        assert_eq!(a, b, "{file}: {differ:#?}");
    }

    // A recording of another round is refused, naming the pin.
    edit(
        &root.join("pipeline.toml"),
        "name = \"mini\"",
        "name = \"other\"",
    );
    let other = common::pipe()
        .cwd(&root)
        .args(["run", "pipeline.toml", "--replay", "rec"])
        .run();
    other.assert_code(2);
    assert!(
        other.stderr.contains("recorded the round"),
        "{}",
        other.stderr
    );
    let none = common::pipe()
        .cwd(&root)
        .args(["run", "pipeline.toml", "--replay", "nowhere"])
        .run();
    none.assert_code(2);
    assert!(none.stderr.contains("round.json"), "{}", none.stderr);
}
