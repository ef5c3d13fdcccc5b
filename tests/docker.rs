//! The Docker sandbox against a real engine. With CI=true a missing engine or image fails these
//! tests; elsewhere they are skipped with a note (`pipe sandbox bootstrap` builds the image).

mod common;
use common::read_json;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pipe::sandbox::docker::{self, DEFAULT_IMAGE, DockerSandbox, Limits};
use pipe::sandbox::{Job, JobResult};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

async fn sandbox(round: &str) -> Option<DockerSandbox> {
    let engine = match docker::connect().await {
        Ok(d) if docker::has_image(&d, DEFAULT_IMAGE).await => d,
        Ok(_) => return unavailable("the sandbox image is missing"),
        Err(e) => return unavailable(&e),
    };
    Some(DockerSandbox {
        docker: engine,
        image: DEFAULT_IMAGE.into(),
        limits: Limits::default(),
        round: round.into(),
    })
}

fn unavailable<T>(why: &str) -> Option<T> {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI runs the Docker tests: {why}"
    );
    eprintln!("skipped: {why} (start dockerd and run `pipe sandbox bootstrap`)");
    None
}

fn job(script: &str) -> Job {
    Job {
        inputs: vec![],
        script: script.into(),
        env: BTreeMap::new(),
        timeout: Duration::from_secs(30),
        output_limit: 64 * 1024,
        collect: vec![],
        python: vec![],
        network: false,
        collect_dir: None,
    }
}

async fn run(s: &DockerSandbox, j: &Job) -> JobResult {
    s.run(j, &CancellationToken::new()).await.unwrap()
}

async fn leftover(s: &DockerSandbox) -> usize {
    docker::list(&s.docker, Some(&s.round)).await.unwrap().len()
}

#[tokio::test]
async fn files_go_in_and_come_out_as_a_non_root_user_without_network() {
    let Some(s) = sandbox("test-basics").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/in.txt"), "hello").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut j = job(&format!(
        "id -u; ls /sys/class/net; cat $PIPE_WORK/src/sub/in.txt > $PIPE_WORK/out/copy.txt; \
         python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), timeout=2)' || echo NO-NETWORK"
    ));
    j.inputs = vec![("src".into(), dir.path().to_path_buf())];
    j.collect = vec!["out/copy.txt".into()];
    let r = run(&s, &j).await;
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "65534", "{r:?}");
    assert_eq!(lines[1], "lo", "only loopback: {r:?}");
    assert!(r.stdout.contains("NO-NETWORK"), "{r:?}");
    assert_eq!(
        r.files.get("out/copy.txt").map(Vec::as_slice),
        Some(&b"hello"[..])
    );
    assert_eq!(leftover(&s).await, 0);
}

#[tokio::test]
async fn a_fork_bomb_hits_the_pids_limit() {
    let Some(s) = sandbox("test-fork").await else {
        return;
    };
    let r = run(
        &s,
        &job("python3 -c 'import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(60)\n        n += 1\nexcept OSError as e:\n    print(\"blocked after\", n, e.errno)'"),
    )
    .await;
    let n: usize = r
        .stdout
        .split_whitespace()
        .nth(2)
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("{r:?}"));
    assert!(n < 300, "{r:?}");
    assert!(!r.timed_out);
    assert_eq!(leftover(&s).await, 0);
}

#[tokio::test]
async fn a_memory_hog_is_killed_and_reported_as_out_of_memory() {
    let Some(s) = sandbox("test-oom").await else {
        return;
    };
    let r = run(
        &s,
        &job("python3 -c 'x = b\"x\" * 2_000_000_000; print(len(x))'"),
    )
    .await;
    assert!(r.oom_killed, "{r:?}");
    assert_eq!(r.signal, Some(9), "{r:?}");
    assert_eq!(leftover(&s).await, 0);
}

#[tokio::test]
async fn an_endless_loop_is_killed_at_the_timeout() {
    let Some(s) = sandbox("test-loop").await else {
        return;
    };
    let mut j = job("while :; do :; done");
    j.timeout = Duration::from_secs(2);
    let t = Instant::now();
    let r = run(&s, &j).await;
    assert!(r.timed_out, "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(15));
    assert_eq!(leftover(&s).await, 0);
}

#[tokio::test]
async fn writes_outside_the_workspace_fail_and_the_host_is_untouched() {
    let Some(s) = sandbox("test-escape").await else {
        return;
    };
    let marker = format!("/tmp/pipe-escape-{}", std::process::id());
    let r = run(&s, &job(&format!("touch /etc/pwned; touch /pwned; touch /usr/pwned; echo x > {marker}; ls /etc/pwned /pwned 2>&1; echo ok > $PIPE_WORK/out/fine"))).await;
    assert!(r.stderr.contains("Read-only file system"), "{r:?}");
    assert!(r.stdout.contains("No such file"), "{r:?}");
    assert!(!Path::new(&marker).exists());
    assert!(!Path::new("/pwned").exists());
    assert_eq!(leftover(&s).await, 0);
}

#[tokio::test]
async fn a_flood_of_output_is_truncated() {
    let Some(s) = sandbox("test-flood").await else {
        return;
    };
    let r = run(&s, &job("yes pipe | head -c 20000000; echo done >&2")).await;
    assert_eq!(r.stdout.len(), 64 * 1024, "kept up to the limit");
    assert!(r.stdout_dropped > 0);
    assert_eq!(leftover(&s).await, 0);
}

#[tokio::test]
async fn cancelling_a_job_removes_its_container() {
    let Some(s) = sandbox("test-cancel").await else {
        return;
    };
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c2.cancel();
    });
    let r = s.run(&job("sleep 60"), &cancel).await;
    assert!(matches!(r, Err(pipe::sandbox::SandboxError::Cancelled)));
    assert_eq!(leftover(&s).await, 0);
}

fn gates(round_dir: &Path) -> BTreeMap<String, (u64, u64, Vec<(String, String)>)> {
    let mut out = BTreeMap::new();
    for model in ["alpha", "bravo", "charlie", "delta", "echo"] {
        let v: Value = read_json(&round_dir.join(format!("nodes/gate/{model}/1/gate.json")));
        let tests = v["tests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["name"].as_str().unwrap().to_string(),
                    t["outcome"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        out.insert(
            model.to_string(),
            (
                v["tests_passed"].as_u64().unwrap(),
                v["tests_total"].as_u64().unwrap(),
                tests,
            ),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_offline_round_gives_the_same_gates_in_docker_as_locally() {
    let Some(s) = sandbox("atomic-write-offline-2026-05-08").await else {
        return;
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = Vec::new();
    for sb in ["local", "docker"] {
        let out = tempfile::tempdir().unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_pipe"))
            .current_dir(repo)
            .args([
                "run",
                "pipelines/atomic-write-offline.toml",
                "--json",
                "--sandbox",
                sb,
                "--out",
            ])
            .arg(out.path())
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{sb}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["executed"], 37);
        // echo builds through the agent loop: its tool calls ran in this sandbox too.
        let echo: Value = read_json(
            &out.path()
                .join("atomic-write-offline-2026-05-08/nodes/build/echo/1/build.json"),
        );
        assert_eq!(echo["outcome"], "completed", "{sb}: {echo}");
        assert_eq!(echo["agent"]["done_rejections"], 1, "{sb}: {echo}");
        let gate: Value = read_json(
            &out.path()
                .join("atomic-write-offline-2026-05-08/nodes/gate/alpha/1/gate.json"),
        );
        assert!(gate["sandbox"].as_str().unwrap().starts_with(sb), "{gate}");
        dirs.push(out);
    }
    let local = gates(&dirs[0].path().join("atomic-write-offline-2026-05-08"));
    let docker = gates(&dirs[1].path().join("atomic-write-offline-2026-05-08"));
    assert_eq!(local, docker);
    assert_eq!(local["alpha"].0, 22);
    assert_eq!(local["echo"].0, 21);
    assert_eq!(leftover(&s).await, 0, "no container of the round is left");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_run_leaves_no_container_once_the_next_run_is_done() {
    let Some(s) = sandbox("mini-2026-01-02").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mini");
    let status = Command::new("cp")
        .arg("-r")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mini"))
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    let pipeline = root.join("pipeline.toml");
    let text = std::fs::read_to_string(&pipeline).unwrap().replace(
        "command = \"env; sleep ${PIPE_TEST_SLEEP:-0}\"",
        "command = \"sleep 20\"",
    );
    std::fs::write(&pipeline, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pipe"))
        .current_dir(&root)
        .args(["run", "pipeline.toml", "--sandbox", "docker"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until a `sleep 20` container runs, then kill pipe outright.
    let t = Instant::now();
    while leftover(&s).await == 0 && t.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(leftover(&s).await > 0, "a container was running");
    child.kill().unwrap();
    child.wait().unwrap();
    // The next run sweeps the leftovers of its round first; `pipe clean --containers` also would.
    std::fs::write(
        &pipeline,
        std::fs::read_to_string(&pipeline)
            .unwrap()
            .replace("sleep 20", "true"),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_pipe"))
        .current_dir(&root)
        .args(["run", "pipeline.toml", "--sandbox", "docker"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(leftover(&s).await, 0);
}

/// `harness = "command"` in Docker: the stand-in agent of `tests/fixtures/agent` runs as the
/// sandbox user with its tools on PATH, its workspace comes out as a tar (links refused), and
/// the build's container has the network the pipeline asked for, then none when it says no.
#[tokio::test(flavor = "multi_thread")]
async fn the_command_harness_runs_its_agent_in_a_container() {
    let Some(s) = sandbox("agent-2026-01-02").await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("agent");
    common::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent"),
        &root,
    );
    std::fs::set_permissions(
        root.join("tools/fake-agent"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let run = || {
        let o = Command::new(env!("CARGO_BIN_EXE_pipe"))
            .current_dir(&root)
            .env("AGENT_TEST_KEY", "sk-agent-sentinel-2718281828")
            .env("AGENT_TEST_PORT", "9")
            .args(["run", "pipeline.toml", "--json", "--sandbox", "docker"])
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let node = |rel: &str| root.join("out/agent-2026-01-02/nodes").join(rel);
    run();
    let ann: Value = read_json(&node("build/ann/1/build.json"));
    assert_eq!(ann["outcome"], "completed", "{ann}");
    assert_eq!(ann["sandbox"], "docker");
    assert_eq!(ann["usage_source"], "file");
    let refused: Vec<&str> = ann["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(refused, ["conftest.py", "leak", "secret.cfg"], "{ann}");
    let files = node("build/ann/1/files");
    assert!(files.join("notes/plan.md").is_file());
    assert!(!files.join("__pycache__").exists());
    let interfaces = std::fs::read_to_string(files.join("interfaces.txt")).unwrap();
    assert!(
        interfaces.lines().any(|l| l != "lo"),
        "network = true gives the build a network: {interfaces}"
    );
    let bob: Value = read_json(&node("build/bob/1/build.json"));
    assert_eq!(bob["usage_source"], "stdout", "{bob}");
    let gate: Value = read_json(&node("gate/ann/1/gate.json"));
    assert_eq!(gate["passed"], true, "{gate}");
    assert_eq!(gate["sandbox"], "docker");

    let pipeline = root.join("pipeline.toml");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(&pipeline, text.replace("network = true", "network = false")).unwrap();
    run();
    let interfaces = std::fs::read_to_string(files.join("interfaces.txt")).unwrap();
    assert_eq!(interfaces.trim(), "lo", "network = false: loopback only");
    assert_eq!(leftover(&s).await, 0);
}
