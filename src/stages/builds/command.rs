//! Build, `command` harness: an external agent CLI (opencode, aider, claude, codex, ...) runs in
//! the build's sandbox. Its command line is the pipeline's `run` template rendered for the model;
//! it finds the rendered build prompt at `$PIPE_PROMPT`, works in `$PIPE_WORK/workspace` (its
//! cwd, seeded with the task's starter workspace), and may write its usage to `$PIPE_USAGE`.
//! Afterwards the workspace is collected into `files/` (protected files, links and files holding
//! a passed-in secret refused), so the gate and the judges see it as any other build.
//!
//! The sandbox has network only when the pipeline says `network = true`; the variables named in
//! `env` are read from pipe's environment at run time and reach the sandbox only: their values
//! (of 8 characters or more) are cut out of the recorded output, and a workspace file holding one
//! is refused.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::answer::{self, MAX_FILE_BYTES, Rejection};
use super::command_usage::{self, Reported};
use super::prompt::prompt_context;
use super::report::{BuildOutcome, BuildReport, NO_USAGE, write_files};
use crate::base::fsutil;
use crate::config::templates::{self, CommandCtx, CommandModelCtx, CommandTaskCtx};
use crate::config::{CommandHarness, Harness, ProviderKind, Template};
use crate::plan::Subject;
use crate::sandbox::{CollectDir, Job, JobLimits, JobResult};
use crate::stages::{NodeCtx, NodeError, io, write_output, write_text};
use crate::vocab::Usage;

/// Where the workspace, the prompt and the tools sit under `$PIPE_WORK`.
const WORKSPACE: &str = "workspace";
const PROMPT_DIR: &str = "prompt";
const TOOLS_DIR: &str = "tools";
/// `$PIPE_USAGE`, relative to `$PIPE_WORK` (outside the workspace: never collected).
const USAGE_FILE: &str = "out/usage.json";
/// Directories an agent or its tools leave behind that are not part of an implementation.
const SKIP_DIRS: [&str; 8] = [
    ".git",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "node_modules",
    ".venv",
    ".aider.tags.cache.v4",
];
/// Limits on the collected workspace.
pub const MAX_FILES: usize = 1000;
pub const MAX_BYTES: u64 = 32 << 20;
/// Passed-in values at least this long are cut out of the output and refused in files.
const MIN_SECRET_LEN: usize = 8;
/// Bytes of the agent's stdout and of its stderr kept in `agent-output.txt`.
const OUTPUT_LIMIT: usize = 256 * 1024;

/// The shell script the sandbox runs: the environment the agent relies on, then its command.
fn script(command_line: &str, tools: bool) -> String {
    let mut s = String::from(
        "mkdir -p \"$PIPE_WORK/out\" || exit 125\n\
         export PIPE_PROMPT=\"$PIPE_WORK/prompt/prompt.md\" PIPE_USAGE=\"$PIPE_WORK/out/usage.json\"\n",
    );
    if tools {
        s.push_str("export PATH=\"$PIPE_WORK/tools:$PATH\"\n");
    }
    s.push_str("cd \"$PIPE_WORK/workspace\" || exit 125\n");
    s.push_str(command_line);
    s.push('\n');
    s
}

/// Replaces every occurrence of a secret value by a marker.
fn redact(text: &str, secrets: &[(String, String)]) -> String {
    let mut out = text.to_string();
    for (name, value) in secrets {
        out = out.replace(value.as_str(), &format!("[{name} redacted]"));
    }
    out
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// How the run ended, as an outcome and a reason, before looking at the files.
fn run_outcome(r: &JobResult, timeout_secs: u64) -> Option<(BuildOutcome, String)> {
    if r.timed_out {
        return Some((
            BuildOutcome::TimedOut,
            format!("the agent command ran past its timeout of {timeout_secs}s and was killed"),
        ));
    }
    if r.oom_killed {
        return Some((
            BuildOutcome::Failed,
            "the agent command was killed for exceeding the sandbox's memory limit".into(),
        ));
    }
    match (r.exit_code, r.signal) {
        (Some(0), _) => None,
        (Some(c), _) => Some((
            BuildOutcome::Failed,
            format!("the agent command exited {c}"),
        )),
        (None, Some(s)) => Some((
            BuildOutcome::Failed,
            format!("the agent command was killed by signal {s}"),
        )),
        (None, None) => Some((
            BuildOutcome::Failed,
            "the agent command ended without an exit code".into(),
        )),
    }
}

/// The usage figures: the pipeline's `usage` file, then `$PIPE_USAGE`, then stdout.
fn reported_usage(r: &JobResult, usage_rel: Option<&str>) -> (Reported, &'static str) {
    let files = usage_rel
        .map(|u| format!("{WORKSPACE}/{u}"))
        .into_iter()
        .chain(std::iter::once(USAGE_FILE.to_string()));
    for f in files {
        if let Some(bytes) = r.files.get(&f) {
            let rep = command_usage::from_file(bytes);
            if !rep.is_empty() {
                return (rep, "file");
            }
        }
    }
    let rep = command_usage::from_stdout(&r.stdout);
    if rep.is_empty() {
        (rep, NO_USAGE)
    } else {
        (rep, "stdout")
    }
}

pub async fn run(
    ctx: &NodeCtx,
    dir: &Path,
    prompt: &Template,
    command: &CommandHarness,
) -> Result<Vec<PathBuf>, NodeError> {
    let p = ctx.pipeline();
    let task = ctx.task();
    let Subject::Impl { model, sample, .. } = &ctx.node.subject else {
        unreachable!("build nodes are per implementation")
    };
    let m = p.model(model).expect("plan models come from the pipeline");
    let text = templates::render_for_run(prompt, &prompt_context(ctx, model, *sample)?)
        .map_err(NodeError::Configuration)?;
    let mut outputs = vec![write_text(dir, "prompt.md", &text)?];
    let base_url = match p.providers.get(&m.provider).map(|pr| &pr.kind) {
        Some(ProviderKind::OpenAi { base_url, .. }) => base_url.clone(),
        _ => String::new(),
    };
    let cctx = CommandCtx {
        model: CommandModelCtx {
            id: model.to_string(),
            slug: m.model.clone(),
            provider: m.provider.clone(),
            base_url,
        },
        task: CommandTaskCtx {
            name: task.name.to_string(),
        },
        sample: *sample,
    };
    let command_line = templates::render(&command.run, &cctx).map_err(|d| {
        NodeError::Configuration(format!(
            "{}: the `run` template of build stage `{}`: {}",
            command.run.path.display(),
            ctx.node.stage,
            d.message
        ))
    })?;

    // The values of the variables the agent needs: read now, handed to the sandbox only.
    let mut secrets: Vec<(String, String)> = Vec::new();
    for name in &command.env {
        match std::env::var(name) {
            Ok(v) if !v.is_empty() => secrets.push((name.clone(), v)),
            _ => {
                return Err(NodeError::Configuration(format!(
                    "the variable `{name}` the agent command needs is not set: export it before `pipe run`"
                )));
            }
        }
    }
    let mut env: BTreeMap<String, String> = secrets.iter().cloned().collect();
    // A value this short is no credential and would match by accident: not searched for.
    secrets.retain(|(_, v)| v.len() >= MIN_SECRET_LEN);
    env.insert("PIPE_MODEL".into(), model.to_string());
    env.insert("PIPE_MODEL_SLUG".into(), m.model.clone());
    env.insert("PIPE_SAMPLE".into(), sample.to_string());
    env.insert("PIPE_TASK".into(), task.name.to_string());

    let staging = tempfile::Builder::new()
        .prefix("pipe-agent-")
        .tempdir()
        .map_err(|e| NodeError::Infrastructure(format!("temp dir: {e}")))?;
    let prompt_dir = staging.path().join(PROMPT_DIR);
    let prompt_file = prompt_dir.join("prompt.md");
    fsutil::write_atomic(&prompt_file, text.as_bytes()).map_err(io(&prompt_file))?;
    let workspace = if let Some(w) = &task.workspace_dir {
        w.clone()
    } else {
        let empty = staging.path().join(WORKSPACE);
        std::fs::create_dir_all(&empty).map_err(io(&empty))?;
        empty
    };
    let mut inputs = vec![
        (WORKSPACE.to_string(), workspace),
        (PROMPT_DIR.to_string(), prompt_dir),
    ];
    if let Some(tools) = &command.tools {
        inputs.push((TOOLS_DIR.to_string(), tools.clone()));
    }
    let mut collect = vec![USAGE_FILE.to_string()];
    if let Some(u) = &command.usage {
        collect.push(format!("{WORKSPACE}/{u}"));
    }
    let job = Job {
        inputs,
        script: script(&command_line, command.tools.is_some()),
        env,
        timeout: Duration::from_secs(command.timeout_secs),
        output_limit: OUTPUT_LIMIT,
        collect,
        python: Vec::new(),
        network: command.network,
        collect_dir: Some(CollectDir {
            dir: WORKSPACE.into(),
            skip: SKIP_DIRS.iter().map(ToString::to_string).collect(),
            max_files: MAX_FILES,
            max_bytes: MAX_BYTES,
        }),
        // An agent CLI runs on a JavaScript engine that reserves far more address space than it
        // uses: no address-space cap (Docker's memory limit still applies there).
        limits: JobLimits {
            address_space: None,
            ..JobLimits::default()
        },
    };
    let r = ctx.services.sandbox.run(&job, &ctx.cancel).await?;
    drop(staging);

    let mut transcript = format!(
        "$ {command_line}\n=== exit {} ({}){} ===\n=== stdout ===\n{}\n=== stderr ===\n{}\n",
        r.exit_code
            .map_or_else(|| "none".to_string(), |c| c.to_string()),
        r.sandbox,
        if r.timed_out { ", timed out" } else { "" },
        r.stdout,
        r.stderr
    );
    if r.stdout_dropped + r.stderr_dropped > 0 {
        let _ = writeln!(
            transcript,
            "[{} bytes of output dropped]",
            r.stdout_dropped + r.stderr_dropped
        );
    }
    outputs.push(write_text(
        dir,
        "agent-output.txt",
        &redact(&transcript, &secrets),
    )?);

    let (reported, source) = reported_usage(&r, command.usage.as_deref());
    let starter = starter_files(task.workspace_dir.as_deref())
        .map_err(|e| NodeError::Infrastructure(format!("reading the starter workspace: {e}")))?;
    let tree = r.tree.clone().unwrap_or_default();
    let mut rejected: Vec<Rejection> = tree
        .refused
        .iter()
        .map(|(path, reason)| Rejection {
            path: path.clone(),
            reason: reason.clone(),
        })
        .collect();
    let mut kept: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
    for (rel, bytes) in &tree.files {
        if command.usage.as_deref() == Some(rel.as_str()) {
            continue;
        }
        // A protected starter file left as given is the task's, not the agent's: not reported.
        if starter.get(rel) == Some(bytes) && task.is_protected(Path::new(rel)) {
            continue;
        }
        let reason = match answer::check_path(rel, &|p: &Path| task.is_protected(p)) {
            Err(reason) => Some(reason),
            Ok(_) if bytes.len() > MAX_FILE_BYTES => Some(format!(
                "file is {} bytes, over the limit of {MAX_FILE_BYTES} bytes",
                bytes.len()
            )),
            Ok(_) => secrets
                .iter()
                .find(|(_, v)| holds(bytes, v.as_bytes()))
                .map(|(name, _)| {
                    format!("holds the value of `{name}`, a secret passed to the agent")
                }),
        };
        match reason {
            Some(reason) => rejected.push(Rejection {
                path: rel.clone(),
                reason,
            }),
            None => {
                kept.insert(PathBuf::from(rel), bytes.clone());
            }
        }
    }
    rejected.sort_by(|a, b| a.path.cmp(&b.path));
    let unchanged = !kept.is_empty()
        && kept.len() == starter.len()
        && kept
            .iter()
            .all(|(p, b)| p.to_str().and_then(|p| starter.get(p)) == Some(b));
    let (outcome, reason) = if let Some(ended) = run_outcome(&r, command.timeout_secs) {
        (ended.0, Some(ended.1))
    } else if let Some(over) = &tree.overflow {
        (
            BuildOutcome::Rejected,
            Some(format!(
                "the workspace holds {over}, over the harness's limit of {MAX_FILES} files and {MAX_BYTES} bytes"
            )),
        )
    } else if kept.is_empty() {
        (
            BuildOutcome::Rejected,
            Some("the agent left no files in the workspace".into()),
        )
    } else if unchanged {
        (
            BuildOutcome::Rejected,
            Some("the agent left the starter workspace unchanged".into()),
        )
    } else {
        (BuildOutcome::Completed, None)
    };

    let (mut outcome, mut reason) = (outcome, reason);
    let mut loc = 0;
    let mut files = Vec::new();
    if outcome == BuildOutcome::Completed {
        let written = write_files(
            dir,
            kept.iter()
                .map(|(rel, bytes)| (rel.as_path(), bytes.as_slice())),
        )?;
        match written {
            Ok(written) => {
                outputs.extend(written);
                for (rel, bytes) in &kept {
                    if task.is_source(rel) {
                        loc += answer::loc(&String::from_utf8_lossy(bytes));
                    }
                    files.push(rel.display().to_string());
                }
            }
            Err(r) => {
                outcome = BuildOutcome::Rejected;
                reason = Some(format!(
                    "the workspace holds a file that cannot be written: {} ({})",
                    r.path, r.reason
                ));
                rejected.push(r);
            }
        }
    }
    let mut report = BuildReport {
        agent: None,
        harness: Harness::Command,
        outcome,
        model: model.to_string(),
        model_slug: m.model.clone(),
        sample: *sample,
        usage: reported.usage.unwrap_or(Usage::default()),
        cost_usd: 0.0,
        wall_ms: r.duration_ms,
        latency_ms: r.duration_ms,
        attempts: 1,
        loc,
        files,
        rejected,
        reason,
        exit_code: r.exit_code,
        usage_source: Some(source.to_string()),
        reported_cost_usd: reported.cost_usd,
        sandbox: Some(r.sandbox.clone()),
    };
    report.cost_usd = report.cost_at(m.price);
    outputs.push(write_output(dir, "build.json", &report)?);
    Ok(outputs)
}

/// The task's starter workspace, by `/`-separated relative path.
fn starter_files(dir: Option<&Path>) -> std::io::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    if let Some(dir) = dir {
        for rel in fsutil::list_files(dir)? {
            let bytes = std::fs::read(dir.join(&rel))?;
            out.insert(rel.to_string_lossy().replace('\\', "/"), bytes);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_cut_out_and_found_in_files() {
        let secrets = vec![("API_KEY".to_string(), "sk-123456".to_string())];
        assert_eq!(
            redact("key=sk-123456 again sk-123456", &secrets),
            "key=[API_KEY redacted] again [API_KEY redacted]"
        );
        assert!(holds(b"config: sk-123456\n", b"sk-123456"));
        assert!(!holds(b"config: sk-12345\n", b"sk-123456"));
        assert!(!holds(b"anything", b""));
    }

    #[test]
    fn the_script_sets_the_agent_environment_before_its_command() {
        let s = script("agent --go", true);
        let cd = s.find("cd \"$PIPE_WORK/workspace\"").unwrap();
        assert!(s.find("PIPE_PROMPT=").unwrap() < cd);
        assert!(s.find("$PIPE_WORK/tools:$PATH").unwrap() < cd);
        assert!(s.ends_with("agent --go\n"));
        assert!(!script("agent", false).contains("tools"));
    }
}
