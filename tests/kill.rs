//! SIGKILL at random moments, over and over, while a round runs: every kill must leave the
//! store consistent, no node recorded as done may run again, and the round finished in pieces
//! must publish exactly what an uninterrupted run publishes.

mod common;
use common::{Pipe, all_files, copy_dir};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SAMPLES: u32 = 4;
/// 8 builds, 8 gates, 8 commands, 16 judgments, the aggregate and the publish.
const NODES: usize = 42;

/// The mini round with four samples per model and a slow command stage: 42 nodes.
fn slow_round(dir: &Path) -> PathBuf {
    let root = dir.join("mini");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mini"),
        &root,
    );
    let pipeline = root.join("pipeline.toml");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    let text = text
        .replace(
            "task = \"task\"",
            &format!("task = \"task\"\nsamples = {SAMPLES}"),
        )
        .replace(
            "command = \"env; sleep ${PIPE_TEST_SLEEP:-0}\"",
            "command = \"sleep 0.6\"",
        );
    std::fs::write(&pipeline, text).unwrap();
    let rec = root.join("recordings");
    for model in ["ann", "bob"] {
        let one = std::fs::read_to_string(rec.join(format!("build/{model}/1.yaml"))).unwrap();
        for s in 2..=SAMPLES {
            std::fs::write(
                rec.join(format!("build/{model}/{s}.yaml")),
                one.replace("subject: \"1\"", &format!("subject: \"{s}\"")),
            )
            .unwrap();
        }
        for judge in ["ann", "bob"] {
            let one =
                std::fs::read_to_string(rec.join(format!("judge/{judge}/{model}-1.yaml"))).unwrap();
            for s in 2..=SAMPLES {
                std::fs::write(
                    rec.join(format!("judge/{judge}/{model}-{s}.yaml")),
                    one.replace("-1\"", &format!("-{s}\"")),
                )
                .unwrap();
            }
        }
    }
    root
}

/// `pipe run pipeline.toml --jobs 1` in `root`.
fn pipe(root: &Path) -> Pipe {
    common::pipe()
        .cwd(root)
        .args(["run", "pipeline.toml", "--jobs", "1"])
}

/// Records of nodes that are done: id -> (finished_at, key).
fn done(round: &Path) -> BTreeMap<String, (String, String)> {
    all_files(round)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "node.json"))
        .filter_map(|p| {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
            (v["status"] == "done").then(|| {
                (
                    v["id"].as_str().unwrap().to_string(),
                    (
                        v["finished_at"].as_str().unwrap().to_string(),
                        v["key"].as_str().unwrap().to_string(),
                    ),
                )
            })
        })
        .collect()
}

#[test]
fn twenty_kills_lose_nothing_and_redo_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let reference_root = slow_round(&tmp.path().join("reference"));
    assert!(pipe(&reference_root).run().status.success());
    let killed_root = slow_round(&tmp.path().join("killed"));
    let round = killed_root.join("out/mini-2026-01-02");

    // A small deterministic generator for the kill moments (50..400 ms).
    let mut seed: u64 = 0x5eed_1234;
    let mut next = || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        50 + (seed >> 33) % 350
    };
    let mut kills = 0;
    let mut finished_early = 0;
    let start = Instant::now();
    while kills < 20 {
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "the round never got slow enough to kill"
        );
        let before = done(&round);
        let mut child = pipe(&killed_root).spawn();
        std::thread::sleep(Duration::from_millis(next()));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        } else {
            finished_early += 1;
        }
        child.wait().unwrap();
        let after = done(&round);
        for (id, rec) in &before {
            assert_eq!(
                after.get(id),
                Some(rec),
                "{id}: a node recorded as done ran again (kill {kills})"
            );
        }
        if after.len() == NODES {
            break;
        }
    }
    // Finish the round.
    let before = done(&round);
    assert!(pipe(&killed_root).run().status.success());
    let after = done(&round);
    assert_eq!(after.len(), NODES);
    for (id, rec) in &before {
        assert_eq!(
            after.get(id),
            Some(rec),
            "{id} ran again on the final resume"
        );
    }
    assert!(
        kills >= 20 || after.len() == NODES,
        "kills {kills}, finished early {finished_early}"
    );
    assert!(
        kills >= 20,
        "only {kills} kills landed mid-run ({finished_early} runs finished first)"
    );
    // Outputs equal those of the uninterrupted run.
    let reference = reference_root.join("out/mini-2026-01-02");
    for file in [
        "report.md",
        "nodes/aggregate/aggregate.json",
        "nodes/aggregate/round-data.json",
    ] {
        assert_eq!(
            std::fs::read_to_string(round.join(file)).unwrap(),
            std::fs::read_to_string(reference.join(file)).unwrap(),
            "{file} differs from the uninterrupted run"
        );
    }
    // No temp file left behind.
    let temps: Vec<_> = all_files(&round)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".pipe-tmp."))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
    eprintln!("kills: {kills}, runs that finished before their kill: {finished_early}");
}
