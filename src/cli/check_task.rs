//! `pipe check-task`: each task's reference solution through the gate, `--jobs` at once, each in
//! its own fresh sandbox; a task author's first tool, and how an imported benchmark (HumanEval's
//! 164 problems) is checked whole. A directory without `task.toml` stands for the task
//! directories directly under it.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::base::diag::render_all;
use crate::base::interrupt::Interrupt;
use crate::cli::exit::{self, EXIT_FAILED, EXIT_INVALID, EXIT_OK};
use crate::config::task::Task;
use crate::sandbox::Sandbox;
use crate::sandbox::SandboxChoice;
use crate::stages::NodeError;
use crate::stages::builds::agent::verify;
use crate::stages::builds::report::Verification;
use crate::stages::gate::run_tests;

/// The reference and the visible tests in one workspace, verified as an agent's `done` would be.
/// `None` for a task without `[agent]`.
async fn visible_check(
    sandbox: &Sandbox,
    task: &Task,
    reference: &std::path::Path,
    cancel: &CancellationToken,
) -> Result<Option<Verification>, NodeError> {
    let Some(agent) = &task.agent else {
        return Ok(None);
    };
    let io = |e: std::io::Error| NodeError::Infrastructure(e.to_string());
    // The reference solution: for no other user's eyes (a job run as `nobody` among them).
    let ws = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .map_err(io)?;
    crate::base::fsutil::copy_tree(reference, ws.path()).map_err(io)?;
    if let (Some(dir), Some(name)) = (&agent.visible_dir, &agent.visible_name) {
        crate::base::fsutil::copy_tree(dir, &ws.path().join(name)).map_err(io)?;
    }
    let timeout = Duration::from_secs(task.gate.timeout_secs);
    Ok(Some(
        verify(sandbox, task, ws.path(), timeout, cancel).await?,
    ))
}

/// Lines of a failure's output the summary shows.
const FAILURE_LINES: usize = 8;

/// One task's result, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskResult {
    pub task: String,
    pub dir: PathBuf,
    pub passed: bool,
    pub tests_passed: usize,
    pub tests_total: usize,
    /// Why it did not pass, in words.
    pub reason: Option<String>,
    pub duration_ms: u64,
    pub sandbox: String,
    /// The runner's output (stdout and stderr), for a task that did not pass.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub output: String,
    /// For a task with `[agent]`: the reference with the visible tests, verified as an agent's
    /// `done` is. The task passes only when this passes too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visible: Option<Verification>,
}

/// The task directories `args` name: each argument that holds `task.toml`, or else every
/// directory directly under it that does, in natural order (`x-2` before `x-10`).
pub fn expand(args: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for arg in args {
        if arg.join("task.toml").is_file() || !arg.is_dir() {
            dirs.push(arg.clone());
            continue;
        }
        let mut children: Vec<PathBuf> = std::fs::read_dir(arg)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join("task.toml").is_file())
            .collect();
        if children.is_empty() {
            // Task::load says what is missing.
            dirs.push(arg.clone());
        }
        children.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
        dirs.extend(children);
    }
    dirs
}

/// Compares strings with runs of digits taken as numbers.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.chars().next(), b.chars().next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.len() - a.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                let db = b.len() - b.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                let (na, nb) = (
                    a[..da].trim_start_matches('0'),
                    b[..db].trim_start_matches('0'),
                );
                let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                (a, b) = (&a[da..], &b[db..]);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                (a, b) = (&a[x.len_utf8()..], &b[y.len_utf8()..]);
            }
        }
    }
}

pub async fn run(args: &[PathBuf], jobs: usize, json: bool, choice: SandboxChoice) -> i32 {
    let started = Instant::now();
    // Each problem in its own sandbox, `jobs` of them at once.
    crate::sandbox::set_slots(jobs);
    let cwd = std::env::current_dir().unwrap_or_default();
    let mut worst = EXIT_OK;
    let mut tasks = Vec::new();
    for dir in expand(args) {
        match Task::load(&dir) {
            Ok(t) => tasks.push(t),
            Err(diags) => {
                eprint!("{}", render_all(&diags, &cwd));
                worst = EXIT_INVALID;
            }
        }
    }
    let cancel = CancellationToken::new();
    let interrupt = Interrupt::listen(cancel.clone());
    // One sandbox per image, chosen (and its leftovers swept) once for the whole check.
    let mut sandboxes: BTreeMap<String, Sandbox> = BTreeMap::new();
    for task in &tasks {
        if sandboxes.contains_key(&task.image) {
            continue;
        }
        // No pipeline file here: `unisolated` is the only way to run without isolation.
        match crate::cli::sandbox::select_sandbox(choice, false, &task.image, "check-task").await {
            Some(s) => {
                sandboxes.insert(task.image.clone(), s);
            }
            None => return EXIT_INVALID,
        }
    }
    let bar = progress_bar(tasks.len() as u64, json);
    let print = |line: String| match &bar {
        Some(b) => b.println(line),
        None if !json => eprintln!("{line}"),
        None => {}
    };
    let mut results: Vec<(usize, TaskResult)> =
        futures_util::stream::iter(tasks.iter().enumerate())
            .map(|(i, task)| {
                let sandbox = &sandboxes[&task.image];
                let cancel = &cancel;
                async move { (i, check(sandbox, task, cancel).await) }
            })
            .buffer_unordered(jobs.max(1))
            .filter_map(|(i, r)| {
                let kept = match r {
                    Ok(r) => {
                        print(format!(
                            "{} {} {}/{}{}",
                            if r.passed { "  ok" } else { "FAIL" },
                            r.task,
                            r.tests_passed,
                            r.tests_total,
                            r.reason
                                .as_ref()
                                .map(|x| format!(" ({x})"))
                                .unwrap_or_default()
                        ));
                        Some((i, r))
                    }
                    Err(NodeError::Cancelled) => None,
                    Err(e) => {
                        print(format!("FAIL {}: {e}", tasks[i].name));
                        Some((i, sandbox_failure(&tasks[i], &e)))
                    }
                };
                if let Some(b) = &bar {
                    b.inc(1);
                }
                std::future::ready(kept)
            })
            .collect()
            .await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    // No check runs any more: whatever container an interrupted one left goes now.
    for sandbox in sandboxes.values() {
        if let Err(e) = sandbox.release().await {
            eprintln!("warning: cannot remove this check's sandbox containers: {e}");
        }
    }
    results.sort_by_key(|(i, _)| *i);
    let results: Vec<TaskResult> = results.into_iter().map(|(_, r)| r).collect();
    let failed = results.iter().filter(|r| !r.passed).count();
    let wall_ms = started.elapsed().as_millis() as u64;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "passed": results.len() - failed,
                "failed": failed,
                "interrupted": cancel.is_cancelled(),
                "wall_ms": wall_ms,
                "tasks": results,
            }))
            .expect("json")
        );
    } else {
        eprint!("{}", summary(&results, wall_ms));
    }
    if cancel.is_cancelled() {
        eprintln!("stopped by {}", interrupt.describe());
        exit::interrupted(&interrupt)
    } else if worst != EXIT_OK {
        worst
    } else if failed > 0 {
        EXIT_FAILED
    } else {
        EXIT_OK
    }
}

/// The reference solution of one task through its gate.
async fn check(
    sandbox: &Sandbox,
    task: &Task,
    cancel: &CancellationToken,
) -> Result<TaskResult, NodeError> {
    let Some(reference) = &task.reference_dir else {
        return Ok(TaskResult {
            task: task.name.to_string(),
            dir: task.dir.clone(),
            passed: false,
            tests_passed: 0,
            tests_total: 0,
            reason: Some(format!(
                "{}: the task names no `reference` solution",
                task.file.display()
            )),
            duration_ms: 0,
            sandbox: String::new(),
            output: String::new(),
            visible: None,
        });
    };
    let timeout = Duration::from_secs(task.gate.timeout_secs);
    let (report, _, output) =
        run_tests(sandbox, task, reference, timeout, task.gate.repeat, cancel).await?;
    let visible = visible_check(sandbox, task, reference, cancel).await?;
    let visible_failed = visible.as_ref().filter(|v| !v.passed).map(|v| {
        format!(
            "the visible verification fails on the reference: {}/{}{}",
            v.tests_passed,
            v.tests_total,
            v.reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )
    });
    let passed = report.passed && visible_failed.is_none();
    Ok(TaskResult {
        task: task.name.to_string(),
        dir: task.dir.clone(),
        passed,
        tests_passed: report.tests_passed,
        tests_total: report.tests_total,
        reason: report.reason.or(visible_failed),
        duration_ms: report.duration_ms,
        sandbox: report.sandbox,
        output: if passed { String::new() } else { output },
        visible,
    })
}

fn sandbox_failure(task: &Task, e: &NodeError) -> TaskResult {
    TaskResult {
        task: task.name.to_string(),
        dir: task.dir.clone(),
        passed: false,
        tests_passed: 0,
        tests_total: 0,
        reason: Some(e.to_string()),
        duration_ms: 0,
        sandbox: String::new(),
        output: String::new(),
        visible: None,
    }
}

fn progress_bar(total: u64, json: bool) -> Option<ProgressBar> {
    (std::io::stderr().is_terminal() && !json).then(|| {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("  check-task [{bar:24}] {pos}/{len} {elapsed}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    })
}

/// `N passed, M failed`, then each failure with the first lines of what its runner printed.
pub fn summary(results: &[TaskResult], wall_ms: u64) -> String {
    use std::fmt::Write as _;
    let failed: Vec<&TaskResult> = results.iter().filter(|r| !r.passed).collect();
    let mut o = format!(
        "{} tasks: {} passed, {} failed in {:.1}s\n",
        results.len(),
        results.len() - failed.len(),
        failed.len(),
        wall_ms as f64 / 1000.0
    );
    for r in failed {
        let _ = writeln!(
            o,
            "\nFAIL {} ({}): {}",
            r.task,
            r.dir.display(),
            r.reason.as_deref().unwrap_or("did not pass")
        );
        let lines: Vec<&str> = first_lines(&r.output);
        for l in &lines {
            let _ = writeln!(o, "    {l}");
        }
    }
    o
}

/// The first lines of a runner's output worth reading (the per-run headers and blanks dropped).
fn first_lines(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("=== run "))
        .take(FAILURE_LINES)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_takes_digits_as_numbers() {
        let mut v = vec!["he-10", "he-2", "he-1", "he-02b", "hf", "he-"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, vec!["he-", "he-1", "he-2", "he-02b", "he-10", "hf"]);
    }

    #[test]
    fn a_parent_directory_stands_for_its_task_directories() {
        let root = tempfile::tempdir().unwrap();
        for name in ["t-10", "t-2", "notes"] {
            std::fs::create_dir_all(root.path().join(name)).unwrap();
        }
        std::fs::write(root.path().join("t-10/task.toml"), "").unwrap();
        std::fs::write(root.path().join("t-2/task.toml"), "").unwrap();
        let direct = root.path().join("t-10");
        assert_eq!(
            expand(&[root.path().to_path_buf(), direct.clone()]),
            vec![root.path().join("t-2"), root.path().join("t-10"), direct]
        );
        // A directory with no task anywhere is kept, for Task::load to report.
        let empty = root.path().join("notes");
        assert_eq!(expand(std::slice::from_ref(&empty)), vec![empty]);
    }

    #[test]
    fn the_summary_counts_and_quotes_each_failure() {
        let ok = TaskResult {
            task: "a".into(),
            dir: "t/a".into(),
            passed: true,
            tests_passed: 1,
            tests_total: 1,
            reason: None,
            duration_ms: 5,
            sandbox: "unisolated".into(),
            output: String::new(),
            visible: None,
        };
        let bad = TaskResult {
            task: "b".into(),
            dir: "t/b".into(),
            passed: false,
            tests_passed: 0,
            tests_total: 1,
            reason: Some("1 of 1 tests did not pass".into()),
            output: "=== run 1: exit Some(1) ===\n\nTraceback (most recent call last):\nAssertionError\n"
                .into(),
            ..ok.clone()
        };
        assert_eq!(
            summary(&[ok, bad], 1500),
            "2 tasks: 1 passed, 1 failed in 1.5s\n\nFAIL b (t/b): 1 of 1 tests did not pass\n    Traceback (most recent call last):\n    AssertionError\n"
        );
    }
}
