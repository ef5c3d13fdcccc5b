//! Spending caps seen from a whole round: the real `pipe` binary runs the mini fixture (replayed
//! answers with prices) under a `max_cost_usd`. Once the cap is spent no new model call starts:
//! the nodes left are `skipped (budget)`, the report says so, and raising the cap resumes exactly
//! those nodes and what follows them.
//!
//! The fixture's costs at its prices (USD per million tokens: input 1, output 2): each build
//! $0.0002, each judgment $0.00036. With one job at a time the order is fixed: two builds, then
//! the judgments.

mod common;
use common::{copy_dir, ids_with, read_json};
use std::path::{Path, PathBuf};

use serde_json::Value;

fn round() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mini");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mini"),
        &root,
    );
    (dir, root)
}

fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} lacks {from:?}", file.display());
    std::fs::write(file, text.replacen(from, to, 1)).unwrap();
}

fn run(root: &Path) -> (i32, Value, String) {
    let out = common::pipe()
        .cwd(root)
        .args(["run", "pipeline.toml", "--json", "--jobs", "1"])
        .run();
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout {} stderr {}", out.stdout, out.stderr));
    (out.code(), v, out.stderr)
}

fn reason(summary: &Value, id: &str) -> String {
    summary["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .and_then(|n| n["reason"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
#[cfg_attr(
    not(pipe_has_bwrap),
    ignore = "needs bubblewrap that can make namespaces (the gate's local sandbox): apt install bubblewrap"
)]
fn the_round_cap_skips_what_it_cannot_pay_for_and_raising_it_resumes() {
    let (_dir, root) = round();
    let pipeline = root.join("pipeline.toml");
    // Both builds ($0.0004) and one judgment fit under $0.0005; the judgment takes the round
    // past the cap, so the other three never start.
    edit(
        &pipeline,
        "task = \"task\"",
        "task = \"task\"\nmax_cost_usd = 0.0005",
    );
    let (code, summary, stderr) = run(&root);
    assert_eq!(code, 1, "{stderr}");
    let skipped = ids_with(&summary, "skipped");
    let budget: Vec<&String> = skipped
        .iter()
        .filter(|id| {
            reason(&summary, id)
                .starts_with("skipped (budget): the round's max_cost_usd ($0.0005) is reached")
        })
        .collect();
    assert_eq!(budget.len(), 3, "{summary}");
    assert!(
        budget.iter().all(|id| id.starts_with("judge:")),
        "{budget:?}"
    );
    let executed = ids_with(&summary, "executed");
    for id in ["build:ann#1", "build:bob#1", "aggregate", "publish"] {
        assert!(executed.iter().any(|e| e == id), "{id} ran: {summary}");
    }

    let round = root.join("out/mini-2026-01-02");
    let report = std::fs::read_to_string(round.join("report.md")).unwrap();
    assert!(report.contains("## Skipped (budget)"), "{report}");
    assert!(
        report.contains("kept 3 node(s) from calling their model"),
        "{report}"
    );
    assert!(!report.contains("## Infrastructure problems"), "{report}");
    assert!(!report.contains("infrastructure: "), "{report}");
    let html = std::fs::read_to_string(round.join("report.html")).unwrap();
    assert!(html.contains("<h2>Skipped (budget)</h2>"), "{html}");
    let data = read_json(&round.join("nodes/aggregate/round-data.json"));
    let problems: Vec<&Value> = data["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "budget")
        .collect();
    assert_eq!(problems.len(), 3, "{data}");

    // The same cap again: what the kept results cost counts, so no model call starts (only the
    // aggregate and publish, which follow the skipped judgments, run again or are restored
    // from the result store); the summary for people says what to do.
    let out = common::pipe()
        .cwd(&root)
        .args(["run", "pipeline.toml", "--jobs", "1"])
        .run();
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr.contains(" 7 cached, ") && out.stderr.contains(" 0 failed, 3 skipped"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("3 node(s) skipped by a spending cap: raise max_cost_usd"),
        "{}",
        out.stderr
    );

    // A higher cap resumes the three judgments and what follows them; nothing else runs.
    edit(&pipeline, "max_cost_usd = 0.0005", "max_cost_usd = 1.0");
    let (code, summary, stderr) = run(&root);
    assert_eq!(code, 0, "{stderr}");
    let mut resumed: Vec<String> = budget.iter().map(|s| (*s).clone()).collect();
    resumed.extend(["aggregate".to_string(), "publish".to_string()]);
    resumed.sort();
    assert_eq!(ids_with(&summary, "executed"), resumed, "{summary}");
    let report = std::fs::read_to_string(round.join("report.md")).unwrap();
    assert!(!report.contains("Skipped (budget)"), "{report}");
}

#[test]
#[cfg_attr(
    not(pipe_has_bwrap),
    ignore = "needs bubblewrap that can make namespaces (the gate's local sandbox): apt install bubblewrap"
)]
fn a_model_cap_stops_that_model_only() {
    let (_dir, root) = round();
    let pipeline = root.join("pipeline.toml");
    // bob's build ($0.0002) spends his $0.0001 at once: his judgments never start; ann's do.
    edit(
        &pipeline,
        "model = \"example/bob\"",
        "model = \"example/bob\"\nmax_cost_usd = 0.0001",
    );
    let (code, summary, stderr) = run(&root);
    assert_eq!(code, 1, "{stderr}");
    let skipped = ids_with(&summary, "skipped");
    assert_eq!(
        skipped,
        ["judge:bob->ann#1", "judge:bob->bob#1"],
        "{summary}"
    );
    for id in &skipped {
        assert!(
            reason(&summary, id).contains("model `bob`'s max_cost_usd ($0.0001) is reached"),
            "{summary}"
        );
    }
    let executed = ids_with(&summary, "executed");
    assert!(
        executed.contains(&"judge:ann->bob#1".to_string()),
        "{summary}"
    );
}
