//! `pipe check-task`: each task's reference solution through the gate, and, for a task with an
//! `[agent]` table, through the visible verification an agent's `done` runs (with the visible
//! tests beside it, as in an agent's workspace); a task author's first tool.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::SandboxChoice;
use crate::diag::render_all;
use crate::sandbox::Sandbox;
use crate::stages::agent::{Verification, verify};
use crate::stages::gate::run_tests;
use crate::task::Task;

/// The reference and the visible tests in one workspace, verified as an agent's `done` would be.
/// `None` for a task without `[agent]`.
async fn visible_check(
    sandbox: &Sandbox,
    task: &Task,
    reference: &std::path::Path,
) -> Result<Option<Verification>, String> {
    let Some(agent) = &task.agent else {
        return Ok(None);
    };
    let ws = tempfile::tempdir().map_err(|e| e.to_string())?;
    crate::fsutil::copy_tree(reference, ws.path()).map_err(|e| e.to_string())?;
    if let (Some(dir), Some(name)) = (&agent.visible_dir, &agent.visible_name) {
        crate::fsutil::copy_tree(dir, &ws.path().join(name)).map_err(|e| e.to_string())?;
    }
    let timeout = Duration::from_secs(task.gate.timeout_secs);
    verify(sandbox, task, ws.path(), timeout, &CancellationToken::new())
        .await
        .map(Some)
        .map_err(|e| e.to_string())
}

pub async fn run(dirs: &[PathBuf], json: bool, choice: SandboxChoice) -> i32 {
    let mut results = Vec::new();
    let mut worst = 0;
    for dir in dirs {
        let task = match Task::load(dir) {
            Ok(t) => t,
            Err(diags) => {
                eprint!(
                    "{}",
                    render_all(&diags, &std::env::current_dir().unwrap_or_default())
                );
                worst = 2;
                continue;
            }
        };
        let Some(reference) = task.reference_dir.clone() else {
            eprintln!(
                "{}: the task names no `reference` solution",
                task.file.display()
            );
            worst = worst.max(1);
            continue;
        };
        let sandbox = match Sandbox::select(choice, &task.image, "check-task").await {
            Ok((s, warning)) => {
                if let Some(w) = warning {
                    eprintln!("warning: {w}");
                }
                s
            }
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        };
        let timeout = Duration::from_secs(task.gate.timeout_secs);
        match run_tests(
            &sandbox,
            &task,
            &reference,
            timeout,
            task.gate.repeat,
            &CancellationToken::new(),
        )
        .await
        {
            Ok((report, _, output)) => {
                let visible = match visible_check(&sandbox, &task, &reference).await {
                    Ok(v) => v,
                    Err(e) => {
                        eprintln!("{}: visible verification: {e}", task.name);
                        worst = worst.max(1);
                        continue;
                    }
                };
                if !report.passed || visible.as_ref().is_some_and(|v| !v.passed) {
                    worst = worst.max(1);
                }
                if let (false, Some(v)) = (json, &visible) {
                    println!(
                        "{} {}: reference passes the visible verification {}/{}{}",
                        if v.passed { "ok  " } else { "FAIL" },
                        task.name,
                        v.tests_passed,
                        v.tests_total,
                        v.reason
                            .as_ref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    );
                }
                if !json {
                    println!(
                        "{} {}: reference passes {}/{}{}",
                        if report.passed { "ok  " } else { "FAIL" },
                        task.name,
                        report.tests_passed,
                        report.tests_total,
                        report
                            .reason
                            .as_ref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    );
                    if !report.passed {
                        eprintln!("{output}");
                    }
                }
                results.push(serde_json::json!({
                    "task": task.name, "dir": dir, "passed": report.passed,
                    "tests_passed": report.tests_passed, "tests_total": report.tests_total, "reason": report.reason,
                    "visible": visible,
                }));
            }
            Err(e) => {
                eprintln!("{}: {e}", task.name);
                worst = worst.max(1);
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"tasks": results})).expect("json")
        );
    }
    worst
}
