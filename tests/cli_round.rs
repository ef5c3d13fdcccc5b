//! The shipped agent-CLI round, `pipelines/atomic-write-cli-offline.toml`, run whole by the real
//! `pipe` binary: real qwen-code and opencode in the Docker sandbox, answered through the model
//! gateway from the hand-written sessions in `pipelines/recordings/atomic-write-cli`. Each CLI
//! runs its own tools (a probe, then writing the file), the gate tests what it wrote, usage is
//! the sessions' exactly, the CLIs reach nothing but the gateway, a re-run is cached, and a
//! second run comes out the same, byte for byte, but for the wall times.

mod common;
use common::{all_files, read_json};
use std::path::{Path, PathBuf};

use serde_json::Value;

const PIPELINE: &str = "pipelines/atomic-write-cli-offline.toml";
const ROUND: &str = "atomic-write-cli-offline-2026-05-08";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(out: &Path) -> Value {
    let ran = common::pipe()
        .cwd(repo())
        .args(["run", PIPELINE, "--json", "--no-store", "--out"])
        .arg(out)
        .run();
    assert_eq!(ran.code(), 0, "{} {}", ran.stdout, ran.stderr);
    ran.json()
}

/// A recorded session: the usage of its turns, summed, and the content its write tool wrote.
fn session(model: &str) -> (Value, String, usize) {
    let path = repo().join(format!(
        "pipelines/recordings/atomic-write-cli/build/{model}/1.yaml"
    ));
    let ex: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let turns = ex["turns"].as_sequence().unwrap();
    let mut sum = [0u64; 3];
    let mut content = String::new();
    for t in turns {
        for (i, k) in ["input_tokens", "output_tokens", "cache_read_tokens"]
            .iter()
            .enumerate()
        {
            sum[i] += t["usage"][*k].as_u64().unwrap_or(0);
        }
        for call in t["tool_calls"].as_sequence().into_iter().flatten() {
            if let Some(c) = call["arguments"]["content"].as_str() {
                content = c.to_string();
            }
        }
    }
    let usage = serde_json::json!({"input_tokens": sum[0], "output_tokens": sum[1], "cache_read_tokens": sum[2]});
    (usage, content, turns.len())
}

/// What a run leaves that must not vary: every node output but the records, with the wall
/// times of the dataset and the report taken out.
fn stable(round: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for file in all_files(round) {
        let rel = file.strip_prefix(round).unwrap().to_path_buf();
        let name = rel.file_name().unwrap().to_string_lossy().into_owned();
        let keep = rel.starts_with("nodes")
            && (rel.components().any(|c| c.as_os_str() == "files")
                || name == "judgment.json"
                || name == "answer.md"
                || name == "prompt.md");
        if keep || name == "dataset.json" {
            let text = std::fs::read_to_string(&file).unwrap();
            let text: Vec<&str> = text
                .lines()
                .filter(|l| {
                    !["wallSec", "wallClock", "wall_seconds", "generated_at"]
                        .iter()
                        .any(|k| l.contains(k))
                })
                .collect();
            out.push((rel, text.join("\n")));
        }
    }
    out
}

#[test]
#[cfg_attr(
    not(all(pipe_has_docker, pipe_has_npm)),
    ignore = "needs a Docker engine with pipe's sandbox image and `npm` on the host: start dockerd, run `pipe sandbox bootstrap`, apt-get install npm, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
fn real_agent_clis_build_through_the_gateway_offline() {
    // The round's images: built when missing, found present otherwise.
    let boot = common::pipe()
        .cwd(repo())
        .args(["sandbox", "bootstrap", "--pipeline", PIPELINE])
        .run();
    assert_eq!(boot.code(), 0, "{} {}", boot.stdout, boot.stderr);

    let dir = tempfile::tempdir().unwrap();
    let summary = run(&dir.path().join("a"));
    assert_eq!(summary["executed"], 10, "{summary}");
    let round = dir.path().join("a").join(ROUND);
    for (model, passed, cli) in [("alpha", 22, "qwen-build"), ("bravo", 19, "opencode-build")] {
        let node = round.join(format!("nodes/build/{model}/1"));
        let build = read_json(&node.join("build.json"));
        let (usage, content, turns) = session(model);
        assert_eq!(build["outcome"], "completed", "{build}");
        assert_eq!(build["sandbox"], "docker", "{build}");
        assert_eq!(build["usage_source"], "gateway", "{build}");
        assert_eq!(
            build["usage"], usage,
            "{model}: the gateway's count is the session's"
        );
        assert_eq!(build["gateway"]["requests"], turns, "{build}");
        assert_eq!(build["gateway"]["refused"], 0, "{build}");
        // What the CLI's own tool wrote is what the session told it to.
        assert_eq!(
            std::fs::read_to_string(node.join("files/atomic_write.py")).unwrap(),
            content,
            "{model}"
        );
        let gate = read_json(&round.join(format!("nodes/gate/{model}/1/gate.json")));
        assert_eq!(gate["tests_passed"], passed, "{gate}");
        assert_eq!(gate["tests_total"], 22, "{gate}");
        // The probe the CLI ran: its own loopback refuses, the host is not even routed.
        let output = std::fs::read_to_string(node.join("agent-output.txt")).unwrap();
        assert!(
            output.starts_with(&format!("$ {cli}\n=== exit 0 (docker) ===")),
            "{output}"
        );
        assert!(
            output.contains("probe: 127.0.0.1 unreachable: [Errno 111] Connection refused"),
            "{output}"
        );
        assert!(
            output.contains("probe: 172.17.0.1 unreachable: [Errno 101] Network is unreachable"),
            "{output}"
        );
        for host in ["127.0.0.1", "172.17.0.1"] {
            assert!(
                !output.contains(&format!("probe: {host} reached")),
                "{output}"
            );
        }
    }
    // alpha at $0.50/$2.00 per M and $0.10 for cache reads.
    let alpha = read_json(&round.join("nodes/build/alpha/1/build.json"));
    let (u, ..) = session("alpha");
    let (i, o, c) = (
        u["input_tokens"].as_f64().unwrap(),
        u["output_tokens"].as_f64().unwrap(),
        u["cache_read_tokens"].as_f64().unwrap(),
    );
    let cost = ((i - c) * 0.5 + c * 0.1 + o * 2.0) / 1e6;
    assert!(
        (alpha["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-12,
        "{alpha}"
    );

    // A re-run has nothing to do.
    let again = run(&dir.path().join("a"));
    assert_eq!(again["cached"], 10, "{again}");
    // A second round from scratch comes out the same.
    run(&dir.path().join("b"));
    let (a, b) = (stable(&round), stable(&dir.path().join("b").join(ROUND)));
    assert!(a.iter().any(|(p, _)| p.ends_with("files/atomic_write.py")));
    let names = |v: &[(PathBuf, String)]| v.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b));
    for ((path, x), (_, y)) in a.iter().zip(&b) {
        let differ: Vec<(&str, &str)> = x.lines().zip(y.lines()).filter(|(l, r)| l != r).collect();
        assert!(x == y, "{}: {differ:#?}", path.display());
    }
}
