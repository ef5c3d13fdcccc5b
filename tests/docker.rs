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
async fn what_the_job_leaves_running_is_killed_and_cannot_fake_the_results() {
    let Some(s) = sandbox("test-leftovers").await else {
        return;
    };
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
async fn a_job_killed_by_a_signal_reports_it() {
    let Some(s) = sandbox("test-signal").await else {
        return;
    };
    let r = run(&s, &job("echo before; kill -TERM $$")).await;
    assert_eq!(r.signal, Some(15), "{r:?}");
    assert_eq!(r.exit_code, None, "{r:?}");
    assert_eq!(r.stdout, "before\n");
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

/// An image whose `/work` belongs to root (not one `pipe sandbox bootstrap` made): the prologue
/// cannot unpack there, so the inputs go in through the archive API and the job still runs.
#[tokio::test]
async fn an_image_whose_work_is_not_writable_gets_its_inputs_through_the_archive_api() {
    let Some(mut s) = sandbox("test-root-work").await else {
        return;
    };
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
    let r = s.run(&j, &CancellationToken::new()).await;
    docker(&["rmi", &image]);
    let r = r.unwrap();
    assert_eq!(r.stdout, "65534\n", "{r:?}");
    assert_eq!(
        r.files.get("out/copy.txt").map(Vec::as_slice),
        Some(&b"hello"[..])
    );
    assert_eq!(leftover(&s).await, 0);
}

/// A collected directory comes back with its limits: links refused, skipped directories left
/// out, and an overflow named when there are more files or bytes than allowed.
#[tokio::test]
async fn a_collected_directory_keeps_its_caps_and_confinement() {
    let Some(s) = sandbox("test-tree").await else {
        return;
    };
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
