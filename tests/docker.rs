//! The Docker sandbox against a real engine. Where the build found no engine holding the sandbox
//! image these tests are ignored, saying so; run anyway (`--include-ignored`) they fail naming
//! what is missing (`pipe sandbox bootstrap` builds the image).

mod common;
use common::read_json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pipe::sandbox::docker::{self, DEFAULT_IMAGE, DockerSandbox};
use pipe::sandbox::{Job, JobResult};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A sandbox of `round` on the engine; fails the test, naming what is missing, without one.
async fn sandbox(round: &str) -> DockerSandbox {
    DockerSandbox::new(common::needs::docker().await, DEFAULT_IMAGE, round).unwrap()
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
        gateway: None,
        image: None,
        limits: pipe::sandbox::JobLimits::default(),
    }
}

async fn run(s: &DockerSandbox, j: &Job) -> JobResult {
    s.run(j, &CancellationToken::new()).await.unwrap()
}

/// The engine's events for the round's containers since `since` (unix seconds): `attach`,
/// `start`, ... and, were the archive API used, `extract-to-dir` / `archive-path`.
async fn actions(s: &DockerSandbox, since: f64) -> Vec<String> {
    use bollard::query_parameters::EventsOptionsBuilder;
    use futures_util::StreamExt;
    let until = now() + 0.5;
    let filters = std::collections::HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        (
            "label".to_string(),
            vec![format!("{}={}", docker::LABEL_ROUND, s.round)],
        ),
    ]);
    let options = EventsOptionsBuilder::default()
        .since(&format!("{since:.6}"))
        .until(&format!("{until:.6}"))
        .filters(&filters)
        .build();
    s.docker
        .events(Some(options))
        .filter_map(|e| async move { e.ok().and_then(|e| e.action) })
        .collect()
        .await
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

async fn leftover(s: &DockerSandbox) -> usize {
    docker::list(&s.docker, Some(&s.round)).await.unwrap().len()
}

#[tokio::test]
#[cfg_attr(
    not(pipe_has_docker),
    ignore = "needs a Docker engine with pipe's sandbox image: start dockerd, run `pipe sandbox bootstrap`, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
async fn files_go_in_and_come_out_as_a_non_root_user_without_network() {
    let s = sandbox("test-basics").await;
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
    j.collect = vec!["out/copy.txt".into(), "out/missing".into()];
    let since = now() - 0.1;
    let r = run(&s, &j).await;
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "65534", "{r:?}");
    assert_eq!(lines[1], "lo", "only loopback: {r:?}");
    assert!(r.stdout.contains("NO-NETWORK"), "{r:?}");
    assert_eq!(
        r.files.get("out/copy.txt").map(Vec::as_slice),
        Some(&b"hello"[..])
    );
    assert_eq!(r.files.len(), 1, "a missing file is not collected");
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    // In on stdin and out on stdout: the engine's archive API is not used.
    let actions = actions(&s, since).await;
    assert!(actions.iter().any(|a| a == "attach"), "{actions:?}");
    assert!(
        !actions
            .iter()
            .any(|a| a.starts_with("archive") || a.starts_with("extract")),
        "{actions:?}"
    );
    assert_eq!(leftover(&s).await, 0);
}

#[tokio::test]
#[cfg_attr(
    not(pipe_has_docker),
    ignore = "needs a Docker engine with pipe's sandbox image: start dockerd, run `pipe sandbox bootstrap`, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
async fn what_the_job_leaves_running_is_killed_and_cannot_fake_the_results() {
    let s = sandbox("test-leftovers").await;
    // A background writer outlives the script; the job prints what looks like the marker; the
    // collected file is a symlink to one outside the workspace, which is not followed.
    let mut j = job(
        "(while :; do echo bg; sleep 0.05; done) & sleep 0.2; printf 'x\\n\\000pipe-result-0123\\000y\\n'; \
         echo kept > $PIPE_WORK/out/a; ln -s /etc/passwd $PIPE_WORK/out/link; exit 3",
    );
    j.collect = vec!["out/a".into(), "out/link".into()];
    j.timeout = Duration::from_secs(20);
    let t = Instant::now();
    let r = run(&s, &j).await;
    assert!(t.elapsed() < Duration::from_secs(10), "{r:?}");
    assert_eq!(r.exit_code, Some(3), "{r:?}");
    assert!(!r.timed_out);
    assert!(r.stdout.contains("x\n\0pipe-result-0123\0y\n"), "{r:?}");
    assert_eq!(
        r.files.get("out/a").map(Vec::as_slice),
        Some(&b"kept\n"[..])
    );
    assert!(!r.files.contains_key("out/link"), "{r:?}");
    assert_eq!(leftover(&s).await, 0);
}

#[tokio::test]
#[cfg_attr(
    not(pipe_has_docker),
    ignore = "needs a Docker engine with pipe's sandbox image: start dockerd, run `pipe sandbox bootstrap`, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
async fn a_job_killed_by_a_signal_reports_it() {
    let s = sandbox("test-signal").await;
    let r = run(&s, &job("echo before; kill -TERM $$")).await;
    assert_eq!(r.signal, Some(15), "{r:?}");
    assert_eq!(r.exit_code, None, "{r:?}");
    assert_eq!(r.stdout, "before\n");
    assert_eq!(leftover(&s).await, 0);
}

#[tokio::test]
#[cfg_attr(
    not(pipe_has_docker),
    ignore = "needs a Docker engine with pipe's sandbox image: start dockerd, run `pipe sandbox bootstrap`, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
async fn a_fork_bomb_hits_the_pids_limit() {
    let s = sandbox("test-fork").await;
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
#[cfg_attr(
    not(pipe_has_docker),
    ignore = "needs a Docker engine with pipe's sandbox image: start dockerd, run `pipe sandbox bootstrap`, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
async fn a_memory_hog_is_killed_and_reported_as_out_of_memory() {
    let s = sandbox("test-oom").await;
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
#[cfg_attr(
    not(pipe_has_docker),
    ignore = "needs a Docker engine with pipe's sandbox image: start dockerd, run `pipe sandbox bootstrap`, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
async fn an_endless_loop_is_killed_at_the_timeout() {
    let s = sandbox("test-loop").await;
    let mut j = job("echo partial > $PIPE_WORK/out/p; while :; do :; done");
    j.timeout = Duration::from_secs(2);
    j.collect = vec!["out/p".into()];
    let t = Instant::now();
    let r = run(&s, &j).await;
    assert!(r.timed_out, "{r:?}");
    // What the job wrote before the kill is still collected.
    assert_eq!(
        r.files.get("out/p").map(Vec::as_slice),
        Some(&b"partial\n"[..])
    );
    assert!(t.elapsed() < Duration::from_secs(15));
    assert_eq!(leftover(&s).await, 0);
}

#[tokio::test]
#[cfg_attr(
    not(pipe_has_docker),
    ignore = "needs a Docker engine with pipe's sandbox image: start dockerd, run `pipe sandbox bootstrap`, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
async fn writes_outside_the_workspace_fail_and_the_host_is_untouched() {
    let s = sandbox("test-escape").await;
    let marker = format!("/tmp/pipe-escape-{}", std::process::id());
    let r = run(&s, &job(&format!("touch /etc/pwned; touch /pwned; touch /usr/pwned; echo x > {marker}; ls /etc/pwned /pwned 2>&1; echo ok > $PIPE_WORK/out/fine"))).await;
    assert!(r.stderr.contains("Read-only file system"), "{r:?}");
    assert!(r.stdout.contains("No such file"), "{r:?}");
    assert!(!Path::new(&marker).exists());
    assert!(!Path::new("/pwned").exists());
    assert_eq!(leftover(&s).await, 0);
}

#[tokio::test]
#[cfg_attr(
    not(pipe_has_docker),
    ignore = "needs a Docker engine with pipe's sandbox image: start dockerd, run `pipe sandbox bootstrap`, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
async fn a_flood_of_output_is_truncated() {
    let s = sandbox("test-flood").await;
    let r = run(&s, &job("yes pipe | head -c 20000000; echo done >&2")).await;
    assert_eq!(r.stdout.len(), 64 * 1024, "kept up to the limit");
    assert!(r.stdout_dropped > 0);
    assert_eq!(leftover(&s).await, 0);
}

#[tokio::test]
#[cfg_attr(
    not(pipe_has_docker),
    ignore = "needs a Docker engine with pipe's sandbox image: start dockerd, run `pipe sandbox bootstrap`, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
async fn cancelling_a_job_removes_its_container() {
    let s = sandbox("test-cancel").await;
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
#[cfg_attr(
    not(pipe_has_docker),
    ignore = "needs a Docker engine with pipe's sandbox image: start dockerd, run `pipe sandbox bootstrap`, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
async fn the_offline_round_gives_the_same_gates_in_docker_as_locally() {
    let s = sandbox("atomic-write-offline-2026-05-08").await;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = Vec::new();
    for sb in ["local", "docker"] {
        let out = tempfile::tempdir().unwrap();
        let o = common::pipe()
            .cwd(repo)
            .args([
                "run",
                "pipelines/atomic-write-offline.toml",
                "--json",
                "--sandbox",
                sb,
                "--out",
            ])
            .arg(out.path())
            .run();
        assert_eq!(o.status.code(), Some(0), "{sb}: {}", o.stderr);
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
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
#[cfg_attr(
    not(pipe_has_docker),
    ignore = "needs a Docker engine with pipe's sandbox image: start dockerd, run `pipe sandbox bootstrap`, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
async fn a_killed_run_leaves_no_container_once_the_next_run_is_done() {
    let s = sandbox("mini-2026-01-02").await;
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
    let mut child = common::pipe()
        .cwd(&root)
        .args(["run", "pipeline.toml", "--sandbox", "docker"])
        .spawn();
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
    let o = common::pipe()
        .cwd(&root)
        .args(["run", "pipeline.toml", "--sandbox", "docker"])
        .run();
    assert_eq!(o.status.code(), Some(0), "{}", o.stderr);
    assert_eq!(leftover(&s).await, 0);
}

/// `harness = "command"` in Docker: the stand-in agent of `tests/fixtures/agent` runs as the
/// sandbox user with its tools on PATH, its workspace comes out as a tar (links refused), and
/// the build's container has the network the pipeline asked for, then none when it says no.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(pipe_has_docker),
    ignore = "needs a Docker engine with pipe's sandbox image: start dockerd, run `pipe sandbox bootstrap`, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
async fn the_command_harness_runs_its_agent_in_a_container() {
    let s = sandbox("agent-2026-01-02").await;
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
        let o = common::pipe()
            .cwd(&root)
            .env("AGENT_TEST_KEY", "sk-agent-sentinel-2718281828")
            .env("AGENT_TEST_PORT", "9")
            .args(["run", "pipeline.toml", "--json", "--sandbox", "docker"])
            .run();
        assert_eq!(o.status.code(), Some(0), "{}", o.stderr);
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

/// An image whose `/work` belongs to root (not one `pipe sandbox bootstrap` made): the workspace
/// is a tmpfs of the sandbox user's whatever the image holds there, so the job still runs, and
/// no archive API call is needed.
#[tokio::test]
#[cfg_attr(
    not(pipe_has_docker),
    ignore = "needs a Docker engine with pipe's sandbox image: start dockerd, run `pipe sandbox bootstrap`, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
async fn an_image_whose_work_belongs_to_root_still_gives_the_job_its_workspace() {
    let mut s = sandbox("test-root-work").await;
    let image = format!("pipe-sandbox/test-root-work:{}", std::process::id());
    let name = format!("pipe-test-root-work-{}", std::process::id());
    let docker = |args: &[&str]| {
        let o = Command::new("docker").args(args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    docker(&[
        "run",
        "--name",
        &name,
        "--user",
        "0",
        "--network",
        "none",
        DEFAULT_IMAGE,
        "chown",
        "0:0",
        "/work",
    ]);
    docker(&["commit", &name, &image]);
    docker(&["rm", &name]);
    s.image = image.clone();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "hello").unwrap();
    let mut j = job("cat $PIPE_WORK/src/in.txt > $PIPE_WORK/out/copy.txt; id -u");
    j.inputs = vec![("src".into(), dir.path().to_path_buf())];
    j.collect = vec!["out/copy.txt".into()];
    let since = now() - 0.1;
    let r = s.run(&j, &CancellationToken::new()).await;
    docker(&["rmi", &image]);
    let r = r.unwrap();
    assert_eq!(r.stdout, "65534\n", "{r:?}");
    assert_eq!(
        r.files.get("out/copy.txt").map(Vec::as_slice),
        Some(&b"hello"[..])
    );
    let actions = actions(&s, since).await;
    assert!(
        !actions
            .iter()
            .any(|a| a.starts_with("archive") || a.starts_with("extract")),
        "{actions:?}"
    );
    assert_eq!(leftover(&s).await, 0);
}

/// A collected directory comes back with its limits: links refused, skipped directories left
/// out, and an overflow named when there are more files or bytes than allowed.
#[tokio::test]
#[cfg_attr(
    not(pipe_has_docker),
    ignore = "needs a Docker engine with pipe's sandbox image: start dockerd, run `pipe sandbox bootstrap`, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
async fn a_collected_directory_keeps_its_caps_and_confinement() {
    let s = sandbox("test-tree").await;
    let spec = |max_files, max_bytes| pipe::sandbox::CollectDir {
        dir: "ws".into(),
        skip: vec!["__pycache__".into()],
        max_files,
        max_bytes,
    };
    let script = "mkdir -p $PIPE_WORK/ws/sub $PIPE_WORK/ws/__pycache__ && cd $PIPE_WORK/ws && \
                  echo a > a && echo bb > sub/b && echo c > __pycache__/c && ln -s /etc/passwd link && \
                  mkfifo fifo && head -c 1000 /dev/zero > big";
    let mut j = job(script);
    j.collect_dir = Some(spec(10, 10_000));
    let r = run(&s, &j).await;
    let tree = r.tree.expect("a tree");
    let names: Vec<&str> = tree.files.keys().map(String::as_str).collect();
    assert_eq!(names, ["a", "big", "sub/b"], "{tree:?}");
    let mut refused = tree.refused.clone();
    refused.sort();
    assert_eq!(
        refused,
        [
            ("fifo".to_string(), "not a regular file".to_string()),
            ("link".to_string(), "a link (not followed)".to_string())
        ]
    );
    assert_eq!(tree.overflow, None);
    assert_eq!(tree.bytes, 1005);

    j.collect_dir = Some(spec(2, 10_000));
    let tree = run(&s, &j).await.tree.unwrap();
    assert_eq!(
        tree.overflow.as_deref(),
        Some("more than 2 files"),
        "{tree:?}"
    );
    j.collect_dir = Some(spec(10, 500));
    let tree = run(&s, &j).await.tree.unwrap();
    assert_eq!(
        tree.overflow.as_deref(),
        Some("more than 500 bytes"),
        "{tree:?}"
    );
    assert!(tree.bytes <= 500);

    let mut j = job("true");
    j.collect_dir = Some(spec(10, 10_000));
    assert!(run(&s, &j).await.tree.is_none(), "a missing directory");
    assert_eq!(leftover(&s).await, 0);
}

/// What `df` says is free on the filesystem holding `path`, in bytes.
fn available(path: &Path) -> u64 {
    let o = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("df: {}", String::from_utf8_lossy(&o.stdout)))
}

/// The engine's data directory (where volumes and container layers live).
async fn docker_root(s: &DockerSandbox) -> std::path::PathBuf {
    let info = s.docker.info().await.unwrap();
    info.docker_root_dir
        .unwrap_or_else(|| "/var/lib/docker".into())
        .into()
}

/// `/work` is a tmpfs with a hard cap (256 MiB by default, inside the 512 MiB memory limit): a job
/// writing 1 GiB gets ENOSPC at the cap, is not killed for memory, and the engine's disk does not
/// see the bytes; a job creating more files than the workspace's inodes gets ENOSPC too.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(pipe_has_docker),
    ignore = "needs a Docker engine with pipe's sandbox image: start dockerd, run `pipe sandbox bootstrap`, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
async fn a_write_past_the_workspace_cap_fails_with_enospc_and_spares_the_host_disk() {
    let s = sandbox("test-work-cap").await;
    let cap = s.limits.work_bytes;
    assert_eq!(cap, 256 << 20, "the documented default");
    assert!(cap < s.limits.memory_bytes as u64, "the cap fits in memory");
    let root = docker_root(&s).await;
    let before = available(&root);
    let mut j = job(
        "stat -f -c %T /work; dd if=/dev/zero of=$PIPE_WORK/out/big bs=1M count=1024 2>&1; \
         echo dd=$?; stat -c %s $PIPE_WORK/out/big; sleep 3",
    );
    j.timeout = Duration::from_secs(60);
    let running = tokio::spawn({
        let s = s.clone();
        async move { s.run(&j, &CancellationToken::new()).await }
    });
    // The least free space the engine's disk had while the job ran (and held its file).
    let mut lowest = before;
    while !running.is_finished() {
        lowest = lowest.min(available(&root));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = running.await.unwrap().unwrap();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"tmpfs"), "{r:?}");
    assert!(r.stdout.contains("No space left on device"), "{r:?}");
    assert!(lines.contains(&"dd=1"), "{r:?}");
    let written: u64 = lines.last().unwrap().parse().unwrap();
    assert!(
        written <= cap && written > cap - (4 << 20),
        "{written} bytes: {r:?}"
    );
    assert!(!r.oom_killed, "ENOSPC, not an out-of-memory kill: {r:?}");
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    // Writing the 1 GiB to the engine's disk would take it all; what other processes write
    // meanwhile is noise well under the margin.
    let drop_mib = before.saturating_sub(lowest) >> 20;
    assert!(
        drop_mib < 768,
        "the engine's disk lost {drop_mib} MiB while the job wrote"
    );

    let r = run(
        &s,
        &job("python3 -c 'import errno\nn = 0\ntry:\n    while True:\n        open(\"f%d\" % n, \"w\").close()\n        n += 1\nexcept OSError as e:\n    print(n, errno.errorcode[e.errno])'"),
    )
    .await;
    let mut words = r.stdout.split_whitespace();
    let files: u64 = words
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{r:?}"));
    assert!(files < docker::WORK_INODES, "{r:?}");
    assert_eq!(words.next(), Some("ENOSPC"), "{r:?}");
    assert_eq!(leftover(&s).await, 0);
}

/// The workspace cap and the memory limit leave a real gate room: the atomic-write task's
/// reference passes its hidden tests in Docker.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(pipe_has_docker),
    ignore = "needs a Docker engine with pipe's sandbox image: start dockerd, run `pipe sandbox bootstrap`, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
async fn a_normal_gate_passes_within_the_workspace_cap() {
    let _s = sandbox("check-task").await;
    let o = common::pipe()
        .cwd(env!("CARGO_MANIFEST_DIR"))
        .args([
            "check-task",
            "tasks/atomic-write",
            "--sandbox",
            "docker",
            "--json",
        ])
        .run();
    let v: Value = serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.stderr));
    assert_eq!(o.status.code(), Some(0), "{v}");
    assert_eq!(v["passed"], 1, "{v}");
    assert_eq!(v["tasks"][0]["sandbox"], "docker", "{v}");
    assert!(v["tasks"][0]["tests_total"].as_u64().unwrap() > 10, "{v}");
}

/// The ids of the containers process `pid` owns (by their owner label), with whether each runs.
async fn containers_of(s: &DockerSandbox, pid: u32) -> Vec<(String, bool)> {
    use bollard::query_parameters::ListContainersOptionsBuilder;
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![format!("{}=true", docker::LABEL_MANAGED)],
    )]);
    let list = s
        .docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    list.into_iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get(docker::LABEL_OWNER))
                .and_then(|o| pipe::sandbox::owner::Owner::parse(o))
                .is_some_and(|o| o.pid == pid)
        })
        .filter_map(|c| {
            Some((
                c.id?,
                c.state.as_ref().is_some_and(|s| s.to_string() == "running"),
            ))
        })
        .collect()
}

/// Waits (up to a minute) until process `pid` has had a container running for two seconds (a
/// long job's, not a passing one's); its id.
async fn running_container_of(s: &DockerSandbox, pid: u32) -> String {
    let t = Instant::now();
    let mut seen: BTreeMap<String, Instant> = BTreeMap::new();
    while t.elapsed() < Duration::from_secs(60) {
        let running: Vec<String> = containers_of(s, pid)
            .await
            .into_iter()
            .filter_map(|(id, running)| running.then_some(id))
            .collect();
        seen.retain(|id, _| running.contains(id));
        for id in running {
            if seen
                .entry(id.clone())
                .or_insert_with(Instant::now)
                .elapsed()
                >= Duration::from_secs(2)
            {
                return id;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("process {pid} ran no container for two seconds within a minute");
}

async fn exists(s: &DockerSandbox, id: &str) -> bool {
    s.docker.inspect_container(id, None).await.is_ok()
}

/// A copy of the command-harness fixture's task whose reference sleeps at import: its gate holds
/// a container for minutes.
fn sleeping_task(dir: &Path) -> std::path::PathBuf {
    let task = dir.join("sleepy");
    common::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent/task"),
        &task,
    );
    std::fs::write(
        task.join("reference/adder.py"),
        "import time\ntime.sleep(600)\n\n\ndef add(a, b):\n    return a + b\n",
    )
    .unwrap();
    let toml = task.join("task.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replace("timeout_secs = 60", "timeout_secs = 900"),
    )
    .unwrap();
    task
}

/// `pipe check-task` of `task` in Docker, as a process of its own.
fn check_task(task: &Path) -> std::process::Child {
    common::pipe()
        .args(["check-task", "--sandbox", "docker"])
        .arg(task)
        .spawn()
}

/// `pipe clean --containers`: its stdout.
fn clean_containers() -> String {
    let o = common::pipe().args(["clean", "--containers"]).run();
    assert_eq!(o.status.code(), Some(0), "{}{}", o.stdout, o.stderr);
    o.stdout
}

/// "removed N ...; left M ..." → (N, M).
fn clean_counts(stdout: &str) -> (usize, usize) {
    let numbers: Vec<usize> = stdout
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        stdout.starts_with("removed ") && stdout.contains("; left ") && numbers.len() == 2,
        "{stdout}"
    );
    (numbers[0], numbers[1])
}

/// Two pipes at once: this process (a job of a sandbox whose round is `check-task`, the round a
/// sweep used to remove) and a real `pipe check-task` whose gate sleeps. The other's start sweeps
/// and leaves this process's running container; this process's sweep and `pipe clean
/// --containers` leave the other's. Once the other pipe is killed outright, its container is the
/// next sweep's, or `pipe clean --containers`'s.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(pipe_has_docker),
    ignore = "needs a Docker engine with pipe's sandbox image: start dockerd, run `pipe sandbox bootstrap`, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
async fn a_sweep_removes_only_the_containers_of_a_pipe_that_is_gone() {
    let s = sandbox("check-task").await;
    let me = std::process::id();
    let mine = tokio::spawn({
        let s = s.clone();
        async move {
            let mut j = job("sleep 12; echo survived");
            j.timeout = Duration::from_secs(60);
            s.run(&j, &CancellationToken::new()).await
        }
    });
    running_container_of(&s, me).await;
    let tmp = tempfile::tempdir().unwrap();
    let task = sleeping_task(tmp.path());
    let mut first = check_task(&task);
    let theirs = running_container_of(&s, first.id()).await;
    // The other pipe swept at its start, before its own container ran: this one's lived on.
    let r = mine
        .await
        .unwrap()
        .expect("this process's container was not removed");
    assert_eq!(r.stdout, "survived\n", "{r:?}");
    assert_eq!(r.exit_code, Some(0), "{r:?}");

    let swept = docker::sweep(&s.docker).await.unwrap();
    assert!(swept.alive >= 1, "{swept:?}");
    assert!(
        exists(&s, &theirs).await,
        "a live pipe's container was swept"
    );
    let (_, alive) = clean_counts(&clean_containers());
    assert!(alive >= 1);
    assert!(
        exists(&s, &theirs).await,
        "`pipe clean --containers` removed a live pipe's container"
    );

    // Killed outright, the pipe cannot remove its container: the next sweep does.
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(exists(&s, &theirs).await);
    let swept = docker::sweep(&s.docker).await.unwrap();
    assert!(!exists(&s, &theirs).await, "{swept:?}");

    let mut second = check_task(&task);
    let theirs = running_container_of(&s, second.id()).await;
    second.kill().unwrap();
    second.wait().unwrap();
    let out = clean_containers();
    clean_counts(&out);
    assert!(!exists(&s, &theirs).await, "{out}");
}

/// Ctrl-C (SIGINT) of `pipe check-task` and of `pipe run` while a container runs: pipe stops, says
/// it was interrupted, and its container is gone.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(pipe_has_docker),
    ignore = "needs a Docker engine with pipe's sandbox image: start dockerd, run `pipe sandbox bootstrap`, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
async fn interrupting_pipe_removes_its_running_containers() {
    let s = sandbox("test-interrupt").await;
    let tmp = tempfile::tempdir().unwrap();
    let task = sleeping_task(tmp.path());
    let root = tmp.path().join("mini");
    common::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mini"),
        &root,
    );
    let pipeline = root.join("pipeline.toml");
    let text = std::fs::read_to_string(&pipeline).unwrap().replace(
        "command = \"env; sleep ${PIPE_TEST_SLEEP:-0}\"",
        "command = \"sleep 600\"",
    );
    std::fs::write(&pipeline, text).unwrap();
    let run = common::pipe()
        .cwd(&root)
        .args(["run", "pipeline.toml", "--sandbox", "docker"])
        .spawn();
    for mut child in [check_task(&task), run] {
        let pid = child.id();
        let id = running_container_of(&s, pid).await;
        let t = Instant::now();
        let kill = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "interrupted");
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
        assert!(!exists(&s, &id).await, "the container of {pid} is left");
        assert!(containers_of(&s, pid).await.is_empty());
    }
}

/// Model code looking for what it must not see. Its secrets are written as hex, so the source
/// itself (collected, recorded) never holds them; `probe(gate)` returns what it found: a secret
/// in its environment or any process's, a host path that exists, a secret in any file of the
/// container (the hidden tests' only outside the gate, where they belong), the host's listener on
/// 127.0.0.1, a network interface besides loopback, the engine's socket, root.
const PROBE: &str = r#"import os, socket, stat, sys

SECRETS = {@SECRETS@}
HOST_PATHS = [@HOST_PATHS@]
PORT = @PORT@


def probe(gate):
    found = []
    secrets = {k: bytes.fromhex(v) for k, v in SECRETS.items()}
    if gate:
        del secrets["the hidden tests"]

    def look(where, data):
        for name, secret in secrets.items():
            if secret in data:
                found.append("%s in %s" % (name, where))

    look("the environment", repr(sorted(os.environ.items())).encode())
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/environ" % pid, "rb") as f:
                    look("/proc/%s/environ" % pid, f.read())
            except OSError:
                pass
    for p in HOST_PATHS:
        if os.path.lexists(p):
            found.append("host path " + p)
    files = 0
    for root, dirs, names in os.walk("/"):
        if root == "/":
            dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
        for n in names:
            p = os.path.join(root, n)
            try:
                fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                if stat.S_ISREG(st.st_mode) and st.st_size < (8 << 20):
                    with os.fdopen(os.dup(fd), "rb") as f:
                        look(p, f.read())
                    files += 1
            except OSError:
                pass
            finally:
                os.close(fd)
    try:
        socket.create_connection(("127.0.0.1", PORT), timeout=2).close()
        found.append("the host's listener on 127.0.0.1:%d" % PORT)
    except OSError:
        pass
    others = [i for i in os.listdir("/sys/class/net") if i != "lo"]
    if others:
        found.append("network interfaces " + ",".join(others))
    for p in ("/var/run/docker.sock", "/run/docker.sock"):
        if os.path.lexists(p):
            found.append("the engine's socket " + p)
    if os.getuid() == 0:
        found.append("root")
    return found, files


def report(where):
    found, files = probe(False)
    print("PROBE %s %s (%d files read)" % (where, "LEAK: " + "; ".join(found) if found else "clear", files))
"#;

/// The implementation a probing model builds: the probe runs at import, and `add` is right only
/// when it found nothing, so a leak in the gate fails the gate (and says what leaked).
const PROBING_ADDER: &str = r"

FOUND, FILES = probe(True)


def add(a, b):
    assert not FOUND, FOUND
    assert FILES > 1000, FILES
    return a + b
";

fn hex(s: &str) -> String {
    s.bytes().fold(String::new(), |mut out, b| {
        use std::fmt::Write;
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The probe, end to end in Docker: a command-harness build (a shell script standing in for an
/// agent CLI), an agent build's `run` tool (`python3 -m pytest -p probe`, an allowed command
/// loading the model's own module) and both gates (the implementation probes at import) look for
/// the task's hidden tests and reference, pipe's environment (a variable set in pipe's process
/// and not passed), a file and paths of the host, the project tree, the host's 127.0.0.1 listener
/// and the engine's socket. Each reports nothing found, and no secret reaches any file of the
/// round.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(pipe_has_docker),
    ignore = "needs a Docker engine with pipe's sandbox image: start dockerd, run `pipe sandbox bootstrap`, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
async fn model_code_in_docker_finds_nothing_it_must_not_see() {
    let s = sandbox("probe-2026-01-02").await;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("probe");
    let secrets = Secrets::new();

    // The task: the command-harness fixture's, with secrets in its hidden tests and reference,
    // visible tests and an `[agent]` table.
    let (hidden_test, reference_file) = probing_task(repo, &root.join("task"), &secrets);
    let host_file = tmp.path().join("host-secret.txt");
    std::fs::write(&host_file, &secrets.host).unwrap();

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let host_paths = [
        host_file,
        hidden_test,
        reference_file,
        root.join("pipeline.toml"),
        repo.join("Cargo.toml"),
        repo.join("src"),
    ];
    let probe = probe_source(&secrets, &host_paths, port);
    let adder = format!("{probe}{PROBING_ADDER}");
    let plugin = format!("{probe}\nreport(\"run-tool\")\n");
    probing_agent(repo, &root, &probe, &adder);
    probing_recording(&root, &plugin, &adder);
    probing_pipeline(repo, &root);

    let o = common::pipe()
        .cwd(&root)
        .env("PROBE_SENTINEL", &secrets.env)
        .args(["run", "pipeline.toml", "--json", "--sandbox", "docker"])
        .run();
    let stderr = &o.stderr;
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    every_probe_found_nothing(&root.join("out/probe-2026-01-02/nodes"));
    for f in common::all_files(&root.join("out")) {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        for secret in secrets.all() {
            assert!(!text.contains(secret), "{} holds {secret}", f.display());
        }
    }
    drop(listener);
    assert_eq!(leftover(&s).await, 0);
}

/// What the probe must not find, unique to this run.
struct Secrets {
    hidden: String,
    reference: String,
    env: String,
    host: String,
}

impl Secrets {
    fn new() -> Self {
        let tag = format!("{}-{:x}", std::process::id(), now().to_bits());
        let secret = |what: &str| format!("PIPE-PROBE-{what}-{tag}");
        Self {
            hidden: secret("HIDDEN"),
            reference: secret("REFERENCE"),
            env: secret("ENV"),
            host: secret("HOST"),
        }
    }

    fn all(&self) -> [&str; 4] {
        [&self.hidden, &self.reference, &self.env, &self.host]
    }
}

/// The command-harness fixture's task at `task`, with secrets in its hidden tests and
/// reference, visible tests and an `[agent]` table; returns the hidden test and the reference.
fn probing_task(repo: &Path, task: &Path, secrets: &Secrets) -> (PathBuf, PathBuf) {
    common::copy_dir(&repo.join("tests/fixtures/agent/task"), task);
    // The probe checks the gate's network itself (this test reads a port the build would write).
    std::fs::remove_file(task.join("hidden/test_offline.py")).unwrap();
    let hidden_test = task.join("hidden/test_adder.py");
    let text = std::fs::read_to_string(&hidden_test).unwrap();
    std::fs::write(&hidden_test, format!("# {}\n{text}", secrets.hidden)).unwrap();
    let reference_file = task.join("reference/adder.py");
    let text = std::fs::read_to_string(&reference_file).unwrap();
    std::fs::write(&reference_file, format!("# {}\n{text}", secrets.reference)).unwrap();
    std::fs::create_dir_all(task.join("visible")).unwrap();
    std::fs::write(
        task.join("visible/test_visible.py"),
        "from adder import add\n\n\ndef test_visible():\n    assert add(1, 1) == 2\n",
    )
    .unwrap();
    let mut toml = std::fs::read_to_string(task.join("task.toml")).unwrap();
    toml.push_str(
        "\n[agent]\nvisible_tests = \"visible\"\n\
         verify = [\"python3\", \"-m\", \"pytest\", \"-q\", \"-p\", \"no:cacheprovider\", \"--junitxml=$PIPE_JUNIT\", \"visible\"]\n\
         allow = [[\"python3\", \"-m\", \"pytest\"]]\n",
    );
    std::fs::write(task.join("task.toml"), toml).unwrap();
    (hidden_test, reference_file)
}

/// [`PROBE`] looking for `secrets`, `host_paths` and the host's listener on `port`.
fn probe_source(secrets: &Secrets, host_paths: &[PathBuf], port: u16) -> String {
    let quoted = |p: &Path| format!("{:?}", p.display().to_string());
    PROBE
        .replace(
            "@SECRETS@",
            &format!(
                "\"the hidden tests\": \"{}\", \"the reference\": \"{}\", \"pipe's environment\": \"{}\", \"a host file\": \"{}\"",
                hex(&secrets.hidden),
                hex(&secrets.reference),
                hex(&secrets.env),
                hex(&secrets.host)
            ),
        )
        .replace(
            "@HOST_PATHS@",
            &host_paths
                .iter()
                .map(|p| quoted(p))
                .collect::<Vec<_>>()
                .join(", "),
        )
        .replace("@PORT@", &port.to_string())
}

/// The command harness's stand-in agent, in `root/tools`: it probes, then writes the probing
/// implementation `adder`.
fn probing_agent(repo: &Path, root: &Path, probe: &str, adder: &str) {
    let tools = root.join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    std::fs::write(
        tools.join("probe.py"),
        format!("{probe}\nreport(\"build\")\n"),
    )
    .unwrap();
    std::fs::write(tools.join("adder.py"), adder).unwrap();
    let agent = tools.join("probe-agent");
    std::fs::write(
        &agent,
        "#!/bin/sh\npython3 \"$PIPE_WORK/tools/probe.py\" > probe.txt 2>&1\ncp \"$PIPE_WORK/tools/adder.py\" adder.py\n",
    )
    .unwrap();
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::copy(
        repo.join("tests/fixtures/agent/build.md.j2"),
        root.join("build.md.j2"),
    )
    .unwrap();
}

/// The agent model's recorded turns: the probe as a module, run as a pytest plugin through the
/// allowed command, then the implementation and `done`.
fn probing_recording(root: &Path, plugin: &str, adder: &str) {
    let call = |id: &str, name: &str, args: Value| serde_json::json!({"id": id, "name": name, "arguments": args});
    let turn = |calls: Vec<Value>| serde_json::json!({"usage": {"input_tokens": 100, "output_tokens": 10}, "tool_calls": calls});
    let turns = serde_json::json!([
        turn(vec![call(
            "c1",
            "write_file",
            serde_json::json!({"path": "probe.py", "content": plugin})
        )]),
        turn(vec![call(
            "c2",
            "run",
            serde_json::json!({"command": ["python3", "-m", "pytest", "-s", "-q", "-p", "probe", "visible"]})
        )]),
        turn(vec![call(
            "c3",
            "write_file",
            serde_json::json!({"path": "adder.py", "content": adder})
        )]),
        turn(vec![call("c4", "done", serde_json::json!({}))]),
    ]);
    let exchange =
        serde_json::json!({"stage": "build", "model": "ag", "subject": "1", "turns": turns});
    let rec = root.join("rec/build/ag/1.yaml");
    std::fs::create_dir_all(rec.parent().unwrap()).unwrap();
    std::fs::write(&rec, serde_yaml::to_string(&exchange).unwrap()).unwrap();
}

/// The round: `cmd` builds with the command harness, `ag` with the agent harness, then gates.
fn probing_pipeline(repo: &Path, root: &Path) {
    std::fs::write(
        root.join("pipeline.toml"),
        format!(
            r#"[round]
name = "probe"
date = "2026-01-02"
task = "task"

[providers.api]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"

[providers.replay]
kind = "replay"
recordings = "rec"

[[models]]
id = "cmd"
provider = "api"
model = "example/cmd"

[[models]]
id = "ag"
provider = "replay"
model = "example/ag"
harness = "agent"

[stages.build]
kind = "build"
prompt = "build.md.j2"
harness = "command"

[stages.build.command]
run = "probe-agent"
network = false
tools = "tools"
timeout_secs = 120

[stages.build.agent]
prompt = "{agent_prompt}"
max_steps = 6

[stages.gate]
kind = "gate"
needs = ["build"]
"#,
            agent_prompt = repo.join("prompts/build-agent.md.j2").display()
        ),
    )
    .unwrap();
}

/// The build's probe, the run tool's and both gates' found nothing.
fn every_probe_found_nothing(nodes: &Path) {
    let node = |rel: &str| nodes.join(rel);
    let build = std::fs::read_to_string(node("build/cmd/1/files/probe.txt")).unwrap();
    assert!(build.starts_with("PROBE build clear ("), "{build}");
    let transcript = std::fs::read_to_string(node("build/ag/1/transcript.jsonl")).unwrap();
    let ran: Vec<Value> = transcript
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "tool" && e["name"] == "run")
        .collect();
    assert_eq!(ran.len(), 1, "{transcript}");
    let result = ran[0]["result"].as_str().unwrap();
    assert!(result.contains("PROBE run-tool clear ("), "{result}");
    for model in ["cmd", "ag"] {
        let gate: Value = read_json(&node(&format!("gate/{model}/1/gate.json")));
        assert_eq!(gate["sandbox"], "docker", "{gate}");
        assert_eq!(
            gate["passed"],
            true,
            "{model}: {gate}\n{}",
            std::fs::read_to_string(node(&format!("gate/{model}/1/output.txt")))
                .unwrap_or_default()
        );
        assert_eq!(gate["tests_total"], 3, "{gate}");
    }
}
