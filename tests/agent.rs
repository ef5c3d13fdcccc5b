//! The agent harness end to end: the real `pipe` binary runs a build + gate round on the shipped
//! atomic-write task (its visible tests and `[agent]` table) in a temp dir, in the local sandbox.
//! The model's side comes from replay recordings written here, or from a local OpenAI-compatible
//! server; every tool call is executed for real by pipe. Each case checks `build.json`, the
//! transcript, and what the gate did with the result.

mod common;
use common::read_json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Round {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

struct Run {
    code: i32,
    summary: Value,
    stderr: String,
}

impl Round {
    /// A round of one model `m` building with the agent harness under `agent` settings, through
    /// `provider` (a TOML table body for `[providers.p]`).
    fn new(provider: &str, agent: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let task = repo().join("tasks/atomic-write");
        let prompt = repo().join("prompts/build-agent.md.j2");
        let pipeline = format!(
            r#"[round]
name = "agent"
date = "2026-01-02"
task = "{task}"

[providers.p]
{provider}

[[models]]
id = "m"
provider = "p"
model = "example/m"
price = {{ input = 1.0, output = 2.0 }}
harness = "agent"

[stages.build]
kind = "build"
prompt = "{prompt}"

[stages.build.agent]
{agent}

[stages.gate]
kind = "gate"
needs = ["build"]
"#,
            task = task.display(),
            prompt = prompt.display(),
        );
        std::fs::write(root.join("pipeline.toml"), pipeline).unwrap();
        Self { _dir: dir, root }
    }

    /// A replayed round whose model answers with `turns` (recording turns, as JSON).
    fn replayed(turns: &Value, agent: &str) -> Self {
        let r = Self::new("kind = \"replay\"\nrecordings = \"rec\"", agent);
        let exchange = json!({"stage": "build", "model": "m", "subject": "1", "turns": turns});
        let path = r.root.join("rec/build/m/1.yaml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_yaml::to_string(&exchange).unwrap()).unwrap();
        r
    }

    fn run(&self) -> Run {
        let out = common::pipe()
            .cwd(&self.root)
            .args(["run", "pipeline.toml", "--json", "--sandbox", "local"])
            .run();
        let summary = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: stdout {} stderr {}", out.stdout, out.stderr));
        Run {
            code: out.code(),
            summary,
            stderr: out.stderr,
        }
    }

    fn node(&self, stage: &str) -> PathBuf {
        self.root
            .join("out/agent-2026-01-02/nodes")
            .join(stage)
            .join("m/1")
    }

    fn build(&self) -> Value {
        read_json(&self.node("build").join("build.json"))
    }

    fn gate(&self) -> Value {
        read_json(&self.node("gate").join("gate.json"))
    }

    /// The transcript's lines, parsed.
    fn transcript(&self) -> Vec<Value> {
        std::fs::read_to_string(self.node("build").join("transcript.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn tool_results(&self) -> Vec<(String, String, bool)> {
        self.transcript()
            .iter()
            .filter(|e| e["type"] == "tool")
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["result"].as_str().unwrap().to_string(),
                    e["refused"].as_bool().unwrap(),
                )
            })
            .collect()
    }
}

/// One recording turn calling `calls` (`(name, arguments)`).
fn turn(calls: &[(&str, Value)]) -> Value {
    let calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(
            |(i, (name, args))| json!({"id": format!("call_{i}"), "name": name, "arguments": args}),
        )
        .collect();
    json!({"usage": {"input_tokens": 1000, "output_tokens": 50}, "tool_calls": calls})
}

/// A naive implementation: right on the simple cases, wrong on most of the spec.
const NAIVE: &str = "def atomic_write(path, data, *, mode=None, encoding='utf-8'):\n    with open(path, 'wb') as f:\n        f.write(data.encode(encoding) if isinstance(data, str) else data)\n";

#[test]
fn a_loop_that_changes_nothing_ends_as_stagnated_and_the_gate_tests_what_was_built() {
    let mut turns = vec![turn(&[(
        "write_file",
        json!({"path": "atomic_write.py", "content": NAIVE}),
    )])];
    for _ in 0..6 {
        turns.push(turn(&[("list_dir", json!({"path": "."}))]));
    }
    let r = Round::replayed(&Value::Array(turns), "max_steps = 20\nstagnation_steps = 3");
    let run = r.run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let b = r.build();
    assert_eq!(b["outcome"], "stagnated", "{b}");
    assert_eq!(b["harness"], "agent");
    // One step writes; three in a row change nothing.
    assert_eq!(b["agent"]["steps"], 4);
    assert_eq!(b["agent"]["pass_ends"], json!(["stagnated"]));
    assert_eq!(b["files"], json!(["atomic_write.py"]));
    assert_eq!(b["usage"]["input_tokens"], 4000);
    // What it built is tested as it is: the hidden tests really ran, and not all passed.
    let g = r.gate();
    assert_eq!(g["ran"], true, "{g}");
    assert_eq!(g["passed"], false);
    assert!(g["tests_passed"].as_u64().unwrap() > 0, "{g}");
}

#[test]
fn a_build_past_its_step_budget_ends_as_budget() {
    let turns: Vec<Value> = (0..6)
        .map(|i| {
            turn(&[(
                "write_file",
                json!({"path": "atomic_write.py", "content": format!("{NAIVE}# step {i}\n")}),
            )])
        })
        .collect();
    let r = Round::replayed(&Value::Array(turns), "max_steps = 3\nstagnation_steps = 2");
    let run = r.run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let b = r.build();
    assert_eq!(b["outcome"], "budget", "{b}");
    assert_eq!(b["agent"]["budget"], "steps");
    assert_eq!(b["agent"]["steps"], 3);
    assert_eq!(b["agent"]["tool_calls"]["write_file"], 3);
    // The pass changed the workspace: the end-of-pass probe verified it, and it failed.
    assert_eq!(b["agent"]["last_verify"]["passed"], false, "{b}");
    assert_eq!(b["agent"]["pass_ends"], json!(["steps"]));
    // The file is the one the third step wrote, by real execution of the replayed calls.
    let built = std::fs::read_to_string(r.node("build").join("files/atomic_write.py")).unwrap();
    assert!(built.ends_with("# step 2\n"), "{built}");
    assert_eq!(r.gate()["ran"], true);
}

#[test]
fn refused_tool_calls_are_reported_to_the_model_and_counted() {
    let turns = json!([
        turn(&[
            (
                "write_file",
                json!({"path": "test_atomic_write.py", "content": "def test_ok(): pass\n"})
            ),
            (
                "write_file",
                json!({"path": "../escape.py", "content": "x = 1\n"})
            ),
            (
                "write_file",
                json!({"path": "/tmp/pipe-agent-escape.py", "content": "x = 1\n"})
            ),
            (
                "edit_file",
                json!({"path": "visible/test_visible.py", "old": "import os", "new": "import sys"})
            ),
            ("read_file", json!({"path": "../../../../etc/passwd"})),
            (
                "run",
                json!({"command": ["sh", "-c", "echo pwned > atomic_write.py"]})
            ),
        ]),
        // No implementation exists: the verification cannot pass.
        turn(&[("done", json!({}))]),
    ]);
    let r = Round::replayed(&turns, "max_steps = 2");
    let run = r.run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let results = r.tool_results();
    assert_eq!(results.len(), 7, "{results:?}");
    for (name, text, refused) in &results[..6] {
        assert!(refused, "{name} was not refused: {text}");
        assert!(text.starts_with("refused: "), "{text}");
    }
    assert!(results[0].1.contains("protected"), "{}", results[0].1);
    assert!(results[1].1.contains("`..`"), "{}", results[1].1);
    assert!(results[2].1.contains("absolute"), "{}", results[2].1);
    assert!(results[3].1.contains("protected"), "{}", results[3].1);
    assert!(
        results[5].1.contains("not an allowed command"),
        "{}",
        results[5].1
    );
    // The refusals went back to the model as tool results of the conversation.
    let tool_messages: Vec<Value> = r
        .transcript()
        .into_iter()
        .filter(|e| e["type"] == "tool")
        .collect();
    assert!(tool_messages.iter().all(|e| e["id"].is_string()));
    // `done` without an implementation is rejected: no test passed.
    assert!(
        results[6].1.starts_with("done rejected"),
        "{}",
        results[6].1
    );
    let b = r.build();
    assert_eq!(b["agent"]["refusals"], 6, "{b}");
    assert_eq!(b["agent"]["done_rejections"], 1);
    assert_eq!(b["outcome"], "budget");
    assert!(!r.root.join("escape.py").exists());
    assert!(!Path::new("/tmp/pipe-agent-escape.py").exists());
    // Nothing was built: no files, and the gate did not run.
    assert_eq!(b["files"], json!([]));
    assert_eq!(r.gate()["ran"], false);
}

#[test]
fn the_offline_agent_transcript_completes_after_a_rejected_done() {
    let r = Round::new(
        &format!(
            "kind = \"replay\"\nrecordings = \"{}\"",
            repo().join("pipelines/recordings/atomic-write").display()
        ),
        "",
    );
    // The shipped recording is echo's: name the model after it.
    let p = r.root.join("pipeline.toml");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("id = \"m\"", "id = \"echo\"")
        .replace("example/m", "example/echo-agent");
    std::fs::write(&p, text).unwrap();
    let run = r.run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let nodes = r.root.join("out/agent-2026-01-02/nodes");
    let b = read_json(&nodes.join("build/echo/1/build.json"));
    assert_eq!(b["outcome"], "completed", "{b}");
    assert_eq!(b["agent"]["done_rejections"], 1);
    assert_eq!(b["agent"]["steps"], 6);
    assert_eq!(b["agent"]["completed_by"], "done");
    assert_eq!(b["agent"]["last_verify"]["tests_passed"], 5);
    let transcript = std::fs::read_to_string(nodes.join("build/echo/1/transcript.jsonl")).unwrap();
    // The rejection quotes the real failing visible test; the later run is pytest's own output.
    assert!(transcript.contains("test_other_data_types_raise_type_error"));
    assert!(transcript.contains("5 passed in"), "{transcript}");
    // The edit was really applied to the written file.
    let built = std::fs::read_to_string(nodes.join("build/echo/1/files/atomic_write.py")).unwrap();
    assert!(built.contains("raise TypeError"));
    assert_eq!(
        b["files"],
        json!(["atomic_write.py"]),
        "no notes, no visible tests"
    );
    // Then the gate runs the hidden tests on what it built.
    let g = read_json(&nodes.join("gate/echo/1/gate.json"));
    assert_eq!(
        (g["ran"].as_bool(), g["tests_total"].as_u64()),
        (Some(true), Some(22))
    );
    assert_eq!(g["tests_passed"], 21, "{g}");
}

#[test]
fn a_replay_that_runs_out_of_turns_fails_the_node_naming_the_recording() {
    let turns = json!([turn(&[("list_dir", json!({"path": "."}))])]);
    let r = Round::replayed(&turns, "max_steps = 10");
    let run = r.run();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.summary["failed"], 1, "{}", run.summary);
    let build = run.summary["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "build:m#1")
        .unwrap()
        .clone();
    assert_eq!(build["outcome"], "failed");
    let reason = build["reason"].as_str().unwrap();
    assert!(
        reason.contains("rec/build/m/1.yaml: the recording has 1 turn(s); turn 2 was asked for"),
        "{reason}"
    );
}

/// A local endpoint: the first request gets a tool call, every later one HTTP 500 (with usage).
async fn failing(
    State(n): State<Arc<AtomicUsize>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    assert!(body["tools"].is_array(), "tools are sent");
    if n.fetch_add(1, Ordering::SeqCst) == 0 {
        return (
            StatusCode::OK,
            Json(json!({
                "choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "write_file",
                     "arguments": json!({"path": "atomic_write.py", "content": NAIVE}).to_string()}}
                ]}, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 300, "completion_tokens": 40},
            })),
        );
    }
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(
            json!({"error": {"message": "upstream crashed"}, "usage": {"prompt_tokens": 7, "completion_tokens": 0}}),
        ),
    )
}

/// Serves `app` on 127.0.0.1 in a thread of its own; returns the address.
fn serve(app: Router) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    addr
}

#[test]
fn an_endpoint_that_fails_ends_the_build_as_fault_with_its_usage() {
    let count = Arc::new(AtomicUsize::new(0));
    let addr = serve(
        Router::new()
            .route("/v1/chat/completions", post(failing))
            .with_state(Arc::clone(&count)),
    );
    let r = Round::new(
        &format!(
            "kind = \"openai\"\nbase_url = \"http://{addr}/v1\"\nmax_retries = 1\nretry_base_ms = 1\nretry_max_ms = 5"
        ),
        "max_steps = 10",
    );
    let run = r.run();
    // A fault is a result of the build, not a failed node.
    assert_eq!(run.code, 0, "{}", run.stderr);
    let b = r.build();
    assert_eq!(b["outcome"], "fault", "{b}");
    assert!(b["reason"].as_str().unwrap().contains("HTTP 500"), "{b}");
    assert_eq!(b["agent"]["steps"], 1);
    assert_eq!(b["agent"]["pass_ends"], json!(["fault"]));
    // The answered call and both failed attempts are paid for.
    assert_eq!(b["usage"]["input_tokens"], 314, "{b}");
    assert_eq!(count.load(Ordering::SeqCst), 3);
    // Nothing was built, so nothing is gated.
    assert_eq!(b["files"], json!([]));
    let g = r.gate();
    assert_eq!(g["ran"], false);
    assert!(r.node("build").join("transcript.jsonl").is_file());
}

#[test]
fn a_pass_out_of_context_starts_fresh_on_the_same_workspace_with_the_notes() {
    let turns = json!([
        // Pass 1: only notes; the pass runs out of context (1000 + 50 tokens).
        turn(&[(
            "write_file",
            json!({"path": "NOTES.md", "content": "next: write atomic_write.py\n"})
        )]),
        // Pass 2: a naive module; out of context again, and the probe finds it failing.
        turn(&[(
            "write_file",
            json!({"path": "atomic_write.py", "content": NAIVE})
        )]),
    ]);
    let r = Round::replayed(
        &turns,
        "max_context_tokens = 1000\npasses = 2\nstagnation_steps = 5",
    );
    let run = r.run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let b = r.build();
    assert_eq!(b["outcome"], "budget", "{b}");
    assert_eq!(b["agent"]["budget"], "context");
    assert_eq!(b["agent"]["passes"], 2);
    assert_eq!(b["agent"]["pass_ends"], json!(["context", "context"]));
    assert_eq!(b["agent"]["last_verify"]["passed"], false, "the probe ran");
    let t = r.transcript();
    // Pass 2 starts over: its own system message, and a user message that points at the notes.
    let pass2: Vec<&Value> = t
        .iter()
        .filter(|e| e["type"] == "message" && e["pass"] == 2)
        .collect();
    assert_eq!(pass2[0]["role"], "system");
    let user = pass2[1]["content"].as_str().unwrap();
    assert!(
        user.contains("pass 2 of 2") && user.contains("NOTES.md"),
        "{user}"
    );
    // Pass 1 changed only the notes: no probe after it.
    let probes = t
        .iter()
        .filter(|e| {
            e["text"]
                .as_str()
                .is_some_and(|x| x.starts_with("end-of-pass probe"))
        })
        .count();
    assert_eq!(probes, 1);
    // The notes are the agent's, not part of the implementation.
    assert_eq!(b["files"], json!(["atomic_write.py"]));
}

#[test]
fn the_end_of_pass_probe_completes_work_the_model_did_not_signal() {
    let good = std::fs::read_to_string(repo().join("tasks/atomic-write/reference/atomic_write.py"))
        .unwrap();
    let turns = json!([turn(&[(
        "write_file",
        json!({"path": "atomic_write.py", "content": good})
    )])]);
    let r = Round::replayed(&turns, "max_context_tokens = 1000");
    let run = r.run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let b = r.build();
    assert_eq!(b["outcome"], "completed", "{b}");
    assert_eq!(b["agent"]["completed_by"], "probe");
    assert_eq!(b["agent"]["pass_ends"], json!(["context, then probe"]));
    assert_eq!(b["agent"]["done_rejections"], 0);
    assert_eq!(r.gate()["passed"], true);
}

#[test]
fn agent_settings_are_in_the_agent_builds_key_only() {
    let turns = json!([
        turn(&[(
            "write_file",
            json!({"path": "atomic_write.py", "content": NAIVE})
        )]),
        turn(&[("done", json!({}))]),
    ]);
    let r = Round::replayed(&turns, "max_steps = 2\nstagnation_steps = 8");
    // A second model builds in one shot under the same stage.
    let p = r.root.join("pipeline.toml");
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "[stages.build]",
        "[[models]]\nid = \"s\"\nprovider = \"p\"\nmodel = \"example/s\"\n\n[stages.build]",
    );
    std::fs::write(&p, text).unwrap();
    let single = json!({"stage": "build", "model": "s", "subject": "1", "turns": [
        {"answer": format!("```python path=atomic_write.py\n{NAIVE}```\n")}
    ]});
    std::fs::create_dir_all(r.root.join("rec/build/s")).unwrap();
    std::fs::write(
        r.root.join("rec/build/s/1.yaml"),
        serde_yaml::to_string(&single).unwrap(),
    )
    .unwrap();
    let first = r.run();
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.summary["executed"], 4, "{}", first.summary);
    let single_build = read_json(
        &r.root
            .join("out/agent-2026-01-02/nodes/build/s/1/build.json"),
    );
    assert_eq!(single_build["harness"], "single-shot");
    assert!(
        single_build.get("agent").is_none(),
        "single-shot build.json is unchanged"
    );

    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("stagnation_steps = 8", "stagnation_steps = 9");
    std::fs::write(&p, text).unwrap();
    let second = r.run();
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(
        common::ids_with(&second.summary, "executed"),
        ["build:m#1", "gate:m#1"]
    );
    assert_eq!(
        common::ids_with(&second.summary, "cached"),
        ["build:s#1", "gate:s#1"]
    );
}

/// A live agent: writes the reference solution (arguments spelt with spaces, as endpoints do),
/// runs the visible tests, then calls `done`.
async fn live_agent(
    State(n): State<Arc<AtomicUsize>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let reference =
        std::fs::read_to_string(repo().join("tasks/atomic-write/reference/atomic_write.py"))
            .unwrap();
    let (name, args) = match n.fetch_add(1, Ordering::SeqCst) {
        0 => (
            "write_file",
            json!({"path": "atomic_write.py", "content": reference}),
        ),
        1 => (
            "run",
            json!({"command": ["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", "visible"]}),
        ),
        _ => ("done", json!({})),
    };
    // The last request carries the real result of the previous call.
    let last = body["messages"].as_array().unwrap().last().unwrap().clone();
    let arguments = serde_json::to_string_pretty(&args).unwrap();
    (
        StatusCode::OK,
        Json(json!({
            "choices": [{"message": {"role": "assistant", "content": format!("after: {}", last["role"]), "tool_calls": [
                {"id": format!("live_{}", n.load(Ordering::SeqCst)), "type": "function",
                 "function": {"name": name, "arguments": arguments}}
            ]}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 500, "completion_tokens": 60},
        })),
    )
}

#[test]
fn a_recorded_live_agent_build_replays_strictly_by_executing_its_tool_calls_again() {
    let count = Arc::new(AtomicUsize::new(0));
    let addr = serve(
        Router::new()
            .route("/v1/chat/completions", post(live_agent))
            .with_state(Arc::clone(&count)),
    );
    let live = Round::new(
        &format!("kind = \"openai\"\nbase_url = \"http://{addr}/v1\"\nmax_retries = 0"),
        "",
    );
    let rec = live.root.join("recorded");
    let out = common::pipe()
        .cwd(&live.root)
        .args(["run", "pipeline.toml", "--sandbox", "local", "--record"])
        .arg(&rec)
        .run();
    assert!(out.status.success(), "{}", out.stderr);
    let b = live.build();
    assert_eq!(b["outcome"], "completed", "{b}");
    assert_eq!(count.load(Ordering::SeqCst), 3);
    let recording = std::fs::read_to_string(rec.join("build/m/1.yaml")).unwrap();
    assert_eq!(
        recording.matches("request_digest").count(),
        3,
        "{recording}"
    );
    assert!(recording.contains("name: write_file"), "{recording}");

    // Replayed under --strict: every request matches its recorded digest although the tool
    // results (pytest's timings, temp paths) come from a new execution.
    let replay = Round::new(
        &format!("kind = \"replay\"\nrecordings = \"{}\"", rec.display()),
        "",
    );
    let out = common::pipe()
        .cwd(&replay.root)
        .args(["run", "pipeline.toml", "--sandbox", "local", "--strict"])
        .run();
    assert!(out.status.success(), "{}", out.stderr);
    let again = replay.build();
    assert_eq!(again["outcome"], "completed");
    assert_eq!(again["agent"]["steps"], 3);
    assert_eq!(again["usage"], b["usage"]);
    assert_eq!(
        std::fs::read(replay.node("build").join("files/atomic_write.py")).unwrap(),
        std::fs::read(live.node("build").join("files/atomic_write.py")).unwrap()
    );
    assert_eq!(replay.gate()["passed"], true);
}

#[test]
fn a_build_past_its_wall_time_ends_as_budget() {
    let slow = "import time\ntime.sleep(2)\n\ndef atomic_write(path, data, *, mode=None, encoding='utf-8'):\n    pass\n";
    let turns = json!([
        turn(&[(
            "write_file",
            json!({"path": "atomic_write.py", "content": slow})
        )]),
        // The visible tests import the module: this run alone outlasts the wall budget.
        turn(&[(
            "run",
            json!({"command": ["python3", "-m", "pytest", "-q", "visible"]})
        )]),
        turn(&[("done", json!({}))]),
    ]);
    let r = Round::replayed(&turns, "wall_secs = 1");
    let run = r.run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let b = r.build();
    assert_eq!(b["outcome"], "budget", "{b}");
    assert_eq!(b["agent"]["budget"], "wall");
    assert_eq!(b["agent"]["steps"], 2, "the third call was never made");
    assert!(b["agent"]["wall_secs"].as_f64().unwrap() >= 2.0, "{b}");
}
