//! Choosing where model code runs, with the real binary on the mini round: `auto` never falls
//! back to no isolation unless the pipeline opts in, `local` requires bubblewrap, `unisolated` is
//! explicit and loud, and every report says which sandbox ran each gate (from the gates' own
//! outputs, so a cached gate keeps its label). A machine without Docker is simulated with a
//! `DOCKER_HOST` that does not answer, one without bubblewrap with `PIPE_NO_BWRAP=1`.
//!
//! Regenerate the snapshots after an intended change: `INSTA_UPDATE=always cargo test --test
//! sandbox_select`, then read every changed `tests/snapshots/sandbox_select__*.snap`.

mod common;
use common::{Ran, copy_dir, read_json};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// No engine answers here.
const NO_DOCKER: &str = "unix:///nonexistent/pipe-test/docker.sock";

struct Round {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Round {
    /// The mini round with `settings` in place of its `task = "task"` line's neighbours.
    fn new(settings: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("mini");
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mini"),
            &root,
        );
        let pipeline = root.join("pipeline.toml");
        let text = std::fs::read_to_string(&pipeline)
            .unwrap()
            .replace("task = \"task\"\n", &format!("task = \"task\"\n{settings}"));
        std::fs::write(&pipeline, text).unwrap();
        Self { _dir: dir, root }
    }

    /// `pipe ARGS` in the round, on a machine without Docker, and without bubblewrap unless
    /// `bwrap`.
    fn pipe(&self, args: &[&str], bwrap: bool) -> Ran {
        let c = common::pipe()
            .cwd(&self.root)
            .args(args)
            .env("DOCKER_HOST", NO_DOCKER)
            .env("NO_COLOR", "1");
        if bwrap {
            c.env_remove("PIPE_NO_BWRAP")
        } else {
            c.env("PIPE_NO_BWRAP", "1")
        }
        .run()
    }

    fn round_dir(&self) -> PathBuf {
        self.root.join("out/mini-2026-01-02")
    }

    fn report(&self) -> String {
        std::fs::read_to_string(self.round_dir().join("report.md")).unwrap()
    }
}

/// The engine's own words (they depend on the client library) become a placeholder.
fn scrub_engine_error(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    let open = "does not answer (";
    while let Some(i) = rest.find(open) {
        let start = i + open.len();
        out.push_str(&rest[..start]);
        // The error may itself hold parentheses: up to the `)` that closes ours.
        let mut depth = 1;
        let mut end = rest.len();
        for (k, ch) in rest[start..].char_indices() {
            match ch {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = start + k;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.push_str("[ENGINE ERROR]");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Nodes with a record, done or not.
fn recorded_nodes(round: &Path) -> usize {
    common::all_files(round)
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "node.json"))
        .count()
}

#[test]
fn auto_without_docker_or_bubblewrap_stops_before_any_node_without_the_opt_in() {
    let r = Round::new("sandbox = \"auto\"\n");
    let o = r.pipe(&["run", "pipeline.toml"], false);
    assert_eq!(o.status.code(), Some(2), "{}", o.stderr);
    assert_eq!(recorded_nodes(&r.round_dir()), 0, "no node ran");
    insta::assert_snapshot!(
        "auto_without_isolation_is_an_error",
        scrub_engine_error(&o.stderr)
    );
}

#[test]
fn local_without_bubblewrap_is_an_error_naming_the_fixes() {
    // The default (no `sandbox` key) is `local`.
    let r = Round::new("");
    let o = r.pipe(&["run", "pipeline.toml"], false);
    assert_eq!(o.status.code(), Some(2), "{}", o.stderr);
    assert_eq!(recorded_nodes(&r.round_dir()), 0, "no node ran");
    insta::assert_snapshot!("local_without_bubblewrap_is_an_error", o.stderr);
    // --sandbox local says the same, whatever the pipeline's opt-in for `auto`.
    let r = Round::new("sandbox = \"auto\"\nunisolated_fallback = true\n");
    let o = r.pipe(&["run", "pipeline.toml", "--sandbox", "local"], false);
    assert_eq!(o.status.code(), Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("the local sandbox needs bubblewrap"));
}

#[test]
fn check_task_without_bubblewrap_is_an_error() {
    let r = Round::new("");
    let o = r.pipe(&["check-task", "task", "--sandbox", "local"], false);
    assert_eq!(o.status.code(), Some(2), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("error: the local sandbox needs bubblewrap, and PIPE_NO_BWRAP is set"),
        "{}",
        o.stderr
    );
    let o = r.pipe(&["check-task", "task", "--sandbox", "auto"], false);
    assert_eq!(o.status.code(), Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("no isolating sandbox"), "{}", o.stderr);
}

/// The warning a run without isolation prints, and the report's labels.
fn assert_unisolated_run(r: &Round, o: &Ran) {
    let err = &o.stderr;
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("warning: MODEL CODE RUNS UNISOLATED"),
        "a loud warning: {err}"
    );
    assert!(err.contains("reach the network"), "what is lost: {err}");
    let summary: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(summary["sandbox"], "unisolated", "{summary}");
    for model in ["ann", "bob"] {
        let gate = read_json(
            &r.round_dir()
                .join(format!("nodes/gate/{model}/1/gate.json")),
        );
        assert_eq!(gate["sandbox"], "unisolated", "{gate}");
    }
    let data = read_json(&r.round_dir().join("nodes/aggregate/round-data.json"));
    for g in data["gates"].as_array().unwrap() {
        assert_eq!(g["sandbox"], "unisolated", "{g}");
    }
    let agg = read_json(&r.round_dir().join("aggregate.json"));
    assert_eq!(
        agg["sandboxes"],
        serde_json::json!([{"sandbox": "unisolated", "isolated": false, "gates": ["ann#1", "bob#1"]}])
    );
    let report = r.report();
    assert!(
        report.contains("> **Warning: 2 of 2 gates ran unisolated: no container, no bubblewrap."),
        "{report}"
    );
    assert!(
        report.contains(
            "| unisolated | \u{26a0} none: ran as the user, with the network and the user's files | all 2 |"
        ),
        "{report}"
    );
}

#[test]
fn auto_with_the_opt_in_runs_unisolated_and_every_report_says_so() {
    let r = Round::new("sandbox = \"auto\"\nunisolated_fallback = true\n");
    let o = r.pipe(&["run", "pipeline.toml", "--json"], false);
    assert!(
        o.stderr.contains("`auto` found no isolating sandbox"),
        "{}",
        o.stderr
    );
    assert_unisolated_run(&r, &o);
    // The dataset says it per sample.
    let dir = r.round_dir();
    let o = r.pipe(
        &["publish", dir.to_str().unwrap(), "--format", "dataset"],
        false,
    );
    assert_eq!(o.status.code(), Some(0), "{}", o.stderr);
    let ds = read_json(&dir.join("dataset.json"));
    let samples = ds["rounds"][0]["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2, "{ds}");
    for s in samples {
        assert_eq!(s["testSandbox"], "unisolated", "{s}");
    }
}

#[test]
fn unisolated_is_an_explicit_choice_and_as_loud() {
    let r = Round::new("");
    // Even where bubblewrap works: the operator asked for no isolation.
    let o = r.pipe(
        &["run", "pipeline.toml", "--json", "--sandbox", "unisolated"],
        true,
    );
    assert!(o.stderr.contains("`unisolated` was chosen"), "{}", o.stderr);
    assert_unisolated_run(&r, &o);
}

/// The report reads the sandbox from each gate's output, not from the run's settings: gates
/// cached from an unisolated run stay labelled after a run that has bubblewrap, and a gate.json
/// written before `unisolated` had its name (`local`: no bubblewrap) reads as unisolated.
#[test]
#[cfg_attr(
    not(pipe_has_bwrap),
    ignore = "needs a working bubblewrap: apt-get install bubblewrap, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
)]
fn the_report_labels_each_gate_by_the_sandbox_that_ran_it() {
    common::needs::bwrap();
    let r = Round::new("");
    let o = r.pipe(
        &["run", "pipeline.toml", "--json", "--sandbox", "unisolated"],
        true,
    );
    assert_eq!(o.status.code(), Some(0), "{}", o.stderr);
    let o = r.pipe(&["run", "pipeline.toml", "--json"], true);
    assert_eq!(o.status.code(), Some(0), "{}", o.stderr);
    let summary: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(summary["sandbox"], "local+bwrap", "{summary}");
    assert!(
        !common::ids_with(&summary, "cached").is_empty(),
        "the gates are cached: {summary}"
    );
    assert!(
        r.report().contains("2 of 2 gates ran unisolated"),
        "{}",
        r.report()
    );

    // Re-run bob's gate under bubblewrap: the report shows both sandboxes, gate by gate. (The
    // sandbox enters no key: the result store would restore the gate's unisolated result.)
    let gate = r.round_dir().join("nodes/gate/bob/1");
    std::fs::remove_file(gate.join("node.json")).unwrap();
    let o = r.pipe(&["run", "pipeline.toml", "--json", "--no-store"], true);
    assert_eq!(o.status.code(), Some(0), "{}", o.stderr);
    let report = r.report();
    assert!(report.contains("1 of 2 gates ran unisolated"), "{report}");
    assert!(
        report.contains(
            "| unisolated | \u{26a0} none: ran as the user, with the network and the user's files | ann#1 |"
        ),
        "{report}"
    );
    assert!(
        report.contains("| local+bwrap | bubblewrap: no network, the host read-only; no memory, pids or CPU limits | bob#1 |"),
        "{report}"
    );

    // An older gate.json says `local` for the sandbox without bubblewrap.
    let file = gate.join("gate.json");
    let mut g = read_json(&file);
    g["sandbox"] = "local".into();
    let bytes = serde_json::to_vec(&g).unwrap();
    std::fs::write(&file, &bytes).unwrap();
    // As an older pipe recorded it: the record lists the file as it now is (pipe verifies a done
    // node's outputs against its record, and would otherwise run the gate again).
    let record_file = gate.join("node.json");
    let mut record = read_json(&record_file);
    for out in record["outputs"].as_array_mut().unwrap() {
        if out["path"] == "gate.json" {
            out["bytes"] = bytes.len().into();
            out["blake3"] = blake3::hash(&bytes).to_hex().to_string().into();
            out.as_object_mut().unwrap().remove("stamp");
        }
    }
    std::fs::write(&record_file, serde_json::to_vec(&record).unwrap()).unwrap();
    let o = r.pipe(
        &["run", "pipeline.toml", "--json", "--force", "aggregate"],
        true,
    );
    assert_eq!(o.status.code(), Some(0), "{}", o.stderr);
    assert!(
        r.report().contains("2 of 2 gates ran unisolated"),
        "{}",
        r.report()
    );
}

#[test]
fn a_fallback_opt_in_outside_auto_is_a_located_error() {
    for (sandbox, says) in [
        ("sandbox = \"docker\"\n", "not to `sandbox = \"docker\"`"),
        ("sandbox = \"local\"\n", "not to `sandbox = \"local\"`"),
        ("", "not to `sandbox = \"local\"` (the default)"),
        (
            "sandbox = \"unisolated\"\n",
            "not to `sandbox = \"unisolated\"`",
        ),
    ] {
        let r = Round::new(&format!("{sandbox}unisolated_fallback = true\n"));
        let o = r.pipe(&["validate", "pipeline.toml"], true);
        assert_eq!(o.status.code(), Some(2), "{sandbox}: {}", o.stderr);
        let err = &o.stderr;
        assert!(err.contains(says), "{sandbox}: {err}");
        assert!(err.contains("(at `round.unisolated_fallback`)"), "{err}");
    }
}

/// Only the shipped offline rounds, which replay the project's own recordings, may run without
/// isolation; the live round never does.
#[test]
fn only_the_offline_rounds_opt_into_running_unisolated() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut offline = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let p = pipe::config::load(&path, pipe::config::load::Purpose::Validate)
            .unwrap_or_else(|d| panic!("{}: {d:?}", path.display()));
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let is_offline = name.ends_with("-offline.toml");
        // A round whose builds run agent CLIs from their image needs Docker: it never falls
        // back, to bubblewrap or to nothing.
        let in_image = p.stages.iter().any(|st| {
            matches!(&st.kind, pipe::config::StageKind::Build(b)
                if b.command.as_ref().is_some_and(|c| c.image.is_some()))
        });
        assert_eq!(
            p.round.unisolated_fallback,
            is_offline && !in_image,
            "{name}: only offline rounds opt in"
        );
        let sandbox = if in_image {
            pipe::sandbox::SandboxChoice::Docker
        } else {
            pipe::sandbox::SandboxChoice::Auto
        };
        assert_eq!(p.round.sandbox, sandbox, "{name}");
        offline += usize::from(is_offline);
    }
    assert!(offline >= 3, "the offline rounds were found");
    let live = std::fs::read_to_string(dir.join("atomic-write.toml")).unwrap();
    assert!(
        !live.contains("unisolated_fallback ="),
        "the live round must not opt in"
    );
}
