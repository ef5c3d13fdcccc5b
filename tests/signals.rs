//! SIGTERM and SIGHUP stop a run as Ctrl-C does, with the real binary: the running gate's
//! processes are killed (none is left once pipe has exited), finished nodes are saved and the
//! cancelled ones are not recorded, the exit code is 128 + the signal (143, 129), and the next
//! run finishes the round. `pipe check-task` likewise. Each test's gate runs a `sleep` of its own
//! duration, so it is found in /proc among everything else the machine runs.

mod common;
use common::{Pipe, copy_dir};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SIGHUP: i32 = 1;
const SIGTERM: i32 = 15;

/// The mini round whose hidden tests first run `sleep <marker>`.
fn sleeping_round(dir: &Path, marker: &str) -> PathBuf {
    let root = dir.join("mini");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mini"),
        &root,
    );
    let test = root.join("task/hidden/test_adder.py");
    let text = std::fs::read_to_string(&test).unwrap();
    std::fs::write(
        &test,
        format!("import subprocess\nsubprocess.run([\"sleep\", \"{marker}\"], check=True)\n{text}"),
    )
    .unwrap();
    root
}

/// The hidden tests without their `sleep`.
fn wake(root: &Path) {
    let test = root.join("task/hidden/test_adder.py");
    let text = std::fs::read_to_string(&test).unwrap();
    let (_, rest) = text.split_once("check=True)\n").unwrap();
    std::fs::write(&test, rest).unwrap();
}

fn pipe(root: &Path, args: &[&str]) -> Pipe {
    common::pipe().cwd(root).args(args)
}

/// Pids of the processes running `sleep <marker>`.
fn sleeping(marker: &str) -> Vec<u32> {
    let want = format!("sleep\0{marker}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.ends_with(want.as_bytes()) && c.starts_with(b"sleep\0"))
        })
        .collect()
}

/// Waits until the gate's `sleep` runs.
fn wait_for_sleep(child: &mut Child, marker: &str) {
    let t = Instant::now();
    while sleeping(marker).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "pipe ended before its gate ran"
        );
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the gate never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal`; returns pipe's exit code and stderr, and how long it took to stop.
fn stop(mut child: Child, signal: i32) -> (Option<i32>, String, Duration) {
    // SAFETY: kill(2) on the child we spawned and have not waited for.
    assert_eq!(unsafe { libc_kill(child.id() as i32, signal) }, 0);
    let t = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "pipe did not stop on signal {signal}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = t.elapsed();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        took,
    )
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// `pipe status --json`: node id -> state.
fn states(root: &Path) -> Vec<(String, String)> {
    let o = pipe(root, &["status", "pipeline.toml", "--json"]).run();
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_string(),
                n["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A round stopped by `signal` while its gates sleep in the sandbox `sandbox`.
fn stop_mid_gate(signal: i32, name: &str, code: i32, marker: &str, sandbox: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let root = sleeping_round(tmp.path(), marker);
    let mut child = pipe(&root, &["run", "pipeline.toml", "--sandbox", sandbox])
        .spawn_with(Stdio::null(), Stdio::piped());
    wait_for_sleep(&mut child, marker);
    let (exit, stderr, took) = stop(child, signal);
    assert_eq!(exit, Some(code), "{stderr}");
    assert!(
        took < Duration::from_secs(8),
        "the gate was stopped, not waited for ({took:?})"
    );
    assert!(
        stderr.contains(&format!("stopped by {name}: finished nodes are saved")),
        "{stderr}"
    );
    assert_eq!(
        sleeping(marker),
        Vec::<u32>::new(),
        "a sandbox process is left"
    );

    // The builds are saved; the stopped gates and what follows them are not recorded at all.
    let states = states(&root);
    for (id, state) in &states {
        let want = if id.starts_with("build:") {
            "done"
        } else if id.starts_with("gate:") || id.starts_with("judge:") || !id.contains(':') {
            "pending"
        } else {
            continue;
        };
        assert_eq!(state, want, "{id}: {states:?}");
    }

    // The next run finishes the round, running only what was not done (the hidden tests no
    // longer sleep: that changes the gates' keys, not the builds').
    wake(&root);
    let o = pipe(
        &root,
        &["run", "pipeline.toml", "--json", "--sandbox", sandbox],
    )
    .run();
    assert_eq!(o.status.code(), Some(0), "{}", o.stderr);
    let summary: Value = serde_json::from_str(&o.stdout).unwrap();
    let executed = common::ids_with(&summary, "executed");
    assert!(
        executed.iter().all(|id| !id.starts_with("build:")),
        "{summary}"
    );
    assert!(executed.contains(&"gate:ann#1".to_string()), "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
}

#[test]
fn sigterm_stops_a_round_mid_gate_with_143_and_the_next_run_finishes_it() {
    stop_mid_gate(SIGTERM, "SIGTERM", 143, "41.0713", "local");
}

#[test]
fn sighup_stops_a_round_mid_gate_with_129_and_the_next_run_finishes_it() {
    stop_mid_gate(SIGHUP, "SIGHUP", 129, "41.0719", "local");
}

/// In Docker the stopped gate's container is removed by the run that stops, not left for the
/// next run's sweep.
#[test]
#[cfg_attr(
    not(pipe_has_docker),
    ignore = "needs a Docker engine with pipe's sandbox image: start dockerd, run `pipe sandbox bootstrap`, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
fn sigterm_in_docker_removes_the_running_container() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let d = rt.block_on(common::needs::docker());
    let tmp = tempfile::tempdir().unwrap();
    let root = sleeping_round(tmp.path(), "41.0727");
    let mut child = pipe(&root, &["run", "pipeline.toml", "--sandbox", "docker"])
        .spawn_with(Stdio::null(), Stdio::piped());
    wait_for_sleep(&mut child, "41.0727");
    let (exit, stderr, _) = stop(child, SIGTERM);
    assert_eq!(exit, Some(143), "{stderr}");
    assert_eq!(sleeping("41.0727"), Vec::<u32>::new(), "{stderr}");
    let left = rt.block_on(async {
        pipe::sandbox::docker::list(&d, Some("mini-2026-01-02"))
            .await
            .unwrap()
    });
    assert_eq!(
        left,
        Vec::<String>::new(),
        "containers of the round are left"
    );
}

#[test]
fn check_task_stops_on_sigterm_with_143() {
    let tmp = tempfile::tempdir().unwrap();
    let root = sleeping_round(tmp.path(), "41.0733");
    let mut child = pipe(&root, &["check-task", "task", "--sandbox", "local"])
        .spawn_with(Stdio::null(), Stdio::piped());
    wait_for_sleep(&mut child, "41.0733");
    let (exit, stderr, took) = stop(child, SIGTERM);
    assert_eq!(exit, Some(143), "{stderr}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(stderr.contains("stopped by SIGTERM"), "{stderr}");
    assert_eq!(
        sleeping("41.0733"),
        Vec::<u32>::new(),
        "a sandbox process is left"
    );
}
