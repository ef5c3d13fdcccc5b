//! `pipe bench sandbox`: what one gate run costs in each sandbox, measured side by side (the runs
//! are interleaved, so a noisy machine slows all three alike) and reported as medians and ratios.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::base::stats::median;
use crate::config::task::Task;
use crate::sandbox::SandboxChoice;
use crate::sandbox::{Sandbox, docker::DEFAULT_IMAGE};
use crate::stages::gate;

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
    let pick = async |choice| {
        Sandbox::select(choice, false, &task.image, "bench")
            .await
            .map(|s| s.sandbox)
            .map_err(|e| e.to_string())
    };
    let local = pick(SandboxChoice::Local).await?;
    let docker = pick(SandboxChoice::Docker).await?;
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

/// Where a benchmark round is written: a fresh temp directory, removed afterwards.
fn scratch() -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix("pipe-bench-")
        .tempdir()
        .map_err(|e| format!("cannot make a temp directory: {e}"))
}

fn put(root: &std::path::Path, rel: &str, text: &str) -> Result<(), String> {
    let path = root.join(rel);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A small task whose hidden tests run in well under a second: `add(a, b)`.
fn tiny_task(root: &std::path::Path) -> Result<(), String> {
    put(
        root,
        "task/task.toml",
        "name = \"add\"\nspec = \"SPEC.md\"\nhidden_tests = \"hidden\"\nprotected = [\"test_*.py\", \"conftest.py\"]\n\n[gate]\nrunner = \"pytest\"\ntimeout_secs = 60\n\n[python]\nrequirements = [\"pytest==8.3.5\"]\n",
    )?;
    put(root, "task/SPEC.md", "Write `adder.py` with `add(a, b)`.\n")?;
    put(
        root,
        "task/hidden/conftest.py",
        "import os\nimport sys\n\nsys.path.append(os.environ[\"PIPE_IMPL_DIR\"])\n",
    )?;
    put(
        root,
        "task/hidden/test_add.py",
        "from adder import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
    )?;
    put(root, "build.md.j2", "{{ task.spec }}\n")
}

fn build_recording(model: &str, subject: &str) -> String {
    format!(
        "stage: build\nmodel: {model}\nsubject: \"{subject}\"\nturns:\n  - usage: {{ input_tokens: 100, output_tokens: 40 }}\n    answer: |\n      ```python path=adder.py\n      def add(a, b):\n          return a + b\n      ```\n"
    )
}

fn models_toml(n: usize, provider: &str) -> String {
    (0..n).fold(String::new(), |mut o, i| {
        let _ = write!(
            o,
            "[[models]]\nid = \"m{i:03}\"\nprovider = \"{provider}\"\nmodel = \"bench/m{i:03}\"\nprice = {{ input = 1.0, output = 2.0 }}\n\n"
        );
        o
    })
}

/// One `pipe run` of the real binary: wall time and the summary it prints.
fn run_round(
    dir: &std::path::Path,
    pipeline: &str,
    extra: &[&str],
) -> Result<(f64, serde_json::Value), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let t = Instant::now();
    let out = std::process::Command::new(exe)
        .current_dir(dir)
        .args(["run", pipeline, "--json"])
        .args(extra)
        .output()
        .map_err(|e| e.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "pipe run printed no summary ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if summary["failed"] != 0 || summary["skipped"] != 0 {
        return Err(format!(
            "the benchmark round did not finish cleanly: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok((secs, summary))
}

/// Peak resident set of the largest child process waited for so far, in MiB.
fn children_peak_rss_mib() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &raw mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}

/// `pipe bench engine`: the executor's own cost. A round of `nodes` build nodes (100 models)
/// whose work is instant (a replay provider with no latency), run cold and then fully cached.
pub fn engine(nodes: usize, runs: usize, jobs: Option<usize>) -> Result<String, String> {
    let models = 100.min(nodes.max(1));
    let samples = nodes.div_ceil(models);
    let tmp = scratch()?;
    let root = tmp.path();
    tiny_task(root)?;
    for m in 0..models {
        for s in 1..=samples {
            let model = format!("m{m:03}");
            put(
                root,
                &format!("rec/build/{model}/{s}.yaml"),
                &build_recording(&model, &s.to_string()),
            )?;
        }
    }
    put(
        root,
        "engine.toml",
        &format!(
            "[round]\nname = \"engine\"\ndate = \"2026-01-01\"\ntask = \"task\"\nsamples = {samples}\nsandbox = \"local\"\n\n[providers.replay]\nkind = \"replay\"\nrecordings = \"rec\"\n\n{}[stages.build]\nkind = \"build\"\nprompt = \"build.md.j2\"\n",
            models_toml(models, "replay")
        ),
    )?;
    let jobs_arg = jobs.map(|j| j.to_string());
    let mut extra: Vec<&str> = Vec::new();
    if let Some(j) = &jobs_arg {
        extra.extend(["--jobs", j]);
    }
    let (mut cold, mut cached) = (Vec::new(), Vec::new());
    let mut total = 0;
    for r in 0..runs {
        let out = format!("out-{r}");
        let mut args = extra.clone();
        args.extend(["--out", &out]);
        let (secs, summary) = run_round(root, "engine.toml", &args)?;
        total = summary["executed"].as_u64().unwrap_or(0);
        cold.push(secs);
        let (secs, summary) = run_round(root, "engine.toml", &args)?;
        if summary["cached"].as_u64() != Some(total) {
            return Err(format!("the re-run was not fully cached: {summary}"));
        }
        cached.push(secs);
    }
    let rss = children_peak_rss_mib();
    let (c, k) = (median(&cold).unwrap_or(0.0), median(&cached).unwrap_or(0.0));
    let mut o = String::new();
    let _ = writeln!(
        o,
        "engine: {total} build nodes ({models} models x {samples} samples, replayed, no latency), --jobs {}, median of {runs} run(s)\n",
        jobs.map_or_else(|| "16 (default)".to_string(), |j| j.to_string())
    );
    o.push_str("| run | wall s | per node | goal | vs goal |\n|---|---|---|---|---|\n");
    let per = |s: f64| format!("{:.0} µs", s * 1e6 / total.max(1) as f64);
    let _ = writeln!(
        o,
        "| cold, state committed durably | {c:.3} | {} | 3 s | {:.2}x |",
        per(c),
        c / 3.0
    );
    let _ = writeln!(
        o,
        "| fully cached re-run | {k:.3} | {} | 0.3 s | {:.2}x |",
        per(k),
        k / 0.3
    );
    let _ = writeln!(o, "\ncached / cold = {:.3}", k / c);
    let _ = writeln!(
        o,
        "peak RSS (largest run) = {rss:.1} MiB (goal 200 MiB, {:.2}x)",
        rss / 200.0
    );
    Ok(o)
}

/// `pipe bench concurrency`: a 7-model round (7 builds, 7 gates, 49 judgments) whose model calls
/// take `latency_ms +- jitter_ms`, against the lower bound no scheduler can beat at `--jobs`:
/// the longer of the critical path and the total work spread over `jobs` slots, both from the
/// node durations the run itself measured.
pub fn concurrency(
    latency_ms: u64,
    jitter_ms: u64,
    jobs: usize,
    runs: usize,
) -> Result<String, String> {
    let tmp = scratch()?;
    let root = tmp.path();
    write_concurrency_round(root, latency_ms, jitter_ms)?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let graph = std::process::Command::new(&exe)
        .current_dir(root)
        .args(["graph", "round.toml", "--format", "json"])
        .output()
        .map_err(|e| e.to_string())?;
    let graph: serde_json::Value =
        serde_json::from_slice(&graph.stdout).map_err(|e| format!("pipe graph: {e}"))?;
    let nodes = graph["nodes"].as_array().cloned().unwrap_or_default();
    // Warm the venv the gates use, outside the timing.
    run_round(
        root,
        "round.toml",
        &["--out", "warm", "--jobs", &jobs.to_string()],
    )?;
    let mut rows = Vec::new();
    for r in 0..runs {
        let out = format!("out-{r}");
        let (wall, summary) = run_round(
            root,
            "round.toml",
            &["--out", &out, "--jobs", &jobs.to_string()],
        )?;
        let ms: std::collections::HashMap<String, f64> = summary["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| {
                (
                    n["id"].as_str().unwrap_or_default().to_string(),
                    n["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0,
                )
            })
            .collect();
        let critical = critical_path(&nodes, &ms);
        let work: f64 = ms.values().sum();
        let bound = critical.max(work / jobs as f64);
        // What a run costs besides its nodes (process start, loading and checking the pipeline
        // and task, planning, reading records): the same round re-run fully cached.
        let (fixed, _) = run_round(
            root,
            "round.toml",
            &["--out", &out, "--jobs", &jobs.to_string()],
        )?;
        rows.push((wall, critical, work, bound, fixed));
    }
    let pick = |f: &dyn Fn(&(f64, f64, f64, f64, f64)) -> f64| {
        median(&rows.iter().map(f).collect::<Vec<_>>()).unwrap_or(0.0)
    };
    let (wall, critical, work, bound, fixed) = (
        pick(&|r| r.0),
        pick(&|r| r.1),
        pick(&|r| r.2),
        pick(&|r| r.3),
        pick(&|r| r.4),
    );
    let mut o = String::new();
    let _ = writeln!(
        o,
        "concurrency: {} nodes (7 builds, 7 gates, 49 judgments, aggregate, publish), model calls {latency_ms} ms +- {jitter_ms}, --jobs {jobs}, median of {runs} run(s)\n",
        nodes.len()
    );
    o.push_str("| figure | seconds |\n|---|---|\n");
    let _ = writeln!(o, "| wall (process start to exit) | {wall:.3} |");
    let _ = writeln!(
        o,
        "| critical path (measured node durations) | {critical:.3} |"
    );
    let _ = writeln!(o, "| total node work / jobs | {:.3} |", work / jobs as f64);
    let _ = writeln!(o, "| lower bound = max of the two | {bound:.3} |");
    let _ = writeln!(
        o,
        "| fixed cost: the same round re-run fully cached | {fixed:.3} |"
    );
    let _ = writeln!(
        o,
        "\nwall / lower bound = {:.3} (goal <= 1.10)",
        wall / bound
    );
    let _ = writeln!(
        o,
        "scheduling only: (wall - fixed cost) / lower bound = {:.3}",
        (wall - fixed) / bound
    );
    Ok(o)
}

/// The round of `pipe bench concurrency` under `root`: 7 models, replayed with model calls of
/// `latency_ms +- jitter_ms`, each judging every implementation.
fn write_concurrency_round(
    root: &std::path::Path,
    latency_ms: u64,
    jitter_ms: u64,
) -> Result<(), String> {
    const MODELS: usize = 7;
    tiny_task(root)?;
    put(
        root,
        "rubric.toml",
        include_str!("../../tests/fixtures/mini/rubric.toml"),
    )?;
    put(
        root,
        "judge.md.j2",
        include_str!("../../tests/fixtures/mini/judge.md.j2"),
    )?;
    let judgment = include_str!("../../tests/fixtures/mini/recordings/judge/ann/bob-1.yaml");
    for m in 0..MODELS {
        let model = format!("m{m:03}");
        put(
            root,
            &format!("rec/build/{model}/1.yaml"),
            &build_recording(&model, "1"),
        )?;
        for other in 0..MODELS {
            put(
                root,
                &format!("rec/judge/{model}/m{other:03}-1.yaml"),
                judgment,
            )?;
        }
    }
    put(
        root,
        "round.toml",
        &format!(
            "[round]\nname = \"concurrency\"\ndate = \"2026-01-01\"\ntask = \"task\"\nsandbox = \"local\"\n\n[providers.replay]\nkind = \"replay\"\nrecordings = \"rec\"\ndelay_ms = {latency_ms}\ndelay_jitter_ms = {jitter_ms}\n\n{}[stages.build]\nkind = \"build\"\nprompt = \"build.md.j2\"\n\n[stages.gate]\nkind = \"gate\"\nneeds = [\"build\"]\n\n[stages.judge]\nkind = \"judge\"\nneeds = [\"gate\"]\nprompt = \"judge.md.j2\"\nrubric = \"rubric.toml\"\n\n[stages.aggregate]\nkind = \"aggregate\"\nneeds = [\"judge\"]\n\n[stages.publish]\nkind = \"publish\"\nneeds = [\"aggregate\"]\nformats = [\"markdown\", \"json\"]\n",
            models_toml(MODELS, "replay")
        ),
    )?;
    Ok(())
}

/// The longest path through the graph's `nodes` (in topological order, as `pipe graph` lists
/// them), each node taking its measured `seconds`.
fn critical_path(
    nodes: &[serde_json::Value],
    seconds: &std::collections::HashMap<String, f64>,
) -> f64 {
    let mut finish: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
    for n in nodes {
        let id = n["id"].as_str().unwrap_or_default();
        let start = n["deps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| finish.get(d.as_str().unwrap_or_default()).copied())
            .fold(0.0, f64::max);
        finish.insert(id, start + seconds.get(id).copied().unwrap_or(0.0));
    }
    finish.values().copied().fold(0.0, f64::max)
}

/// `pipe bench resume`: a round run cold, then re-run with everything cached.
pub fn resume(pipeline: &std::path::Path, runs: usize) -> Result<String, String> {
    let dir = pipeline
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let file = pipeline
        .file_name()
        .ok_or("the pipeline has no file name")?
        .to_string_lossy()
        .into_owned();
    let tmp = scratch()?;
    let (mut cold, mut cached) = (Vec::new(), Vec::new());
    let mut nodes = 0;
    for r in 0..runs {
        let out = tmp.path().join(format!("out-{r}"));
        let out = out.to_string_lossy();
        let (secs, summary) = run_round(&dir, &file, &["--out", &out])?;
        nodes = summary["executed"].as_u64().unwrap_or(0);
        cold.push(secs);
        let (secs, summary) = run_round(&dir, &file, &["--out", &out])?;
        if summary["cached"].as_u64() != Some(nodes) {
            return Err(format!("the re-run was not fully cached: {summary}"));
        }
        cached.push(secs);
    }
    let (c, k) = (median(&cold).unwrap_or(0.0), median(&cached).unwrap_or(0.0));
    let mut o = String::new();
    let _ = writeln!(
        o,
        "resume: {} ({nodes} nodes), median of {runs} run(s)\n",
        pipeline.display()
    );
    o.push_str("| run | wall s |\n|---|---|\n");
    let _ = writeln!(o, "| first run | {c:.3} |");
    let _ = writeln!(o, "| re-run, fully cached | {k:.3} |");
    let _ = writeln!(o, "\ncached / first = {:.4} ({:.0}x faster)", k / c, c / k);
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_critical_path_is_the_longest_chain_of_measured_durations() {
        let nodes: Vec<serde_json::Value> = serde_json::from_str(
            r#"[{"id": "a", "deps": []}, {"id": "b", "deps": []},
                {"id": "c", "deps": ["a", "b"]}, {"id": "d", "deps": ["a"]}]"#,
        )
        .unwrap();
        let seconds = [("a", 1.0), ("b", 3.0), ("c", 0.5), ("d", 2.0)]
            .map(|(k, v)| (k.to_string(), v))
            .into_iter()
            .collect();
        // b -> c takes 3.5 s; a -> d 3 s.
        assert!((critical_path(&nodes, &seconds) - 3.5).abs() < 1e-9);
    }
}
