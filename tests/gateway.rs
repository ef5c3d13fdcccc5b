//! The model gateway seen from whole rounds: the real `pipe` binary builds with
//! `tests/fixtures/gateway/tools/gw-agent`, a stand-in agent CLI speaking chat completions
//! (streamed, with tools it runs itself), in a sandbox without network. `ann` replays a
//! recording, `bob` is served by a local endpoint that checks the provider's key. The CLI
//! reaches nothing but the gateway (a probe in its session tries a host port on 127.0.0.1 and
//! on the host's outside address, and looks for the key everywhere it can read), usage is the
//! gateway's exact count, a looping session stops at the build's request limit with outcome
//! `budget`, and a round recorded live replays byte for byte with the endpoint down.

mod common;
use common::{Pipe, all_files, copy_dir, read_json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};

const KEY: &str = "sk-gateway-sentinel-31415926535";
const ADDER: &str = "def add(a, b):\n    return a + b\n";

/// The live endpoint: what it was asked, and how it answers.
#[derive(Default)]
struct Endpoint {
    calls: AtomicUsize,
    /// Requests that did not carry the provider's key.
    unauthorized: AtomicUsize,
    /// Ask for the probe on every turn: a session that never ends.
    looping: AtomicBool,
    down: AtomicBool,
}

fn tool_call(id: &str, name: &str, arguments: &Value) -> Value {
    json!({ "id": id, "type": "function", "function": { "name": name, "arguments": arguments.to_string() } })
}

async fn chat(
    State(endpoint): State<Arc<Endpoint>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if endpoint.down.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": { "message": "down" } })),
        );
    }
    endpoint.calls.fetch_add(1, Ordering::SeqCst);
    let bearer = format!("Bearer {KEY}");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(bearer.as_str()) {
        endpoint.unauthorized.fetch_add(1, Ordering::SeqCst);
    }
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    let results = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .count();
    let looping = endpoint.looping.load(Ordering::SeqCst);
    let message = match results {
        _ if looping => json!({ "role": "assistant", "content": null,
            "tool_calls": [tool_call(&format!("call_{results}"), "probe", &json!({}))] }),
        0 => json!({ "role": "assistant", "content": null,
            "tool_calls": [tool_call("call_1", "probe", &json!({}))] }),
        1 => json!({ "role": "assistant", "content": "Writing it.",
            "tool_calls": [tool_call("call_2", "write_file", &json!({"path": "adder.py", "content": ADDER}))] }),
        _ => json!({ "role": "assistant", "content": "done" }),
    };
    (
        StatusCode::OK,
        Json(json!({
            "choices": [{ "message": message, "finish_reason": if results >= 2 && !looping { "stop" } else { "tool_calls" } }],
            "usage": { "prompt_tokens": 100 + 50 * results, "completion_tokens": 20 },
        })),
    )
}

struct Round {
    _dir: tempfile::TempDir,
    root: PathBuf,
    endpoint: Arc<Endpoint>,
    /// A listener on every address of the host: what the probe must not reach.
    _listener: std::net::TcpListener,
    port: u16,
}

/// The host's outside address: the source address of a route out (a UDP connect sends nothing).
fn outside_address() -> String {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect("192.0.2.1:9").expect(
        "this host has a route out: the probe needs an address of the host besides loopback",
    );
    let ip = s.local_addr().unwrap().ip();
    assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
    ip.to_string()
}

fn sha256_hex(text: &str) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

impl Round {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("gw");
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gateway"),
            &root,
        );
        let tool = root.join("tools/gw-agent");
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let endpoint = Arc::new(Endpoint::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .with_state(Arc::clone(&endpoint));
        let base_url = common::serve_in_thread(app);
        let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let r = Self {
            _dir: dir,
            root,
            endpoint,
            _listener: listener,
            port,
        };
        r.edit("http://127.0.0.1:9/v1", &base_url);
        r
    }

    fn edit(&self, from: &str, to: &str) {
        let path = self.root.join("pipeline.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(from),
            "pipeline.toml does not contain {from:?}"
        );
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }

    fn cmd(&self, args: &[&str]) -> Pipe {
        common::pipe()
            .cwd(&self.root)
            .env("NO_COLOR", "1")
            .env("GW_TEST_KEY", KEY)
            .env("GW_PROBE_PORT", self.port.to_string())
            .env("GW_PROBE_ADDR", outside_address())
            .env("GW_PROBE_SENTINEL_HASH", sha256_hex(KEY))
            .args(args)
    }

    /// `pipe run --json` with `args` after it; the summary.
    fn run(&self, args: &[&str]) -> (i32, Value, String) {
        let mut all = vec!["run", "pipeline.toml", "--json"];
        all.extend_from_slice(args);
        let out = self.cmd(&all).run();
        let v: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: stdout {} stderr {}", out.stdout, out.stderr));
        (out.code(), v, out.stderr)
    }

    fn node(&self, out: &str, rel: &str) -> PathBuf {
        self.root.join(out).join("gw-2026-01-02/nodes").join(rel)
    }
}

/// Every build of the round went through the gateway, and only through it.
fn assert_fenced(r: &Round, sandbox: &str) {
    let (code, summary, stderr) = r.run(&["--sandbox", sandbox]);
    assert_eq!(code, 0, "{summary} {stderr}");
    for model in ["ann", "bob"] {
        let node = r.node("out", &format!("build/{model}/1"));
        let output = std::fs::read_to_string(node.join("agent-output.txt")).unwrap();
        for line in [
            "host port on 127.0.0.1: unreachable",
            "host port on the host's outside address: unreachable",
            "sentinel visible: False",
            "write_file -> wrote adder.py",
        ] {
            assert!(output.contains(line), "{model}: {line:?} not in\n{output}");
        }
        let build = read_json(&node.join("build.json"));
        assert_eq!(build["outcome"], "completed", "{build}");
        assert_eq!(build["usage_source"], "gateway", "{build}");
        assert_eq!(build["gateway"]["requests"], 3, "{build}");
        assert_eq!(build["gateway"]["refused"], 0, "{build}");
        // The CLI's own count is kept beside the gateway's: here they agree.
        assert_eq!(build["reported_usage"], build["usage"], "{build}");
        let gate = read_json(&r.node("out", &format!("gate/{model}/1")).join("gate.json"));
        assert_eq!(gate["passed"], true, "{gate}");
        assert_eq!(
            std::fs::read_to_string(node.join("files/adder.py")).unwrap(),
            ADDER
        );
    }
    // ann's usage is the recording's, exactly: 120+200+260 in, 30+40+5 out, at $1/$2 per M.
    let ann = read_json(&r.node("out", "build/ann/1").join("build.json"));
    assert_eq!(
        ann["usage"],
        json!({"input_tokens": 580, "output_tokens": 75, "cache_read_tokens": 0})
    );
    assert!(
        (ann["cost_usd"].as_f64().unwrap() - 0.000_73).abs() < 1e-12,
        "{ann}"
    );
    // bob's is what the endpoint answered: 100+150+200 in, 3 x 20 out.
    let bob = read_json(&r.node("out", "build/bob/1").join("build.json"));
    assert_eq!(
        bob["usage"],
        json!({"input_tokens": 450, "output_tokens": 60, "cache_read_tokens": 0})
    );
    // The endpoint got the key on every call; the key is in no file of the round.
    assert_eq!(r.endpoint.calls.load(Ordering::SeqCst), 3);
    assert_eq!(r.endpoint.unauthorized.load(Ordering::SeqCst), 0);
    for file in all_files(&r.root.join("out")) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
            "the key is in {}",
            file.display()
        );
    }
}

#[test]
#[cfg_attr(
    not(pipe_has_bwrap),
    ignore = "needs a working bubblewrap: apt-get install bubblewrap, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
fn under_bubblewrap_the_cli_reaches_only_the_gateway_and_usage_is_exact() {
    assert_fenced(&Round::new(), "local");
}

#[test]
#[cfg_attr(
    not(pipe_has_docker),
    ignore = "needs a Docker engine with pipe's sandbox image: start dockerd, run `pipe sandbox bootstrap`, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
fn in_docker_the_cli_reaches_only_the_gateway_and_usage_is_exact() {
    assert_fenced(&Round::new(), "docker");
}

#[test]
#[cfg_attr(
    not(pipe_has_bwrap),
    ignore = "needs a working bubblewrap: apt-get install bubblewrap, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
fn a_looping_session_stops_at_the_builds_request_limit() {
    let r = Round::new();
    r.endpoint.looping.store(true, Ordering::SeqCst);
    r.edit("max_requests = 10", "max_requests = 3");
    let (code, summary, stderr) = r.run(&["--sandbox", "local"]);
    assert_eq!(code, 0, "{summary} {stderr}");
    let bob = read_json(&r.node("out", "build/bob/1").join("build.json"));
    assert_eq!(bob["outcome"], "budget", "{bob}");
    assert!(
        bob["reason"]
            .as_str()
            .unwrap()
            .starts_with("the build's limit of 3 requests is reached"),
        "{bob}"
    );
    assert_eq!(bob["gateway"]["requests"], 3, "{bob}");
    assert_eq!(bob["gateway"]["refused"], 1, "{bob}");
    assert_eq!(
        bob["gateway"]["limit"],
        "the build's limit of 3 requests is reached"
    );
    assert_eq!(r.endpoint.calls.load(Ordering::SeqCst), 3);
    // The CLI was told why, in the error shape it reads.
    let output =
        std::fs::read_to_string(r.node("out", "build/bob/1").join("agent-output.txt")).unwrap();
    assert!(output.contains("model error 400"), "{output}");
    assert!(output.contains("budget_exceeded"), "{output}");
}

#[test]
#[cfg_attr(
    not(pipe_has_bwrap),
    ignore = "needs a working bubblewrap: apt-get install bubblewrap, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
fn a_recorded_cli_round_replays_byte_for_byte_with_the_endpoint_down() {
    let r = Round::new();
    let (code, live, stderr) = r.run(&["--sandbox", "local", "--record", "rec"]);
    assert_eq!(code, 0, "{live} {stderr}");
    assert!(r.root.join("rec/build/bob/1.yaml").is_file());
    r.endpoint.down.store(true, Ordering::SeqCst);
    let calls = r.endpoint.calls.load(Ordering::SeqCst);
    let (code, replayed, stderr) = r.run(&[
        "--sandbox",
        "local",
        "--replay",
        "rec",
        "--out",
        "again",
        "--no-store",
        "--strict",
    ]);
    assert_eq!(code, 0, "{replayed} {stderr}");
    assert_eq!(
        r.endpoint.calls.load(Ordering::SeqCst),
        calls,
        "the replay called the endpoint"
    );
    for model in ["ann", "bob"] {
        let rel = format!("build/{model}/1");
        let (a, b) = (r.node("out", &rel), r.node("again", &rel));
        assert_eq!(
            std::fs::read(a.join("files/adder.py")).unwrap(),
            std::fs::read(b.join("files/adder.py")).unwrap()
        );
        let (ja, jb) = (
            read_json(&a.join("build.json")),
            read_json(&b.join("build.json")),
        );
        for field in ["outcome", "usage", "cost_usd", "gateway", "files"] {
            assert_eq!(ja[field], jb[field], "{model} {field}");
        }
    }
    // A request that drifts from the recording is reported under --strict: the node fails,
    // naming the recording and the turn.
    std::fs::write(
        r.root.join("build.md.j2"),
        "Another prompt: {{ task.spec }}\n",
    )
    .unwrap();
    let (code, drifted, stderr) = r.run(&[
        "--sandbox",
        "local",
        "--replay",
        "rec",
        "--out",
        "drift",
        "--no-store",
        "--strict",
    ]);
    assert_eq!(code, 1, "{drifted} {stderr}");
    let text = drifted.to_string();
    assert!(
        text.contains("differs from the recorded one"),
        "{text}\n{stderr}"
    );
}
