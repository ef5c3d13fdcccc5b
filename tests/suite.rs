//! A round of several tasks (tests/fixtures/suite: three small tasks named by a glob, two replayed
//! models, three samples each, peer-judged) run end to end by the real `pipe` binary: nodes expand
//! per (task, model, sample), every gate runs its own task's hidden tests, every judge sees its
//! own task, and the aggregate gives per-task results, pass rates, the unbiased pass@k and peer
//! scores.

mod common;
use common::{copy_dir, read_json};
use std::path::Path;

use serde_json::Value;

fn pipe(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = common::pipe().cwd(dir).args(args).run();
    (out.code(), out.stdout, out.stderr)
}

fn close(v: &Value, want: f64) -> bool {
    v.as_f64().is_some_and(|x| (x - want).abs() < 1e-9)
}

#[test]
fn a_suite_expands_per_task_and_reports_pass_at_k() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("suite");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/suite"),
        &root,
    );

    let (code, graph, err) = pipe(&root, &["graph", "pipeline.toml", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let graph: Value = serde_json::from_str(&graph).unwrap();
    let ids: Vec<&str> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    // 3 tasks x 2 models x 3 samples builds and gates, 2 judges for each, then the aggregate and
    // publish.
    assert_eq!(ids.len(), 3 * 2 * 3 * 4 + 2, "{ids:?}");
    assert!(ids.contains(&"build:clamp/bob#2"), "{ids:?}");
    assert!(ids.contains(&"judge:ann->clamp/bob#2"), "{ids:?}");
    assert!(ids.contains(&"gate:reverse/ann#3"), "{ids:?}");
    // Natural order of the glob's matches, task by task.
    assert_eq!(ids[0], "build:add/ann#1");

    let (code, out, err) = pipe(&root, &["run", "pipeline.toml", "--json"]);
    assert_eq!(code, 0, "{err}");
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["executed"], 74, "{summary}");
    let round = root.join("out/suite-2026-01-03");
    // Each gate ran its own task's tests: clamp has three, the others two.
    let gate = read_json(&round.join("nodes/gate/clamp/ann/1/gate.json"));
    assert_eq!(gate["tests_total"], 3, "{gate}");
    let gate = read_json(&round.join("nodes/gate/add/bob/3/gate.json"));
    assert_eq!(gate["tests_total"], 2, "{gate}");
    assert_eq!(gate["passed"], true, "{gate}");

    let agg = read_json(&round.join("aggregate.json"));
    let suite = &agg["suite"];
    assert_eq!(
        suite["tasks"],
        serde_json::json!(["add", "clamp", "reverse"])
    );
    assert_eq!(suite["ks"], serde_json::json!([1, 3]));
    // The recordings: ann passes add 3/3, clamp 0/3, reverse 2/3; bob add 1/3, clamp 1/3,
    // reverse 3/3.
    let rows: Vec<(String, Vec<u64>)> = suite["per_task"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["task"].as_str().unwrap().to_string(),
                r["passed"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_u64().unwrap())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("add".to_string(), vec![3, 1]),
            ("clamp".to_string(), vec![0, 1]),
            ("reverse".to_string(), vec![2, 3]),
        ]
    );
    // Equal pass rates (5 of 9); bob solves every task at k = 3, ann two of three.
    let models = suite["models"].as_array().unwrap();
    assert_eq!(models[0]["model"], "bob");
    assert_eq!(models[1]["model"], "ann");
    for m in models {
        assert_eq!(m["passed"], 5);
        assert_eq!(m["implementations"], 9);
        assert!(close(&m["pass_at"]["1"], 5.0 / 9.0), "{m}");
    }
    assert!(close(&models[0]["pass_at"]["3"], 1.0), "{}", models[0]);
    assert!(
        close(&models[1]["pass_at"]["3"], 2.0 / 3.0),
        "{}",
        models[1]
    );
    assert_eq!(models[1]["tasks_solved"], 2);
    // Peer scores: bob gives ann's correct implementations 9 + 16, ann gives bob's 8 + 14, both
    // give a wrong one 3 + 8; self-judgments are left out.
    assert!(
        close(&models[1]["peer_score"], (5.0 * 25.0 + 4.0 * 11.0) / 9.0),
        "{}",
        models[1]
    );
    assert!(
        close(&models[0]["peer_score"], (5.0 * 22.0 + 4.0 * 11.0) / 9.0),
        "{}",
        models[0]
    );
    // Each judge saw its own task's implementation, under a label of that task.
    let j = read_json(&round.join("nodes/judge/ann/clamp/bob-2/judgment.json"));
    assert!(close(&j["scores"]["spec"], 8.0), "{j}");
    let other = read_json(&round.join("nodes/judge/ann/add/bob-2/judgment.json"));
    assert_ne!(
        j["label"], other["label"],
        "labels must differ across tasks"
    );

    let report = std::fs::read_to_string(round.join("report.md")).unwrap();
    insta::assert_snapshot!("suite_report", report);

    // Re-run: everything cached.
    let (code, out, err) = pipe(&root, &["run", "pipeline.toml", "--json"]);
    assert_eq!(code, 0, "{err}");
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["cached"], 74, "{summary}");

    // Recomputed from round-data.json: the same suite section; the one-task formats refused.
    let dir = round.to_string_lossy().into_owned();
    let (code, out, err) = pipe(&root, &["aggregate", &dir, "--json"]);
    assert_eq!(code, 0, "{err}");
    let again: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["suite"], agg["suite"]);
    let (code, _, err) = pipe(&root, &["publish", &dir, "--format", "html"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is a suite of several tasks"), "{err}");
}

/// The shipped HumanEval suite (four imported problems, two replayed models, three samples):
/// the numbers its recordings' README promises.
#[test]
fn the_shipped_humaneval_suite_gives_its_pass_at_k() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let out_arg = out.path().to_string_lossy().into_owned();
    let (code, stdout, err) = pipe(
        repo,
        &[
            "run",
            "pipelines/humaneval-mini-offline.toml",
            "--json",
            "--sandbox",
            "local",
            "--out",
            &out_arg,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["executed"], 4 * 2 * 3 * 2 + 2, "{summary}");
    let agg = read_json(
        &out.path()
            .join("humaneval-mini-offline-2026-11-23/aggregate.json"),
    );
    let models = agg["suite"]["models"].as_array().unwrap();
    let by = |id: &str| models.iter().find(|m| m["model"] == id).unwrap().clone();
    let (alpha, bravo) = (by("alpha"), by("bravo"));
    assert_eq!(alpha["passed"], 11);
    assert!(close(&alpha["pass_at"]["1"], 11.0 / 12.0), "{alpha}");
    assert!(close(&alpha["pass_at"]["3"], 1.0), "{alpha}");
    assert_eq!(bravo["passed"], 6);
    assert!(close(&bravo["pass_at"]["1"], 0.5), "{bravo}");
    assert!(close(&bravo["pass_at"]["3"], 0.75), "{bravo}");
    assert_eq!(bravo["tasks_solved"], 3);
}
