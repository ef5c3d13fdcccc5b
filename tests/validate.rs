//! `pipe validate` on the corpus of broken pipelines (and broken rubrics and tasks they name)
//! under `tests/broken/`: every case exits 2
//! and its full stderr (every error, located, with its help) is a snapshot. Each case directory
//! is self-contained and the binary runs inside it, so the paths it prints are stable.
//!
//! Regenerate after an intended change: `INSTA_UPDATE=always cargo test --test validate`, then
//! read every changed `tests/snapshots/validate__*.snap`.

mod common;
use common::{Ran, copy_dir};
use std::path::{Path, PathBuf};

const EXIT_INVALID: i32 = 2;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn broken_dir() -> PathBuf {
    repo().join("tests").join("broken")
}

/// Runs `pipe ARGS` in `dir`, with no API key in the environment whatever the caller's shell has.
fn pipe(dir: &Path, args: &[&str]) -> Ran {
    common::pipe()
        .cwd(dir)
        .env_remove("OPENROUTER_API_KEY")
        .env("NO_COLOR", "1")
        .args(args)
        .run()
}

/// Machine-specific paths, should any reach the output, become placeholders.
fn scrub(text: &str, dir: &Path) -> String {
    let mut out = text.replace(&dir.display().to_string(), "[CASE]");
    out = out.replace(&repo().display().to_string(), "[REPO]");
    out = out.replace(&std::env::temp_dir().display().to_string(), "[TMP]");
    out
}

/// Validates `file` inside the case directory `dir`: exit 2, nothing on stdout, stderr as the
/// snapshot named after the case.
fn check_broken(case: &str, dir: &Path, file: &str) {
    let out = pipe(dir, &["validate", file]);
    assert_eq!(
        out.code(),
        EXIT_INVALID,
        "case {case}: expected exit 2\nstdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.is_empty(), "case {case}: stdout: {}", out.stdout);
    let stderr = scrub(&out.stderr, dir);
    assert!(
        stderr.contains(": error: "),
        "case {case}: no error rendered:\n{stderr}"
    );
    insta::assert_snapshot!(case, stderr);
}

fn broken(case: &str, file: &str) {
    let src = broken_dir().join(case);
    if case == EMPTY_HIDDEN {
        // Git keeps no empty directory: this case runs from a copy given its empty `hidden/`.
        let tmp = tempfile::tempdir().expect("temp dir");
        copy_dir(&src, tmp.path());
        std::fs::create_dir_all(tmp.path().join("task").join("hidden")).expect("mkdir");
        check_broken(case, tmp.path(), file);
    } else {
        check_broken(case, &src, file);
    }
}

const EMPTY_HIDDEN: &str = "task-empty-hidden-tests";

/// Every case directory of `tests/broken/`, with its pipeline file.
const CASES: &[(&str, &str)] = &[
    ("agent-bad-settings", "pipeline.toml"),
    ("agent-task-without-agent", "pipeline.toml"),
    ("bad-cost-caps", "pipeline.toml"),
    ("command-gateway-bad", "pipeline.toml"),
    ("command-harness-bad-settings", "pipeline.toml"),
    ("command-harness-unknown-cli", "pipeline.toml"),
    ("duplicate-model-id", "pipeline.toml"),
    ("malformed-toml", "pipeline.toml"),
    ("many-errors", "pipeline.toml"),
    ("missing-prompt-file", "pipeline.toml"),
    ("missing-rubric-file", "pipeline.toml"),
    ("missing-task-dir", "pipeline.toml"),
    ("needs-unknown-stage", "pipeline.toml"),
    ("negative-price", "pipeline.toml"),
    ("non-finite-numbers", "pipeline.toml"),
    ("non-utf8", "pipeline.toml"),
    ("plan-too-large", "pipeline.toml"),
    ("provider-bad-headers", "pipeline.toml"),
    ("rubric-duplicate-criterion", "pipeline.toml"),
    ("rubric-inverted-scale", "pipeline.toml"),
    ("rubric-no-verdicts", "pipeline.toml"),
    ("rubric-unknown-key", "pipeline.toml"),
    ("rubric-yaml-wrong-type", "pipeline.toml"),
    ("rubric-zero-weights", "pipeline.toml"),
    ("sandbox-fallback-not-auto", "pipeline.toml"),
    ("stage-cycle", "pipeline.toml"),
    ("suite-html-format", "pipeline.toml"),
    ("task-bad-agent-table", "pipeline.toml"),
    ("task-empty-hidden-tests", "pipeline.toml"),
    ("task-invalid-protected-glob", "pipeline.toml"),
    ("task-missing-hidden-tests", "pipeline.toml"),
    ("task-missing-spec", "pipeline.toml"),
    ("task-unknown-runner", "pipeline.toml"),
    ("tasks-and-task", "pipeline.toml"),
    ("tasks-glob-matches-nothing", "pipeline.toml"),
    ("template-runs-forever", "pipeline.toml"),
    ("template-syntax-error", "pipeline.toml"),
    ("template-undefined-variable", "pipeline.toml"),
    ("unknown-provider", "pipeline.toml"),
    ("unknown-stage-key-typo", "pipeline.toml"),
    ("unknown-stage-kind", "pipeline.toml"),
    ("unknown-top-level-key", "pipeline.toml"),
    ("unsafe-names", "pipeline.toml"),
    ("unsafe-names-yaml", "pipeline.yaml"),
    ("unsafe-task-names", "pipeline.toml"),
    ("wrong-type-samples", "pipeline.toml"),
    ("yaml-non-finite", "pipeline.yaml"),
    ("yaml-unknown-key", "pipeline.yaml"),
    ("zero-timeouts", "pipeline.toml"),
];

const VALID: &str = "valid-yaml";

macro_rules! broken_case {
    ($($test:ident => $case:literal, $file:literal;)*) => {
        $(
            #[test]
            fn $test() {
                broken($case, $file);
            }
        )*

        #[test]
        fn every_case_directory_has_a_test() {
            let tested: Vec<&str> = vec![$($case),*];
            assert_eq!(
                tested,
                CASES.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
                "CASES and the tests disagree"
            );
            let mut on_disk: Vec<String> = std::fs::read_dir(broken_dir())
                .expect("tests/broken exists")
                .map(|e| e.expect("readable entry").file_name().to_string_lossy().into_owned())
                .filter(|n| n != VALID)
                .collect();
            on_disk.sort();
            assert_eq!(on_disk, tested, "a directory under tests/broken has no test (or vice versa)");
            for (case, file) in CASES {
                assert!(
                    broken_dir().join(case).join(file).is_file(),
                    "{case}/{file} is missing"
                );
            }
        }
    };
}

broken_case! {
    agent_bad_settings => "agent-bad-settings", "pipeline.toml";
    agent_task_without_agent => "agent-task-without-agent", "pipeline.toml";
    bad_cost_caps => "bad-cost-caps", "pipeline.toml";
    command_gateway_bad => "command-gateway-bad", "pipeline.toml";
    command_harness_bad_settings => "command-harness-bad-settings", "pipeline.toml";
    command_harness_unknown_cli => "command-harness-unknown-cli", "pipeline.toml";
    duplicate_model_id => "duplicate-model-id", "pipeline.toml";
    malformed_toml => "malformed-toml", "pipeline.toml";
    many_errors => "many-errors", "pipeline.toml";
    missing_prompt_file => "missing-prompt-file", "pipeline.toml";
    missing_rubric_file => "missing-rubric-file", "pipeline.toml";
    missing_task_dir => "missing-task-dir", "pipeline.toml";
    needs_unknown_stage => "needs-unknown-stage", "pipeline.toml";
    negative_price => "negative-price", "pipeline.toml";
    non_finite_numbers => "non-finite-numbers", "pipeline.toml";
    non_utf8 => "non-utf8", "pipeline.toml";
    plan_too_large => "plan-too-large", "pipeline.toml";
    provider_bad_headers => "provider-bad-headers", "pipeline.toml";
    rubric_duplicate_criterion => "rubric-duplicate-criterion", "pipeline.toml";
    rubric_inverted_scale => "rubric-inverted-scale", "pipeline.toml";
    rubric_no_verdicts => "rubric-no-verdicts", "pipeline.toml";
    rubric_unknown_key => "rubric-unknown-key", "pipeline.toml";
    rubric_yaml_wrong_type => "rubric-yaml-wrong-type", "pipeline.toml";
    rubric_zero_weights => "rubric-zero-weights", "pipeline.toml";
    sandbox_fallback_not_auto => "sandbox-fallback-not-auto", "pipeline.toml";
    stage_cycle => "stage-cycle", "pipeline.toml";
    suite_html_format => "suite-html-format", "pipeline.toml";
    task_bad_agent_table => "task-bad-agent-table", "pipeline.toml";
    task_empty_hidden_tests => "task-empty-hidden-tests", "pipeline.toml";
    task_invalid_protected_glob => "task-invalid-protected-glob", "pipeline.toml";
    task_missing_hidden_tests => "task-missing-hidden-tests", "pipeline.toml";
    task_missing_spec => "task-missing-spec", "pipeline.toml";
    task_unknown_runner => "task-unknown-runner", "pipeline.toml";
    tasks_and_task => "tasks-and-task", "pipeline.toml";
    tasks_glob_matches_nothing => "tasks-glob-matches-nothing", "pipeline.toml";
    template_runs_forever => "template-runs-forever", "pipeline.toml";
    template_syntax_error => "template-syntax-error", "pipeline.toml";
    template_undefined_variable => "template-undefined-variable", "pipeline.toml";
    unknown_provider => "unknown-provider", "pipeline.toml";
    unknown_stage_key_typo => "unknown-stage-key-typo", "pipeline.toml";
    unknown_stage_kind => "unknown-stage-kind", "pipeline.toml";
    unknown_top_level_key => "unknown-top-level-key", "pipeline.toml";
    unsafe_names => "unsafe-names", "pipeline.toml";
    unsafe_names_yaml => "unsafe-names-yaml", "pipeline.yaml";
    unsafe_task_names => "unsafe-task-names", "pipeline.toml";
    wrong_type_samples => "wrong-type-samples", "pipeline.toml";
    yaml_non_finite => "yaml-non-finite", "pipeline.yaml";
    yaml_unknown_key => "yaml-unknown-key", "pipeline.yaml";
    zero_timeouts => "zero-timeouts", "pipeline.toml";
}

/// The YAML pipeline of `valid-yaml` is the same round as its `pipeline.toml`: both validate, and
/// both expand to the same graph.
#[test]
fn valid_yaml_pipeline_equals_its_toml_twin() {
    let dir = broken_dir().join(VALID);
    let yaml = pipe(&dir, &["validate", "pipeline.yaml"]);
    assert_eq!(yaml.code(), 0, "stderr:\n{}", yaml.stderr);
    assert_eq!(yaml.stderr, "", "no warnings expected");
    let toml = pipe(&dir, &["validate", "pipeline.toml"]);
    assert_eq!(toml.code(), 0, "stderr:\n{}", toml.stderr);
    assert_eq!(yaml.stdout, toml.stdout);
    insta::assert_snapshot!(VALID, yaml.stdout);

    let graph = |file: &str| {
        let out = pipe(&dir, &["graph", file, "--format", "json"]);
        assert_eq!(out.code(), 0, "graph {file}: {}", out.stderr);
        out.stdout
    };
    assert_eq!(graph("pipeline.yaml"), graph("pipeline.toml"));
}

/// Every pipeline the repository ships validates from the repository root (warnings, such as an
/// unset API-key variable, are allowed; errors are not).
#[test]
fn shipped_pipelines_validate() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("pipelines"))
        .expect("pipelines/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "toml" || e == "yaml" || e == "yml")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no shipped pipelines found");
    for file in &files {
        let rel = file.strip_prefix(repo()).expect("under the repo");
        let rel = rel.to_str().expect("UTF-8 path");
        let out = pipe(&repo(), &["validate", rel]);
        assert_eq!(out.code(), 0, "{rel} does not validate:\n{}", out.stderr);
        assert!(
            !out.stderr.contains(": error: "),
            "{rel}: errors on stderr:\n{}",
            out.stderr
        );
        assert!(out.stdout.starts_with("ok: "), "{rel}: {}", out.stdout);
    }
}
