//! Broken inputs that are not pipeline files and that `pipe validate` cannot see: recordings the
//! replay provider reads, model answers a build parses, JUnit reports a gate reads. Each runs the
//! real binary on a copy of `tests/fixtures/mini` (a small replayed round) that the test breaks,
//! and snapshots the message the user sees. What must hold every time:
//!
//! - no panic: the run ends with its summary, and the round goes on past the bad node;
//! - the message names the file and, when there is one, the line and column;
//! - nothing already done is lost: every node finished before keeps its record.
//!
//! (Broken rubrics and tasks are found by `pipe validate`: they are cases of `tests/broken/`, run
//! by `tests/validate.rs`.)
//!
//! Regenerate after an intended change: `INSTA_UPDATE=always cargo test --test broken_inputs`,
//! then read every changed `tests/snapshots/broken_inputs__*.snap`.

mod common;
use common::{Pipe, all_files, copy_dir};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

const EXIT_OK: i32 = 0;
const EXIT_FAILED: i32 = 1;

/// Nodes of the fixture round.
const NODES: usize = 12;

struct Round {
    dir: tempfile::TempDir,
    root: PathBuf,
}

struct Run {
    code: i32,
    summary: Value,
    stderr: String,
}

impl Round {
    /// A copy of the fixture round in a temp dir, run once to the end, cleanly.
    fn finished() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("mini");
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mini"),
            &root,
        );
        let r = Self { dir, root };
        let run = r.run(&[]);
        assert_eq!(run.code, EXIT_OK, "the clean run failed: {}", run.stderr);
        assert_eq!(run.summary["executed"], NODES, "{}", run.summary);
        r
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn write(&self, rel: &str, bytes: &[u8]) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    }

    fn edit(&self, rel: &str, from: &str, to: &str) {
        let text = std::fs::read_to_string(self.path(rel)).expect("readable");
        assert!(text.contains(from), "{rel} does not contain {from:?}");
        self.write(rel, text.replacen(from, to, 1).as_bytes());
    }

    fn cmd(&self, args: &[&str]) -> Pipe {
        common::pipe()
            .cwd(&self.root)
            .env_remove("OPENROUTER_API_KEY")
            .env("NO_COLOR", "1")
            .args(args)
    }

    /// `pipe run pipeline.toml --json EXTRA`.
    fn run(&self, extra: &[&str]) -> Run {
        let mut args = vec!["run", "pipeline.toml", "--json"];
        args.extend_from_slice(extra);
        let out = self.cmd(&args).run();
        let (stdout, stderr) = (&out.stdout, &out.stderr);
        assert!(
            !stderr.contains("panicked"),
            "pipe panicked:\n{stderr}\nstdout:\n{stdout}"
        );
        let summary = serde_json::from_str(stdout)
            .unwrap_or_else(|e| panic!("{e}: stdout {stdout}\nstderr {stderr}"));
        Run {
            code: out.code(),
            summary,
            stderr: out.stderr,
        }
    }

    /// `pipe status pipeline.toml --json`: state and why, by node id.
    fn status(&self) -> BTreeMap<String, (String, String)> {
        let out = self.cmd(&["status", "pipeline.toml", "--json"]).run();
        assert_eq!(out.status.code(), Some(EXIT_OK), "{}", out.stderr);
        let v: Value = serde_json::from_str(&out.stdout).expect("status JSON");
        v["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| (text(&n["id"]), (text(&n["state"]), text(&n["why"]))))
            .collect()
    }

    fn round_dir(&self) -> PathBuf {
        self.root.join("out/mini-2026-01-02")
    }

    /// A JSON output of a node, e.g. `nodes/build/bob/1/build.json`.
    fn output(&self, rel: &str) -> Value {
        let path = self.round_dir().join(rel);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_slice(&bytes).expect("JSON output")
    }

    /// Every node record of the round: status and finish time, by node id.
    fn records(&self) -> BTreeMap<String, (String, String)> {
        let mut out = BTreeMap::new();
        for path in all_files(&self.round_dir().join("nodes")) {
            if path.file_name().is_some_and(|n| n == "node.json") {
                let v: Value =
                    serde_json::from_slice(&std::fs::read(&path).expect("readable")).expect("JSON");
                out.insert(
                    text(&v["id"]),
                    (text(&v["status"]), text(&v["finished_at"])),
                );
            }
        }
        out
    }

    /// Machine-specific paths, should any reach a message, become placeholders.
    fn scrub(&self, message: &str) -> String {
        message
            .replace(&self.root.display().to_string(), "[ROUND]")
            .replace(&self.dir.path().display().to_string(), "[TMP]")
            .replace(&std::env::temp_dir().display().to_string(), "[TMP]")
    }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// The outcome of `id` in a run summary (`executed`, `cached`, `failed`, `skipped`) and its reason.
fn outcome(summary: &Value, id: &str) -> (String, String) {
    let node = summary["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("no node {id} in {summary}"));
    (text(&node["outcome"]), text(&node["reason"]))
}

/// Nothing finished before `run` was lost by it: every node done before is still done, and the
/// record of a node the run did not execute (cached, or skipped for a failed upstream) is the
/// very same. `failed` is the one node allowed to fail.
fn assert_nothing_lost(
    before: &BTreeMap<String, (String, String)>,
    after: &BTreeMap<String, (String, String)>,
    run: &Value,
    failed: Option<&str>,
) {
    assert_eq!(before.len(), NODES, "{before:?}");
    for (id, (status, finished_at)) in before {
        assert_eq!(status, "done", "{id} was not done before");
        let Some((now, now_finished)) = after.get(id) else {
            panic!("{id} lost its record");
        };
        if Some(id.as_str()) == failed {
            assert_eq!(now, "failed", "{id}");
            continue;
        }
        assert_eq!(now, "done", "{id} was done and is now {now}");
        let (outcome, _) = outcome(run, id);
        match outcome.as_str() {
            "executed" => {}
            "cached" | "skipped" => {
                assert_eq!(
                    now_finished, finished_at,
                    "{id} ({outcome}) has a new record"
                );
            }
            other => panic!("{id}: unexpected outcome {other}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Recordings: the node reading a broken recording fails, naming the file (and line:col); the rest
// of the round runs; `pipe status` shows the failure; fixing the file and running again finishes
// the round.

/// Breaks the recording `rel` of a finished round (`None` deletes it), forces `stage` again, and
/// returns the failure reason of `node`, the node that reads the recording.
fn broken_recording(rel: &str, content: Option<&[u8]>, stage: &str, node: &str) -> String {
    let r = Round::finished();
    let before = r.records();
    let good = std::fs::read(r.path(rel)).expect("the fixture has the recording");
    match content {
        Some(bytes) => r.write(rel, bytes),
        None => std::fs::remove_file(r.path(rel)).expect("remove"),
    }

    let run = r.run(&["--force", stage]);
    assert_eq!(run.code, EXIT_FAILED, "{}\n{}", run.summary, run.stderr);
    let s = &run.summary;
    assert_eq!(
        s["failed"], 1,
        "only the node reading the recording fails: {s}"
    );
    let (state, reason) = outcome(s, node);
    assert_eq!(state, "failed", "{s}");
    assert!(reason.contains(rel), "the reason names the file: {reason}");
    // The round went on past it, to the report.
    assert_eq!(outcome(s, "publish").0, "executed", "{s}");
    assert!(r.round_dir().join("report.md").is_file());

    // The store keeps the failure, and `pipe status` shows it with its reason.
    let record = r.output(&format!("{}/node.json", node_dir(node)));
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["failure"]["message"], reason.as_str());
    let status = r.status();
    let (state, why) = &status[node];
    assert_eq!(state, "failed");
    // (`pipe status` lowercases its `why`: compare without case.)
    assert!(
        why.to_lowercase().contains(&reason.to_lowercase()),
        "status gives {why:?}, the run said {reason:?}"
    );
    for (id, (state, why)) in &status {
        if id != node {
            assert!(state == "done" || state == "stale", "{id}: {state} ({why})");
        }
    }
    assert_nothing_lost(&before, &r.records(), s, Some(node));

    // Mended, the input is what it was when the round first ran: the node's result under that
    // key comes back from the result store, and the round is done.
    r.write(rel, &good);
    let again = r.run(&[]);
    assert_eq!(again.code, EXIT_OK, "{}", again.stderr);
    assert_eq!(outcome(&again.summary, node).0, "restored");
    assert!(r.status().values().all(|(state, _)| state == "done"));

    r.scrub(&reason)
}

/// The store directory of a node id: `build:ann#1` is `nodes/build/ann/1`, `judge:ann->bob#1` is
/// `nodes/judge/ann/bob-1`.
fn node_dir(id: &str) -> String {
    let (stage, rest) = id.split_once(':').expect("stage:subject");
    let (who, sample) = rest.split_once('#').expect("#sample");
    match who.split_once("->") {
        Some((judge, author)) => format!("nodes/{stage}/{judge}/{author}-{sample}"),
        None => format!("nodes/{stage}/{who}/{sample}"),
    }
}

#[test]
fn recording_with_bad_indentation() {
    // `answer` is indented less than the `usage` key of the same turn.
    let reason = broken_recording(
        "recordings/build/ann/1.yaml",
        Some(
            b"stage: build\nmodel: ann\nsubject: \"1\"\nturns:\n  - usage: { input_tokens: 100, output_tokens: 50 }\n    latency_ms: 1000\n   answer: |\n      ```python path=adder.py\n      def add(a, b):\n          return a + b\n      ```\n",
        ),
        "build",
        "build:ann#1",
    );
    insta::assert_snapshot!("recording_bad_indentation", reason);
}

#[test]
fn recording_with_an_unknown_key() {
    let reason = broken_recording(
        "recordings/judge/bob/ann-1.yaml",
        Some(
            b"stage: judge\nmodel: bob\nsubject: \"ann-1\"\nturns:\n  - usage: { input_tokens: 300, output_tokens: 30 }\n    latency: 500\n    answer: |\n      {\"scores\": {\"spec\": 9, \"quality\": 18}, \"checks\": {\"core-behaviour\": \"pass\", \"no-test-gaming\": \"pass\", \"no-unsafe-side-effects\": \"pass\"}, \"verdict\": \"ship\", \"note\": \"reviewed\"}\n",
        ),
        "judge",
        "judge:bob->ann#1",
    );
    insta::assert_snapshot!("recording_unknown_key", reason);
}

#[test]
fn recording_with_no_turns() {
    let reason = broken_recording(
        "recordings/judge/ann/bob-1.yaml",
        Some(b"stage: judge\nmodel: ann\nsubject: \"bob-1\"\nturns: []\n"),
        "judge",
        "judge:ann->bob#1",
    );
    insta::assert_snapshot!("recording_no_turns", reason);
}

#[test]
fn missing_recording() {
    let reason = broken_recording("recordings/build/bob/1.yaml", None, "build", "build:bob#1");
    insta::assert_snapshot!("recording_missing", reason);
}

#[test]
fn recording_that_is_not_utf8() {
    // Latin-1 `é` (0xE9) in the judge's note.
    let reason = broken_recording(
        "recordings/judge/ann/ann-1.yaml",
        Some(
            b"stage: judge\nmodel: ann\nsubject: \"ann-1\"\nturns:\n  - answer: |\n      {\"scores\": {\"spec\": 9, \"quality\": 18}, \"checks\": {\"core-behaviour\": \"pass\", \"no-test-gaming\": \"pass\", \"no-unsafe-side-effects\": \"pass\"}, \"verdict\": \"ship\", \"note\": \"r\xe9vis\xe9\"}\n",
        ),
        "judge",
        "judge:ann->ann#1",
    );
    insta::assert_snapshot!("recording_not_utf8", reason);
}

/// A recording past the size the replay provider reads (a sparse file: 65 MiB, almost all NULs)
/// is refused unread, with its size and the limit.
#[test]
fn recording_past_the_size_limit() {
    let r = Round::finished();
    let rel = "recordings/build/bob/1.yaml";
    std::fs::OpenOptions::new()
        .append(true)
        .open(r.path(rel))
        .expect("the fixture has the recording")
        .set_len(65 << 20)
        .expect("grow the recording");
    let run = r.run(&["--force", "build"]);
    assert_eq!(run.code, EXIT_FAILED, "{}\n{}", run.summary, run.stderr);
    let (state, reason) = outcome(&run.summary, "build:bob#1");
    assert_eq!(state, "failed", "{}", run.summary);
    insta::assert_snapshot!("recording_past_the_size_limit", r.scrub(&reason));
}

/// A prompt template that behaves on `pipe validate`'s sample context but runs away on the real
/// task (two loops as long as the spec, squared) stops at its budget when a build renders it: the
/// build fails as a configuration problem naming the template's file, line and column, and the
/// round goes on to its report.
#[test]
fn build_template_that_runs_away_on_the_real_task() {
    let r = Round::finished();
    r.edit(
        "build.md.j2",
        "{{ task.spec }}\n",
        "{{ task.spec }}\n{% for i in range(task.spec | length * 60) %}{% for j in range(task.spec | length * 60) %}{% endfor %}{% endfor %}\n",
    );
    let run = r.run(&[]);
    assert_eq!(run.code, EXIT_FAILED, "{}\n{}", run.summary, run.stderr);
    let (state, reason) = outcome(&run.summary, "build:ann#1");
    assert_eq!(state, "failed", "{}", run.summary);
    assert_eq!(
        outcome(&run.summary, "build:bob#1"),
        (state, reason.clone())
    );
    assert_eq!(outcome(&run.summary, "publish").0, "executed");
    insta::assert_snapshot!("build_template_out_of_fuel", r.scrub(&reason));
}

/// An answer can only be invalid UTF-8 when it comes from a recording: a live endpoint's answer
/// is decoded from JSON, always text. Such a recording is a corrupt input file, not something the
/// model said, so the build node fails (located, retried once the file is mended) rather than
/// recording a rejected build that would stay cached after the fix.
#[test]
fn build_answer_that_is_not_utf8() {
    let reason = broken_recording(
        "recordings/build/bob/1.yaml",
        Some(
            b"stage: build\nmodel: bob\nsubject: \"1\"\nturns:\n  - answer: |\n      ```python path=adder.py\n      def add(a, b):\n          return a + b  # \xff\xfe\n      ```\n",
        ),
        "build",
        "build:bob#1",
    );
    insta::assert_snapshot!("build_answer_not_utf8", reason);
}

// ---------------------------------------------------------------------------------------------
// Model answers: a bad answer is a result, not a failure. The build is recorded as rejected with
// its reason, its gate does not run, and the round finishes.

/// Gives bob's build `answer` (indented into the recording here), forces the build stage of a
/// finished round, and returns `build.json`'s reason.
fn rejected_build(answer: &str) -> String {
    let r = Round::finished();
    let before = r.records();
    let mut recording =
        String::from("stage: build\nmodel: bob\nsubject: \"1\"\nturns:\n  - answer: |\n");
    for line in answer.lines() {
        recording.push_str("      ");
        recording.push_str(line);
        recording.push('\n');
    }
    r.write("recordings/build/bob/1.yaml", recording.as_bytes());

    let run = r.run(&["--force", "build"]);
    assert_eq!(run.code, EXIT_OK, "{}\n{}", run.summary, run.stderr);
    let s = &run.summary;
    assert_eq!(
        (s["failed"].as_u64(), s["skipped"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );
    assert_eq!(outcome(s, "build:bob#1").0, "executed");
    assert_eq!(outcome(s, "publish").0, "executed");

    let build = r.output("nodes/build/bob/1/build.json");
    assert_eq!(build["outcome"], "rejected", "{build}");
    assert_eq!(build["files"], serde_json::json!([]));
    assert!(!r.round_dir().join("nodes/build/bob/1/files").exists());
    let gate = r.output("nodes/gate/bob/1/gate.json");
    assert_eq!(gate["passed"], false, "{gate}");
    assert_eq!(gate["ran"], false, "{gate}");
    // ann's build is untouched by bob's answer.
    assert_eq!(
        r.output("nodes/build/ann/1/build.json")["outcome"],
        "completed"
    );
    assert!(r.round_dir().join("report.md").is_file());
    assert!(r.status().values().all(|(state, _)| state == "done"));
    assert_nothing_lost(&before, &r.records(), s, None);

    r.scrub(build["reason"].as_str().expect("a rejected build says why"))
}

#[test]
fn build_answer_of_ten_megabytes() {
    // A correct `adder.py`, then a 10 MB data file.
    let mut answer = String::from(
        "```python path=adder.py\ndef add(a, b):\n    return a + b\n```\n```python path=blob.py\n",
    );
    let line = format!("DATA = \"{}\"\n", "x".repeat(1000));
    while answer.len() < 10 * 1024 * 1024 {
        answer.push_str(&line);
    }
    answer.push_str("```\n");
    let reason = rejected_build(&answer);
    insta::assert_snapshot!("build_answer_10mb", reason);
}

#[test]
fn build_answer_with_an_unclosed_fence() {
    let reason = rejected_build(
        "Here is the implementation.\n```python path=adder.py\ndef add(a, b):\n    return a + b\n",
    );
    insta::assert_snapshot!("build_answer_unclosed_fence", reason);
}

#[test]
fn build_answer_whose_only_file_is_protected() {
    let reason = rejected_build(
        "```python path=test_adder.py\nimport adder\n\ndef test_small():\n    assert True\n```\n",
    );
    insta::assert_snapshot!("build_answer_only_protected_file", reason);
}

/// A file and a directory of one name cannot both be written: before, the write failed the node
/// on every run; now the answer is refused.
#[test]
fn build_answer_with_a_file_and_a_directory_of_one_name() {
    let reason = rejected_build(
        "```python path=adder.py\ndef add(a, b):\n    return a + b\n```\n```python path=adder.py/extra.py\nX = 1\n```\n",
    );
    insta::assert_snapshot!("build_answer_file_and_directory", reason);
}

/// A name longer than the file system takes (255 bytes), which failed the node on every run.
#[test]
fn build_answer_with_a_name_too_long_to_write() {
    let reason = rejected_build(&format!(
        "```python path=adder.py\ndef add(a, b):\n    return a + b\n```\n```python path={}.py\nX = 1\n```\n",
        "n".repeat(297)
    ));
    insta::assert_snapshot!("build_answer_name_too_long", reason);
}

/// A path of 5,000 bytes, past the system's limit for a whole path.
#[test]
fn build_answer_with_a_path_too_long_to_write() {
    let reason = rejected_build(&format!(
        "```python path=adder.py\ndef add(a, b):\n    return a + b\n```\n```python path={}/x.py\nX = 1\n```\n",
        vec!["d".repeat(99); 50].join("/")
    ));
    insta::assert_snapshot!("build_answer_path_too_long", reason);
}

/// More files than one answer may hold.
#[test]
fn build_answer_with_too_many_files() {
    let mut answer =
        String::from("```python path=adder.py\ndef add(a, b):\n    return a + b\n```\n");
    answer.extend((0..600).map(|i| format!("```python path=pkg/m{i:03}.py\nX = {i}\n```\n")));
    let reason = rejected_build(&answer);
    insta::assert_snapshot!("build_answer_too_many_files", reason);
}

// ---------------------------------------------------------------------------------------------
// JUnit: a task whose gate runs its own command, which must write JUnit XML to `$PIPE_JUNIT`.
// A report that is malformed, lists no test, or is missing fails the gate with its reason; it
// never passes.

/// Switches the task of a finished round to `runner = "command"` running `script` with `sh -c`
/// (with `report` as `hidden/report.xml`, for the script to copy), runs the round again, and
/// returns the reason of ann's gate.
fn failed_gate(script: &str, report: Option<&str>) -> String {
    let r = Round::finished();
    let before = r.records();
    if let Some(xml) = report {
        r.write("task/hidden/report.xml", xml.as_bytes());
    }
    r.edit(
        "task/task.toml",
        "[gate]\nrunner = \"pytest\"",
        &format!("[gate]\nrunner = \"command\"\ncommand = [\"sh\", \"-c\", '{script}']"),
    );

    // The task changed, so both gates run again (no `--force` needed), and what follows them.
    let run = r.run(&[]);
    assert_eq!(run.code, EXIT_OK, "{}\n{}", run.summary, run.stderr);
    let s = &run.summary;
    assert_eq!(s["failed"], 0, "a failed gate is a result: {s}");
    for id in ["gate:ann#1", "gate:bob#1", "publish"] {
        assert_eq!(outcome(s, id).0, "executed", "{id}: {s}");
    }
    let ann = r.output("nodes/gate/ann/1/gate.json");
    let bob = r.output("nodes/gate/bob/1/gate.json");
    for gate in [&ann, &bob] {
        assert_eq!(gate["passed"], false, "{gate}");
        assert_eq!(gate["tests_total"], 0, "{gate}");
    }
    // The reason is about the report, not the build: both builds get the same.
    assert_eq!(ann["reason"], bob["reason"]);
    assert!(r.status().values().all(|(state, _)| state == "done"));
    assert_nothing_lost(&before, &r.records(), s, None);

    r.scrub(ann["reason"].as_str().expect("a failed gate says why"))
}

const COPY_REPORT: &str = r#"cp "$PIPE_HIDDEN_DIR/report.xml" "$PIPE_JUNIT""#;

#[test]
fn gate_with_malformed_junit() {
    let reason = failed_gate(
        COPY_REPORT,
        Some(
            "<testsuite name=\"adder\" tests=\"1\">\n  <testcase name=\"test_small\">\n</testsuite>\n",
        ),
    );
    insta::assert_snapshot!("gate_junit_malformed", reason);
}

#[test]
fn gate_with_junit_listing_no_test() {
    let reason = failed_gate(
        COPY_REPORT,
        Some("<?xml version=\"1.0\"?>\n<testsuite name=\"adder\" tests=\"0\">\n</testsuite>\n"),
    );
    insta::assert_snapshot!("gate_junit_no_testcase", reason);
}

#[test]
fn gate_without_junit() {
    let reason = failed_gate("echo all good", None);
    insta::assert_snapshot!("gate_junit_missing", reason);
}

// ---------------------------------------------------------------------------------------------
// Links planted in the round directory: a re-run writes and removes only inside the round, never
// through a symbolic link to elsewhere.

/// A directory outside the round holding one file pipe must never touch; returns it (kept alive)
/// and the file.
fn precious() -> (tempfile::TempDir, PathBuf) {
    let outside = tempfile::tempdir().expect("temp dir");
    let file = outside.path().join("precious.txt");
    std::fs::write(&file, "keep me").expect("write");
    (outside, file)
}

#[test]
fn a_node_directory_linked_outside_is_never_emptied() {
    let r = Round::finished();
    let (outside, file) = precious();
    let node = r.round_dir().join("nodes/gate/ann/1");
    std::fs::remove_dir_all(&node).expect("remove the node directory");
    std::os::unix::fs::symlink(outside.path(), &node).expect("link");

    let run = r.run(&["--force", "gate"]);
    assert_eq!(run.code, EXIT_FAILED, "{}\n{}", run.summary, run.stderr);
    let (state, reason) = outcome(&run.summary, "gate:ann#1");
    assert_eq!(state, "failed", "{}", run.summary);
    assert!(reason.contains("symbolic link"), "{reason}");
    // The other gate ran as usual.
    assert_eq!(outcome(&run.summary, "gate:bob#1").0, "executed");
    assert_eq!(
        std::fs::read_to_string(&file).expect("still there"),
        "keep me"
    );
    assert_eq!(all_files(outside.path()), vec![file.clone()]);
    insta::assert_snapshot!("node_dir_linked_outside", r.scrub(&reason));

    // A link higher up (`nodes/gate`) is refused the same way.
    let gate = r.round_dir().join("nodes/gate");
    std::fs::remove_file(&node).expect("unlink");
    let moved = outside.path().join("gate");
    std::fs::rename(&gate, &moved).expect("move nodes/gate out");
    std::os::unix::fs::symlink(&moved, &gate).expect("link");
    let before = all_files(outside.path());
    let run = r.run(&["--force", "gate"]);
    assert_eq!(run.code, EXIT_FAILED, "{}\n{}", run.summary, run.stderr);
    assert_eq!(outcome(&run.summary, "gate:bob#1").0, "failed");
    assert_eq!(all_files(outside.path()), before, "nothing outside changed");
    assert_eq!(
        std::fs::read_to_string(&file).expect("still there"),
        "keep me"
    );

    // `pipe clean` removes the link, never what it points at.
    let out = r.cmd(&["clean", "pipeline.toml"]).run();
    assert_eq!(out.status.code(), Some(EXIT_OK), "{out:?}");
    assert!(!r.round_dir().exists());
    assert_eq!(all_files(outside.path()), before);
}

#[test]
fn a_round_directory_linked_elsewhere_is_refused() {
    let r = Round::finished();
    let (outside, file) = precious();
    let elsewhere = outside.path().join("round");
    std::fs::rename(r.round_dir(), &elsewhere).expect("move the round out");
    std::os::unix::fs::symlink(&elsewhere, r.round_dir()).expect("link");
    let before = all_files(outside.path());

    let out = r.cmd(&["run", "pipeline.toml", "--force", "build"]).run();
    let stderr = &out.stderr;
    assert_eq!(out.status.code(), Some(EXIT_FAILED), "{stderr}");
    assert!(stderr.contains("is a symbolic link"), "{stderr}");
    assert_eq!(all_files(outside.path()), before, "nothing outside changed");

    let out = r.cmd(&["clean", "pipeline.toml"]).run();
    let clean = &out.stderr;
    assert_eq!(out.status.code(), Some(EXIT_FAILED), "{clean}");
    assert!(clean.contains("is a symbolic link"), "{clean}");
    assert_eq!(all_files(outside.path()), before);
    assert_eq!(
        std::fs::read_to_string(&file).expect("still there"),
        "keep me"
    );
    insta::assert_snapshot!(
        "round_dir_linked_elsewhere",
        r.scrub(&clean.replace(&outside.path().display().to_string(), "[OUTSIDE]"))
    );
}
