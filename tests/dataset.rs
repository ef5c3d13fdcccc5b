//! The openbenchmark dataset and Multivac imports, end to end through the real `pipe` binary: the
//! fixtures' derived tables were computed BY HAND from their raw parts (samples, perImplDetail,
//! judgments); pipe recomputes them from the imported round data and must agree exactly.

mod common;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Runs pipe in `cwd`; returns (exit code, stdout, stderr).
fn pipe(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let out = common::pipe().cwd(cwd).args(args).run();
    (out.code(), out.stdout, out.stderr)
}

fn ok(cwd: &Path, args: &[&str]) -> String {
    let (code, stdout, stderr) = pipe(cwd, args);
    assert_eq!(code, 0, "pipe {args:?} failed: {stderr}");
    stdout
}

/// Sorted by `impl` (tables whose order is not part of the comparison).
fn by_impl(v: &Value) -> Vec<Value> {
    let mut rows = v.as_array().unwrap().clone();
    rows.sort_by(|a, b| a["impl"].as_str().cmp(&b["impl"].as_str()));
    rows
}

const TABLES: [&str; 6] = [
    "scoreboard",
    "selfBias",
    "agreement",
    "judgeRanking",
    "costEfficiency",
    "judgingCost",
];

fn import_openbenchmark(tmp: &Path) -> PathBuf {
    let out = tmp.join("out");
    let stdout = ok(
        tmp,
        &[
            "import",
            "openbenchmark",
            fixture("openbenchmark-dataset.json").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    out
}

#[test]
fn imported_rounds_recompute_the_hand_computed_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let out = import_openbenchmark(tmp.path());
    let expected = read(&fixture("openbenchmark-dataset.json"));
    for round in expected["rounds"].as_array().unwrap() {
        let name = format!(
            "{}-{}",
            round["task"].as_str().unwrap(),
            round["date"].as_str().unwrap()
        );
        let dir = out.join(&name);
        for f in ["round-data.json", "aggregate.json", "report.md"] {
            assert!(dir.join(f).is_file(), "{name}/{f} missing");
        }
        let data = read(&dir.join("round-data.json"));
        assert_eq!(data["source"], "openbenchmark-dataset.json");
        assert_eq!(data["rubric"]["name"], "code-review");
        let got: Value = serde_json::from_str(&ok(
            tmp.path(),
            &["aggregate", dir.to_str().unwrap(), "--json"],
        ))
        .unwrap();
        assert_eq!(got["date"], round["date"]);
        assert_eq!(got["task"], round["task"]);
        for table in TABLES {
            assert_eq!(
                got[table], round[table],
                "{name}: {table} differs\n got: {}\nwant: {}",
                got[table], round[table]
            );
        }
        assert_eq!(
            by_impl(&got["perImplDetail"]),
            by_impl(&round["perImplDetail"]),
            "{name}: perImplDetail differs"
        );
        assert!(
            got.get("rankings").is_none(),
            "median rounds have no rankings"
        );
    }
}

#[test]
fn dropouts_and_tiers_survive_the_import() {
    let tmp = tempfile::tempdir().unwrap();
    let out = import_openbenchmark(tmp.path());
    let data = read(&out.join("kv-store-2026-05-05/round-data.json"));
    let judgments = data["judgments"].as_array().unwrap();
    let find = |judge: &str, model: &str| {
        judgments
            .iter()
            .find(|j| j["judge"] == judge && j["model"] == model)
            .unwrap_or_else(|| panic!("no judgment {judge} -> {model}"))
    };
    let dropout = find("gamma", "beta");
    assert!(dropout["dropout"].is_string());
    assert_eq!(dropout["scores"]["spec"], Value::Null);
    assert_eq!(dropout["hard_fail_pass"], Value::Null);
    assert_eq!(find("erin", "alpha")["tier"], "expert");
    assert_eq!(find("alpha", "alpha")["tier"], "self");
    assert!(judgments.iter().all(|j| j["measured"] == false));
    // alpha's representative sample is its third (the run path ends in -r3).
    let alpha = data["builds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["model"] == "alpha" && b["sample"] == data["representative_sample"])
        .unwrap();
    assert_eq!(alpha["loc"], 115);
    let atomic = read(&out.join("atomic-write-2026-05-12/round-data.json"));
    assert!(
        atomic["judgments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["measured"] == true)
    );
}

#[test]
fn publish_all_merges_the_rounds_into_one_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let out = import_openbenchmark(tmp.path());
    // A run-style round directory (round data under nodes/aggregate/) is found too: move one.
    let run_dir = out.join("atomic-write-2026-05-12");
    let node = run_dir.join("nodes/aggregate");
    std::fs::create_dir_all(&node).unwrap();
    std::fs::rename(
        run_dir.join("round-data.json"),
        node.join("round-data.json"),
    )
    .unwrap();
    let stdout = ok(tmp.path(), &["publish", "--all", out.to_str().unwrap()]);
    assert!(stdout.contains("2 rounds, 5 rows"), "{stdout}");
    let got = read(&out.join("dataset.json"));
    let expected = read(&fixture("openbenchmark-dataset.json"));
    assert_eq!(got["meta"]["schema_version"], 1);
    assert_eq!(got["meta"]["license"], "MIT");
    assert_eq!(got["meta"]["source"], "pipe");
    assert_eq!(got["meta"]["rounds"], 2);
    assert_eq!(got["meta"]["rows"], 5);
    let at = got["meta"]["generated_at"].as_str().unwrap();
    assert!(at.ends_with('Z') && at.len() == 24, "{at}");
    assert_eq!(got["flat"], expected["flat"], "flat rows differ");
    for (g, e) in got["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .zip(expected["rounds"].as_array().unwrap())
    {
        assert_eq!(g["date"], e["date"]);
        for table in TABLES {
            assert_eq!(g[table], e[table], "{table} differs");
        }
    }
    // The merged dataset can itself be imported again.
    let again = tmp.path().join("again");
    ok(
        tmp.path(),
        &[
            "import",
            "openbenchmark",
            out.join("dataset.json").to_str().unwrap(),
            "--out",
            again.to_str().unwrap(),
        ],
    );
    ok(tmp.path(), &["publish", "--all", again.to_str().unwrap()]);
    assert_eq!(read(&again.join("dataset.json"))["flat"], expected["flat"]);
}

#[test]
fn publish_one_round_as_markdown_and_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let out = import_openbenchmark(tmp.path());
    let dir = out.join("kv-store-2026-05-05");
    std::fs::remove_file(dir.join("report.md")).unwrap();
    ok(
        tmp.path(),
        &["publish", dir.to_str().unwrap(), "--format", "markdown"],
    );
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        report.contains("**alpha** takes the round with 25.0/30"),
        "{report}"
    );
    ok(
        tmp.path(),
        &["publish", dir.to_str().unwrap(), "--format", "dataset"],
    );
    let ds = read(&dir.join("dataset.json"));
    assert_eq!(ds["meta"]["rounds"], 1);
    assert_eq!(ds["meta"]["rows"], 3);
    let table = ok(tmp.path(), &["aggregate", dir.to_str().unwrap()]);
    assert!(table.contains("alpha") && table.contains("3/4"), "{table}");
}

#[test]
fn multivac_rankings_match_the_hand_computed_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let file = fixture("multivac-evaluation.json");
    let stdout = ok(
        tmp.path(),
        &[
            "import",
            "multivac",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let dir = PathBuf::from(stdout.trim());
    assert_eq!(dir, out.join("CODE-015-2026-04-02"));
    let data = read(&dir.join("round-data.json"));
    assert_eq!(data["rubric"]["aggregation"], "mean");
    assert_eq!(data["rubric"]["criteria"].as_array().unwrap().len(), 5);
    let judgments = data["judgments"].as_array().unwrap();
    let self_judgment = judgments
        .iter()
        .find(|j| j["judge"] == "model_b" && j["model"] == "model_b")
        .unwrap();
    assert_eq!(self_judgment["tier"], "self");
    assert_eq!(self_judgment["weighted"], 9.9);
    let missing = judgments
        .iter()
        .find(|j| j["judge"] == "model_d" && j["model"] == "model_a")
        .unwrap();
    assert!(missing["dropout"].is_string());

    let got: Value = serde_json::from_str(&ok(
        tmp.path(),
        &["aggregate", dir.to_str().unwrap(), "--json"],
    ))
    .unwrap();
    let expected = read(&file);
    assert_eq!(got["rankings"], expected["rankings"]);
    let order: Vec<&String> = got["rankings"].as_object().unwrap().keys().collect();
    assert_eq!(order, ["model_d", "model_a", "model_b", "model_c"]);
    let avg = got["avg_score"].as_f64().unwrap();
    assert!((avg - 7.75).abs() < 1e-9, "avg_score {avg}");
    assert!((avg - expected["avg_score"].as_f64().unwrap()).abs() < 1e-9);
    for table in TABLES {
        assert!(got[table].is_array(), "{table}");
    }
}

#[test]
fn bad_input_names_the_file_and_the_place() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("broken.json");
    std::fs::write(
        &bad,
        "{\n  \"meta\": { \"schema_version\": 1 },\n  \"rounds\": [\n",
    )
    .unwrap();
    let (code, _, stderr) = pipe(
        tmp.path(),
        &["import", "openbenchmark", "broken.json", "--out", "out"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("broken.json:4:"), "{stderr}");

    let text = std::fs::read_to_string(fixture("openbenchmark-dataset.json"))
        .unwrap()
        .replacen("\"wallSec\": 130.2", "\"wallSec\": \"slow\"", 1);
    let typed = tmp.path().join("typed.json");
    std::fs::write(&typed, text).unwrap();
    let (code, _, stderr) = pipe(
        tmp.path(),
        &["import", "openbenchmark", "typed.json", "--out", "out"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("typed.json:"), "{stderr}");
    assert!(stderr.contains("rounds[0].samples[0].wallSec"), "{stderr}");

    let (code, _, stderr) = pipe(tmp.path(), &["aggregate", "nowhere"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no round-data.json"), "{stderr}");
    let (code, _, stderr) = pipe(tmp.path(), &["publish", "--all", "."]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no round directory"), "{stderr}");
    assert!(!tmp.path().join("out").exists());
}

/// Imports `value` (written to `<tmp>/hostile.json`) with `pipe import KIND`; returns the exit
/// code and stderr, and checks nothing was written: neither the output directory nor anything
/// beside it.
fn import_hostile(kind: &str, value: &Value) -> (i32, String) {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        work.join("hostile.json"),
        serde_json::to_vec_pretty(value).unwrap(),
    )
    .unwrap();
    let (code, _, stderr) = pipe(
        &work,
        &["import", kind, "hostile.json", "--out", "out/deep"],
    );
    assert!(!work.join("out").exists(), "the import wrote: {stderr}");
    let mut left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["work"], "something was written beside: {stderr}");
    (code, stderr)
}

/// Hostile names in an openbenchmark dataset: each is refused with the file and the JSON path,
/// and nothing is written (a task of `../../x` would have put a round directory beside `--out`).
#[test]
fn an_openbenchmark_dataset_with_unsafe_names_is_refused() {
    let good = read(&fixture("openbenchmark-dataset.json"));
    let long = "j".repeat(300);
    let cases: [(&str, Value); 6] = [
        ("/rounds/0/task", "../../escape".into()),
        ("/rounds/1/task", ".hidden".into()),
        ("/rounds/0/samples/3/model", "../x".into()),
        ("/rounds/0/perImplDetail/1/impl", "openai/gpt-4".into()),
        ("/rounds/0/perImplDetail/0/scores/1/judge", "a\0b".into()),
        ("/rounds/0/judgingCost/2/judge", long.into()),
    ];
    let mut report = String::new();
    for (pointer, name) in cases {
        let mut v = good.clone();
        *v.pointer_mut(pointer).unwrap() = name;
        let (code, stderr) = import_hostile("openbenchmark", &v);
        assert_eq!(code, 2, "{pointer}: {stderr}");
        assert!(stderr.contains("is not a safe name"), "{pointer}: {stderr}");
        report.push_str(&stderr);
    }
    insta::assert_snapshot!("openbenchmark_unsafe_names", report);
}

/// Hostile names in a Multivac file: the question id (the round directory) and model keys.
#[test]
fn a_multivac_file_with_unsafe_names_is_refused() {
    let good = read(&fixture("multivac-evaluation.json"));
    let cases: [(&str, Value); 4] = [
        ("/question_id", "../../escape".into()),
        ("/question_id", "..".into()),
        ("/models_used/3/id", "../x".into()),
        ("/judgments/4/judge_key", "model_a/../../b".into()),
    ];
    let mut report = String::new();
    for (pointer, name) in cases {
        let mut v = good.clone();
        *v.pointer_mut(pointer).unwrap() = name;
        let (code, stderr) = import_hostile("multivac", &v);
        assert_eq!(code, 2, "{pointer}: {stderr}");
        assert!(stderr.contains("is not a safe name"), "{pointer}: {stderr}");
        report.push_str(&stderr);
    }
    insta::assert_snapshot!("multivac_unsafe_names", report);
}

/// A round directory under `--out` that is a link to elsewhere (planted, or left by another
/// tool) is refused: an import writes nothing through it.
#[test]
fn an_import_never_writes_through_a_linked_round_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(tmp.path().join("out")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, tmp.path().join("out/CODE-015-2026-04-02")).unwrap();
    let file = fixture("multivac-evaluation.json");
    let (code, _, stderr) = pipe(
        tmp.path(),
        &["import", "multivac", file.to_str().unwrap(), "--out", "out"],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

/// A score outside the rubric's scale would skew every mean and median it enters: the import
/// refuses it, naming the file and the JSON path.
#[test]
fn imported_scores_outside_the_scale_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixture("openbenchmark-dataset.json"))
        .unwrap()
        .replacen(
            "\"spec\": 8, \"quality\": 15",
            "\"spec\": 8, \"quality\": 25",
            1,
        );
    std::fs::write(tmp.path().join("high.json"), text).unwrap();
    let (code, _, stderr) = pipe(
        tmp.path(),
        &["import", "openbenchmark", "high.json", "--out", "out"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "high.json: rounds[0].perImplDetail[0].scores[1].quality: 25 is outside the scale 0..20 of the rubric `code-review`"
        ),
        "{stderr}"
    );

    let text = std::fs::read_to_string(fixture("multivac-evaluation.json"))
        .unwrap()
        .replacen("\"weighted_score\": 8.5", "\"weighted_score\": -3", 1);
    std::fs::write(tmp.path().join("low.json"), text).unwrap();
    let (code, _, stderr) = pipe(
        tmp.path(),
        &["import", "multivac", "low.json", "--out", "out"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "low.json: judgments[0].weighted_score: -3 is outside the scale 0..10 of the rubric `multivac`"
        ),
        "{stderr}"
    );
    assert!(!tmp.path().join("out").exists());
}
