//! The local sandbox as model code meets it. A probe (`tests/fixtures/probe/probe.py`) tries the
//! places of the host model code must not reach: the project's hidden tests and reference
//! solutions, another round's outputs, the listing of `/`, `/etc`, `/root`, `/home` and the
//! host's `/tmp` (a marker file there), `/etc/shadow`, the environment of pipe (or any process)
//! holding a sentinel variable, the Docker socket. It runs as a plain sandbox job, as a gate (the
//! hidden test imports it), through the agent harness's `run` tool and through the command
//! harness, and finds nothing under bubblewrap; the same probe outside the sandbox finds each of
//! them. Without bubblewrap, pipe's environment still stays closed to a job, and a killed pipe's
//! workspaces are swept when the next one starts.

mod common;
use common::{copy_dir, read_json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use pipe::sandbox::{Job, JobLimits, python};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// What the probe looks for, and the host things the test put there for it to find.
struct Probe {
    targets: Value,
    /// Files the probe must not read, by what they are.
    secrets: BTreeMap<&'static str, PathBuf>,
    sentinel: String,
    _marker: tempfile::TempPath,
}

impl Probe {
    /// A probe for a round in `root` (its task at `root/task`).
    fn new(root: &Path) -> Self {
        let sentinel = format!(
            "pipe-probe-sentinel-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        // A marker in the host's /tmp that anyone may read: only the mounts keep the probe out.
        let marker = tempfile::Builder::new()
            .prefix("pipe-probe-marker-")
            .tempfile_in("/tmp")
            .unwrap()
            .into_temp_path();
        std::fs::write(&marker, "marker").unwrap();
        set_mode(&marker, 0o644);
        // Another round's build, in the project tree.
        let other = root.join("out/other-2026-01-01/nodes/build/m/1/files/secret.py");
        std::fs::create_dir_all(other.parent().unwrap()).unwrap();
        std::fs::write(&other, "SECRET = 1\n").unwrap();
        let mut secrets = BTreeMap::new();
        secrets.insert(
            "the project's hidden tests",
            repo().join("tasks/atomic-write/hidden/test_atomic_write.py"),
        );
        secrets.insert(
            "the project's reference solution",
            repo().join("tasks/atomic-write/reference/atomic_write.py"),
        );
        secrets.insert(
            "the round's hidden tests",
            root.join("task/hidden/test_probe.py"),
        );
        secrets.insert(
            "the round's reference solution",
            root.join("task/reference/probe.py"),
        );
        secrets.insert("another round's build", other);
        secrets.insert("a marker in the host's /tmp", marker.to_path_buf());
        secrets.insert("/etc/shadow", PathBuf::from("/etc/shadow"));
        for path in secrets.values() {
            world_readable(path);
        }
        let mut read: Vec<String> = secrets.values().map(|p| p.display().to_string()).collect();
        // Every hidden test and reference solution of the project's tasks.
        for f in common::all_files(&repo().join("tasks")) {
            let s = f.display().to_string();
            if s.contains("/hidden/") || s.contains("/reference/") {
                read.push(s);
            }
        }
        let sockets: Vec<String> = ["/var/run/docker.sock", "/run/docker.sock"]
            .iter()
            .filter(|p| Path::new(p).exists())
            .map(ToString::to_string)
            .collect();
        let targets = json!({
            "read": read,
            "list": allowed_listings(),
            "sentinel": sentinel,
            "sockets": sockets,
        });
        Self {
            targets,
            secrets,
            sentinel,
            _marker: marker,
        }
    }

    /// probe.py with the targets filled in.
    fn source(&self) -> String {
        std::fs::read_to_string(repo().join("tests/fixtures/probe/probe.py"))
            .unwrap()
            .replace("@TARGETS@", &self.targets.to_string())
    }

    /// A process whose environment holds the sentinel (as pipe's does), alive until dropped.
    fn sentinel_holder(&self) -> Holder {
        Holder(
            Command::new("sleep")
                .arg("120")
                .env("PIPE_PROBE_SENTINEL", &self.sentinel)
                .spawn()
                .unwrap(),
        )
    }
}

struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

/// Makes a probe target readable by anyone where the test may (never `/etc/shadow`), with its
/// directories open, so that a job not running as root is kept out by the mounts alone.
fn world_readable(path: &Path) {
    if path.starts_with("/etc") || path.starts_with(repo()) {
        return;
    }
    set_mode(path, 0o644);
    for dir in path.ancestors().skip(1) {
        if dir == Path::new("/tmp") || dir == Path::new("/") {
            break;
        }
        set_mode(dir, 0o755);
    }
}

/// Directory -> the names a listing inside the sandbox may show: the system directories, the
/// `/etc` files programs need, and the way to the venv and the Python it links to.
fn allowed_listings() -> Value {
    let mut allowed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    allowed.insert(
        "/".into(),
        [
            "bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp", "usr",
        ]
        .map(String::from)
        .to_vec(),
    );
    allowed.insert(
        "/etc".into(),
        [
            "ld.so.cache",
            "passwd",
            "group",
            "nsswitch.conf",
            "hosts",
            "localtime",
            "alternatives",
        ]
        .map(String::from)
        .to_vec(),
    );
    for d in ["/root", "/home", "/tmp"] {
        allowed.entry(d.into()).or_default();
    }
    let bin = python::ensure_venv(&["pytest==8.3.5".to_string()]).unwrap();
    let venv = bin.parent().unwrap().to_path_buf();
    let exposed = [Some(venv.clone()), python::base_prefix(&venv)];
    for path in exposed.iter().flatten() {
        let parts: Vec<String> = path
            .components()
            .skip(1)
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        for (i, name) in parts.iter().enumerate() {
            let dir = format!("/{}", parts[..i].join("/"));
            allowed.entry(dir).or_default().push(name.clone());
        }
    }
    json!(allowed)
}

/// The list a probe printed (`PROBE [...]`) in `text`.
fn findings(text: &str) -> Vec<String> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("PROBE "))
        .unwrap_or_else(|| panic!("no probe result in {text:?}"));
    serde_json::from_str(line).unwrap()
}

/// Outside any sandbox the probe finds every target: what the tests below assert absent can be
/// found, so they can fail.
#[test]
fn outside_the_sandbox_the_probe_finds_everything() {
    let root = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("tests/fixtures/probe"), root.path());
    let probe = Probe::new(root.path());
    std::fs::write(root.path().join("probe.py"), probe.source()).unwrap();
    let _holder = probe.sentinel_holder();
    let out = Command::new("python3")
        .arg(root.path().join("probe.py"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let found = findings(&String::from_utf8_lossy(&out.stdout));
    let has = |what: &str| found.iter().any(|f| f.starts_with(what));
    for (what, path) in &probe.secrets {
        if *what == "/etc/shadow" && !is_root() {
            continue;
        }
        assert!(
            has(&format!("read {}", path.display())),
            "{what}: {found:#?}"
        );
    }
    assert!(has("listed /: "), "{found:#?}");
    assert!(has("listed /etc: "), "{found:#?}");
    assert!(has("environ of process"), "{found:#?}");
    if is_root() {
        assert!(has("listed /root: "), "{found:#?}");
        for socket in probe.targets["sockets"].as_array().unwrap() {
            let socket = socket.as_str().unwrap();
            assert!(has(&format!("connected to {socket}")), "{found:#?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(pipe_has_bwrap),
    ignore = "needs a working bubblewrap: apt-get install bubblewrap, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
async fn a_plain_job_under_bubblewrap_reaches_nothing_of_the_host() {
    let sandbox = common::needs::bwrap();
    let root = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("tests/fixtures/probe"), root.path());
    let probe = Probe::new(root.path());
    let dir = root.path().join("probe-job");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("probe.py"), probe.source()).unwrap();
    let _holder = probe.sentinel_holder();
    let job = Job {
        inputs: vec![("probe".into(), dir)],
        script: "python3 \"$PIPE_WORK/probe/probe.py\"".into(),
        env: BTreeMap::new(),
        timeout: Duration::from_secs(60),
        output_limit: 64 * 1024,
        collect: vec![],
        // The venv and the Python it links to are mounted as for a gate.
        python: vec!["pytest==8.3.5".into()],
        network: false,
        collect_dir: None,
        gateway: None,
        image: None,
        limits: JobLimits::default(),
    };
    let r = sandbox.run(&job, &CancellationToken::new()).await.unwrap();
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    assert_eq!(findings(&r.stdout), Vec::<String>::new(), "{r:?}");
    assert_eq!(r.sandbox, "local+bwrap");
}

/// A round in a temp dir with the probe fixture (task, tools) and `pipeline`.
fn round(pipeline: &str) -> (tempfile::TempDir, Probe) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("tests/fixtures/probe"), dir.path());
    set_mode(&dir.path().join("tools/probe-agent"), 0o755);
    let probe = Probe::new(dir.path());
    std::fs::write(dir.path().join("tools/probe.py"), probe.source()).unwrap();
    std::fs::write(dir.path().join("pipeline.toml"), pipeline).unwrap();
    (dir, probe)
}

/// `pipe run pipeline.toml --json --sandbox local` in `root` (`unisolated` when `extra_env`
/// sets `PIPE_NO_BWRAP`), pipe's environment holding the probe's sentinel; returns the summary.
fn run(root: &Path, probe: &Probe, extra_env: &[(&str, &str)]) -> Value {
    let sandbox = if extra_env.iter().any(|(k, _)| *k == "PIPE_NO_BWRAP") {
        "unisolated"
    } else {
        "local"
    };
    let out = common::pipe()
        .cwd(root)
        .args(["run", "pipeline.toml", "--json", "--sandbox", sandbox])
        .env("PIPE_PROBE_SENTINEL", &probe.sentinel)
        .envs(extra_env.iter().copied())
        .run();
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

fn node(root: &Path, path: &str) -> PathBuf {
    root.join("out/probe-2026-01-02/nodes").join(path)
}

/// The gate of `build/<model>/1` passed: its hidden test found the probe's list empty.
fn assert_gate_reached_nothing(root: &Path, model: &str) {
    let gate = read_json(&node(root, &format!("gate/{model}/1/gate.json")));
    let output =
        std::fs::read_to_string(node(root, &format!("gate/{model}/1/output.txt"))).unwrap();
    assert_eq!(gate["passed"], true, "{gate}\n{output}");
    assert_eq!(gate["tests_total"], 1, "{gate}");
    assert_eq!(gate["sandbox"], "local+bwrap", "{gate}");
}

const COMMAND_ROUND: &str = r#"[round]
name = "probe"
date = "2026-01-02"
task = "task"

[providers.api]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"

[[models]]
id = "cli"
provider = "api"
model = "example/cli"

[stages.build]
kind = "build"
prompt = "build.md.j2"
harness = "command"

[stages.build.command]
run = "probe-agent"
network = false
tools = "tools"
timeout_secs = 120
"#;

const GATE: &str = r#"
[stages.gate]
kind = "gate"
needs = ["build"]
"#;

#[test]
#[cfg_attr(
    not(pipe_has_bwrap),
    ignore = "needs a working bubblewrap: apt-get install bubblewrap, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
fn the_command_harness_and_the_gate_after_it_reach_nothing_of_the_host() {
    common::needs::bwrap();
    let (dir, probe) = round(&format!("{COMMAND_ROUND}{GATE}"));
    let summary = run(dir.path(), &probe, &[]);
    let build = read_json(&node(dir.path(), "build/cli/1/build.json"));
    assert_eq!(build["outcome"], "completed", "{build} {summary}");
    assert_eq!(build["sandbox"], "local+bwrap", "{build}");
    let found =
        std::fs::read_to_string(node(dir.path(), "build/cli/1/files/probe-result.txt")).unwrap();
    assert_eq!(findings(&found), Vec::<String>::new());
    assert_gate_reached_nothing(dir.path(), "cli");
}

#[test]
#[cfg_attr(
    not(pipe_has_bwrap),
    ignore = "needs a working bubblewrap: apt-get install bubblewrap, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
fn the_agent_harness_run_tool_and_the_gate_after_it_reach_nothing_of_the_host() {
    common::needs::bwrap();
    let pipeline = format!(
        r#"[round]
name = "probe"
date = "2026-01-02"
task = "task"

[providers.replay]
kind = "replay"
recordings = "rec"

[[models]]
id = "m"
provider = "replay"
model = "example/m"
harness = "agent"

[stages.build]
kind = "build"
prompt = "{prompt}"

[stages.build.agent]
max_steps = 2
stagnation_steps = 2
{GATE}"#,
        prompt = repo().join("prompts/build-agent.md.j2").display()
    );
    let (dir, probe) = round(&pipeline);
    let turns = json!([
        {"usage": {"input_tokens": 10, "output_tokens": 10}, "tool_calls": [
            {"id": "call_0", "name": "write_file", "arguments": {"path": "probe.py", "content": probe.source()}}
        ]},
        {"usage": {"input_tokens": 10, "output_tokens": 10}, "tool_calls": [
            {"id": "call_1", "name": "run", "arguments": {"command": ["python3", "probe.py"]}}
        ]},
    ]);
    let exchange = json!({"stage": "build", "model": "m", "subject": "1", "turns": turns});
    let rec = dir.path().join("rec/build/m/1.yaml");
    std::fs::create_dir_all(rec.parent().unwrap()).unwrap();
    std::fs::write(&rec, serde_yaml::to_string(&exchange).unwrap()).unwrap();
    run(dir.path(), &probe, &[]);
    let transcript =
        std::fs::read_to_string(node(dir.path(), "build/m/1/transcript.jsonl")).unwrap();
    let result = transcript
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["type"] == "tool" && e["name"] == "run")
        .unwrap_or_else(|| panic!("no run tool call: {transcript}"));
    let text = result["result"].as_str().unwrap();
    assert!(text.starts_with("exit 0"), "{text}");
    assert_eq!(findings(text), Vec::<String>::new(), "{text}");
    assert_gate_reached_nothing(dir.path(), "m");
}

/// Without bubblewrap a job shares the host's files, but not pipe's environment: pipe is not
/// dumpable, and when it is root the job runs as `nobody`.
#[test]
fn without_bubblewrap_a_job_cannot_read_pipes_environment() {
    let (dir, mut probe) = round(COMMAND_ROUND);
    probe.targets = json!({"read": [], "list": {}, "sentinel": probe.sentinel, "sockets": []});
    std::fs::write(dir.path().join("tools/probe.py"), probe.source()).unwrap();
    run(dir.path(), &probe, &[("PIPE_NO_BWRAP", "1")]);
    let build = read_json(&node(dir.path(), "build/cli/1/build.json"));
    assert_eq!(build["outcome"], "completed", "{build}");
    assert_eq!(build["sandbox"], "unisolated", "{build}");
    let found =
        std::fs::read_to_string(node(dir.path(), "build/cli/1/files/probe-result.txt")).unwrap();
    assert_eq!(findings(&found), Vec::<String>::new());
}

/// A killed pipe's workspaces (copies of hidden tests in them) are swept when the next pipe
/// starts a sandbox; a live pipe's are not.
#[test]
fn a_dead_pipes_workspace_is_swept_at_start_and_a_live_ones_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let leave = |name: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(dir.join("work/hidden")).unwrap();
        std::fs::write(dir.join("work/hidden/test_secret.py"), "assert True\n").unwrap();
        std::fs::write(dir.join("owner.lock"), "").unwrap();
        dir
    };
    let dead = leave("pipe-sandbox-dead0");
    let live = leave("pipe-sandbox-live0");
    // The live owner: this test, holding the lock as a running pipe does.
    let lock = std::fs::File::open(live.join("owner.lock")).unwrap();
    lock.lock().unwrap();
    let out = common::pipe()
        .args(["check-task", "--sandbox", "local", "--json"])
        .arg(repo().join("tasks/humaneval-mini/humaneval-0"))
        .env("TMPDIR", tmp.path())
        .run();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(!dead.exists(), "the dead pipe's workspace is swept");
    assert!(
        live.join("work/hidden/test_secret.py").exists(),
        "the live one is kept"
    );
    // pipe's own workspace went with its job.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("pipe-sandbox-live0")]);
}
