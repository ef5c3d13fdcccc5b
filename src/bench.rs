//! `pipe bench sandbox`: what one gate run costs in each sandbox, measured side by side (the runs
//! are interleaved, so a noisy machine slows all three alike) and reported as medians and ratios.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::SandboxChoice;
use crate::sandbox::{Sandbox, docker::DEFAULT_IMAGE};
use crate::stages::gate;
use crate::stats::median;
use crate::task::Task;

pub async fn sandbox(task_dir: &std::path::Path, runs: usize) -> Result<String, String> {
    let task = Task::load(task_dir).map_err(|d| {
        d.iter()
            .map(|x| x.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let reference = task
        .reference_dir
        .clone()
        .ok_or("the task has no reference solution")?;
    let reference = std::fs::canonicalize(&reference).map_err(|e| e.to_string())?;
    let hidden = std::fs::canonicalize(&task.hidden_dir).map_err(|e| e.to_string())?;
    let (local, _) = Sandbox::select(SandboxChoice::Local, &task.image, "bench").await?;
    let (docker, _) = Sandbox::select(SandboxChoice::Docker, &task.image, "bench").await?;
    let timeout = Duration::from_secs(task.gate.timeout_secs);
    let cancel = CancellationToken::new();
    // One gate run, as the gate stage does it; the venv is warmed before timing.
    gate::run_tests(&local, &task, &reference, timeout, 1, &cancel)
        .await
        .map_err(|e| e.to_string())?;
    let script = gate::script(&task, 1);
    let mut times: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut counts = [0usize; 3];
    for _ in 0..runs {
        let t = Instant::now();
        let (r, _, _) = gate::run_tests(&docker, &task, &reference, timeout, 1, &cancel)
            .await
            .map_err(|e| e.to_string())?;
        times[0].push(t.elapsed().as_secs_f64() * 1000.0);
        counts[0] = r.tests_passed;

        let t = Instant::now();
        let out = tokio::process::Command::new("docker")
            .args(["run", "--rm", "--network", "none", "--memory", "512m", "--memory-swap", "512m", "--pids-limit", "256"])
            .args(["--cpus", "1", "--read-only", "--tmpfs", "/tmp", "--user", "65534:65534", "--cap-drop", "ALL"])
            .args(["-e", "PIPE_WORK=/work", "-e", "HOME=/work/home", "-e", "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1", "-e", "PYTHONDONTWRITEBYTECODE=1"])
            .arg("--tmpfs")
            .arg("/work:uid=65534,gid=65534")
            .arg("-v")
            .arg(format!("{}:/src/impl:ro", reference.display()))
            .arg("-v")
            .arg(format!("{}:/src/hidden:ro", hidden.display()))
            .args([DEFAULT_IMAGE, "sh", "-c"])
            .arg(format!("mkdir -p /work/scratch /work/out && cp -r /src/impl /src/hidden /work/ && ({script}) >/dev/null; grep -o 'tests=\"[0-9]*\"' /work/out/junit-1.xml"))
            .output()
            .await
            .map_err(|e| e.to_string())?;
        times[1].push(t.elapsed().as_secs_f64() * 1000.0);
        if !out.status.success() {
            return Err(format!(
                "docker run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        counts[1] = String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_start_matches("tests=\"")
            .trim_end_matches('"')
            .parse()
            .unwrap_or(0);

        let t = Instant::now();
        let (r, _, _) = gate::run_tests(&local, &task, &reference, timeout, 1, &cancel)
            .await
            .map_err(|e| e.to_string())?;
        times[2].push(t.elapsed().as_secs_f64() * 1000.0);
        counts[2] = r.tests_passed;
    }
    let med: Vec<f64> = times.iter().map(|t| median(t).unwrap_or(0.0)).collect();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "one gate run of {} ({} hidden tests), median of {runs} interleaved runs each\n",
        task.name, counts[0]
    );
    o.push_str("| sandbox | median ms | min ms | max ms | tests passed | vs local |\n|---|---|---|---|---|---|\n");
    for (i, name) in [
        "docker via bollard (pipe)",
        "`docker run --rm` (CLI)",
        "local (pipe)",
    ]
    .iter()
    .enumerate()
    {
        let min = times[i].iter().copied().fold(f64::INFINITY, f64::min);
        let max = times[i].iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            o,
            "| {name} | {:.0} | {min:.0} | {max:.0} | {} | {:.2}x |",
            med[i],
            counts[i],
            med[i] / med[2]
        );
    }
    let _ = writeln!(o, "\nbollard / docker run --rm = {:.2}", med[0] / med[1]);
    Ok(o)
}
