//! Gate: the hidden tests run against a build in a fresh sandbox. The build's files and the hidden
//! tests are separate directories; pytest's rootdir and conftest cut-off are the hidden directory,
//! plugin autoload is off, and the implementation is reached only through `PIPE_IMPL_DIR` (the
//! task's own conftest appends it to `sys.path`), so a build's `conftest.py`, `pytest.ini` or
//! `sitecustomize.py` is never loaded. The gate passes only when a JUnit report says at least
//! one test ran and every collected test passed, and the runner agrees (exit code 0).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::builds::report::BuildReport;
use super::{NodeCtx, NodeError, write_output, write_text};
use crate::base::junit::{self, TestOutcome};
use crate::config::GateStage;
use crate::config::task::{Runner, Task};
use crate::plan::NodeKind;
use crate::sandbox::Job;
use crate::stages::outputs::{BUILD_JSON, FILES_DIR, GATE_JSON, OUTPUT_TXT};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateTest {
    pub name: String,
    pub id: String,
    pub outcome: TestOutcome,
    /// The outcome differed between repeats.
    #[serde(default)]
    pub flaky: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// `gate.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateReport {
    pub passed: bool,
    /// Tests ran and reported (false when the build was rejected or the runner never reported).
    pub ran: bool,
    pub tests_passed: usize,
    pub tests_total: usize,
    pub tests: Vec<GateTest>,
    pub runs: u32,
    pub exit_codes: Vec<Option<i32>>,
    pub timed_out: bool,
    #[serde(default)]
    pub oom_killed: bool,
    pub duration_ms: u64,
    pub sandbox: String,
    /// Why the gate did not pass, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl GateReport {
    pub fn not_run(reason: &str) -> Self {
        Self {
            passed: false,
            ran: false,
            tests_passed: 0,
            tests_total: 0,
            tests: Vec::new(),
            runs: 0,
            exit_codes: Vec::new(),
            timed_out: false,
            oom_killed: false,
            duration_ms: 0,
            sandbox: String::new(),
            reason: Some(reason.to_string()),
        }
    }
}

/// The script that runs the hidden tests once, writing JUnit to `$PIPE_WORK/out/junit-<run>.xml`.
pub fn script(task: &Task, run: u32) -> String {
    let junit = format!("\"$PIPE_WORK/out/junit-{run}.xml\"");
    // Both sandboxes create `$PIPE_WORK/out`; the runner replaces the shell (`exec`): one fork
    // fewer per gate run, which counts when a benchmark's problems each start their own.
    let prelude = "export PIPE_IMPL_DIR=\"$PIPE_WORK/impl\" PIPE_HIDDEN_DIR=\"$PIPE_WORK/hidden\" && cd \"$PIPE_WORK/scratch\"";
    match task.gate.runner {
        Runner::Pytest => format!(
            "{prelude} && exec python3 -m pytest -q -p no:cacheprovider --rootdir=\"$PIPE_WORK/hidden\" --confcutdir=\"$PIPE_WORK/hidden\" --junitxml={junit} \"$PIPE_WORK/hidden\""
        ),
        Runner::Command => {
            let cmd = task
                .gate
                .command
                .clone()
                .unwrap_or_default()
                .iter()
                .map(|a| crate::sandbox::shell_quote(a))
                .collect::<Vec<_>>()
                .join(" ");
            format!("{prelude} && export PIPE_JUNIT={junit} && exec {cmd}")
        }
    }
}

/// How a run ended, in words: `exited 1`, `was killed by signal 9`.
fn exit_text(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(c), _) => format!("exited {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        (None, None) => "ended without an exit code".to_string(),
    }
}

/// Runs the hidden tests of `task` on the implementation in `impl_dir`, `repeat` times.
pub async fn run_tests(
    ctx_sandbox: &crate::sandbox::Sandbox,
    task: &Task,
    impl_dir: &Path,
    timeout: Duration,
    repeat: u32,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(GateReport, Vec<(String, Vec<u8>)>, String), NodeError> {
    let mut runs = Runs::default();
    for run in 1..=repeat {
        let job = gate_job(task, impl_dir, timeout, run);
        let r = ctx_sandbox.run(&job, cancel).await?;
        runs.record(task, timeout, run, &r);
    }
    let Runs {
        per_run,
        exit_codes,
        timed_out,
        oom_killed,
        duration_ms,
        mut reasons,
        artifacts,
        output,
        sandbox,
    } = runs;
    let tests = merge_runs(&per_run);
    let tests_total = tests.len();
    let tests_passed = tests
        .iter()
        .filter(|t| t.outcome == TestOutcome::Passed)
        .count();
    let ran = tests_total > 0;
    if !ran && reasons.is_empty() {
        reasons.push("no test ran".into());
    }
    if tests_passed < tests_total {
        reasons.push(format!(
            "{} of {tests_total} tests did not pass",
            tests_total - tests_passed
        ));
    }
    let passed = ran && tests_passed == tests_total && reasons.is_empty();
    let report = GateReport {
        passed,
        ran,
        tests_passed,
        tests_total,
        tests,
        runs: repeat,
        exit_codes,
        timed_out,
        oom_killed,
        duration_ms,
        sandbox,
        reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
    };
    Ok((report, artifacts, output))
}

/// The `junit-<run>.xml` a test run writes, as the sandbox collects it.
fn junit_rel(run: u32) -> String {
    format!("out/junit-{run}.xml")
}

/// The sandbox job of test run `run`: the implementation and the hidden tests in, the JUnit
/// report out, no network.
fn gate_job(task: &Task, impl_dir: &Path, timeout: Duration, run: u32) -> Job {
    let env = BTreeMap::from([
        (
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD".to_string(),
            "1".to_string(),
        ),
        ("PYTHONDONTWRITEBYTECODE".to_string(), "1".to_string()),
    ]);
    Job {
        inputs: vec![
            ("impl".into(), impl_dir.to_path_buf()),
            ("hidden".into(), task.hidden_dir.clone()),
        ],
        script: script(task, run),
        env,
        timeout,
        output_limit: 256 * 1024,
        collect: vec![junit_rel(run)],
        python: if task.gate.runner == Runner::Pytest {
            task.python_requirements.clone()
        } else {
            Vec::new()
        },
        // The hidden tests never get network, whatever the build had.
        network: false,
        collect_dir: None,
        gateway: None,
        image: None,
        limits: crate::sandbox::JobLimits::default(),
    }
}

/// What the test runs so far have shown.
#[derive(Default)]
struct Runs {
    /// The test cases of each run's JUnit report (none when it has none).
    per_run: Vec<Vec<junit::TestCase>>,
    exit_codes: Vec<Option<i32>>,
    timed_out: bool,
    oom_killed: bool,
    duration_ms: u64,
    /// Why the gate does not pass, so far.
    reasons: Vec<String>,
    /// The JUnit reports, by file name.
    artifacts: Vec<(String, Vec<u8>)>,
    /// Every run's output, for `output.txt`.
    output: String,
    /// The sandbox the runs used.
    sandbox: String,
}

impl Runs {
    fn record(&mut self, task: &Task, timeout: Duration, run: u32, r: &crate::sandbox::JobResult) {
        self.sandbox.clone_from(&r.sandbox);
        self.duration_ms += r.duration_ms;
        self.timed_out |= r.timed_out;
        self.oom_killed |= r.oom_killed;
        self.exit_codes.push(r.exit_code);
        let _ = write!(
            self.output,
            "=== run {run}: exit {:?}{} ===\n{}\n{}\n",
            r.exit_code,
            if r.timed_out { " (timed out)" } else { "" },
            r.stdout,
            r.stderr
        );
        if r.stdout_dropped + r.stderr_dropped > 0 {
            let _ = writeln!(
                self.output,
                "[{} bytes of output dropped]",
                r.stdout_dropped + r.stderr_dropped
            );
        }
        match r.files.get(&junit_rel(run)) {
            None => {
                self.reasons.push(if r.timed_out {
                    format!("run {run}: timed out after {}s before reporting", timeout.as_secs())
                } else if task.gate.runner == Runner::Command {
                    format!(
                        "run {run}: no JUnit report: the gate command {} without writing JUnit XML to $PIPE_JUNIT",
                        exit_text(r.exit_code, r.signal)
                    )
                } else {
                    format!(
                        "run {run}: no JUnit report: the test run {} before reporting",
                        exit_text(r.exit_code, r.signal)
                    )
                });
                self.per_run.push(Vec::new());
            }
            Some(xml) => self.junit(run, xml),
        }
        if r.oom_killed {
            self.reasons.push(format!(
                "run {run}: killed for exceeding the sandbox's memory limit (out of memory)"
            ));
        } else if r.exit_code != Some(0) && !r.timed_out {
            self.reasons.push(format!(
                "run {run}: the test runner {}",
                exit_text(r.exit_code, r.signal)
            ));
        }
    }

    /// Run `run`'s JUnit report: kept, and its test cases read.
    fn junit(&mut self, run: u32, xml: &[u8]) {
        self.artifacts
            .push((format!("junit-{run}.xml"), xml.to_vec()));
        match junit::parse(xml) {
            Ok(cases) => {
                if cases.is_empty() {
                    self.reasons.push(format!(
                        "run {run}: the JUnit report junit-{run}.xml lists no test case"
                    ));
                }
                self.per_run.push(cases);
            }
            Err(e) => {
                self.reasons
                    .push(format!("run {run}: junit-{run}.xml: {e}"));
                self.per_run.push(Vec::new());
            }
        }
    }
}

/// Merges runs: a test passes only if it passed in every run; flaky if the outcome varied.
fn merge_runs(per_run: &[Vec<junit::TestCase>]) -> Vec<GateTest> {
    let mut merged: BTreeMap<String, GateTest> = BTreeMap::new();
    for cases in per_run {
        for c in cases {
            let e = merged.entry(c.id.clone()).or_insert_with(|| GateTest {
                name: c.name.clone(),
                id: c.id.clone(),
                outcome: c.outcome,
                flaky: false,
                message: c.message.clone(),
            });
            if e.outcome != c.outcome {
                e.flaky = true;
                if e.outcome == TestOutcome::Passed {
                    e.outcome = c.outcome;
                    e.message.clone_from(&c.message);
                }
            }
        }
    }
    // A test missing from some run did not pass in that run.
    for t in merged.values_mut() {
        let seen = per_run
            .iter()
            .filter(|cases| cases.iter().any(|c| c.id == t.id))
            .count();
        if seen < per_run.len() && t.outcome == TestOutcome::Passed {
            t.outcome = TestOutcome::Error;
            t.flaky = true;
            t.message = "missing from a repeat run".into();
        }
    }
    merged.into_values().collect()
}

pub async fn run(ctx: &NodeCtx, stage: &GateStage, dir: &Path) -> Result<Vec<PathBuf>, NodeError> {
    let GateStage {
        timeout_secs,
        repeat,
    } = stage;
    let task = ctx.task();
    let build = ctx
        .upstream_of_kind(NodeKind::Build)
        .ok_or_else(|| NodeError::Internal("gate node without its build".into()))?;
    let b: BuildReport = ctx.read_output(build, BUILD_JSON)?;
    if !b.has_implementation() {
        return Ok(vec![write_output(
            dir,
            GATE_JSON,
            &GateReport::not_run("the build produced no implementation"),
        )?]);
    }
    let timeout = Duration::from_secs(timeout_secs.unwrap_or(task.gate.timeout_secs));
    let repeat = repeat.unwrap_or(task.gate.repeat).max(1);
    let (report, artifacts, output) = run_tests(
        &ctx.services.sandbox,
        task,
        &ctx.dir_of(build).join(FILES_DIR),
        timeout,
        repeat,
        &ctx.cancel,
    )
    .await?;
    let mut outputs = Vec::new();
    for (name, bytes) in artifacts {
        let path = dir.join(&name);
        crate::base::fsutil::write_replace(&path, &bytes).map_err(super::io(&path))?;
        outputs.push(PathBuf::from(name));
    }
    outputs.push(write_text(dir, OUTPUT_TXT, &output)?);
    outputs.push(write_output(dir, GATE_JSON, &report)?);
    Ok(outputs)
}
