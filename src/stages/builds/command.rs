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
use super::report::{
    BuildOutcome, BuildReport, GATEWAY_USAGE, NO_USAGE, Written, write_implementation,
};
use crate::base::fsutil;
use crate::config::task::Task;
use crate::config::templates::{self, CommandCtx, CommandModelCtx, CommandTaskCtx};
use crate::config::{CommandHarness, Harness, ModelConfig, ProviderKind, Template};
use crate::gateway::{self, Gateway, Stop};
use crate::plan::Subject;
use crate::sandbox::{CollectDir, CollectedTree, Job, JobLimits, JobResult};
use crate::stages::outputs::{AGENT_OUTPUT_TXT, BUILD_JSON, PROMPT_MD};
use crate::stages::{NodeCtx, NodeError, io, write_output, write_text};
use crate::vocab::Usage;

/// Where the workspace, the prompt and the tools sit under `$PIPE_WORK`.
const WORKSPACE: &str = "workspace";
const PROMPT_DIR: &str = "prompt";
const TOOLS_DIR: &str = "tools";
/// The gateway's relay, under `$PIPE_WORK` (outside the workspace: never collected).
const GATEWAY_DIR: &str = "pipe";
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
/// A Docker container's memory for an agent CLI (a test run gets the sandbox's default).
const AGENT_MEMORY_BYTES: u64 = 2 << 30;
/// Bytes of the agent's stdout and of its stderr kept in `agent-output.txt`.
const OUTPUT_LIMIT: usize = 256 * 1024;

/// The shell script the sandbox runs: the environment the agent relies on, then its command.
/// With the gateway, its relay starts first (in the background, on a free loopback port of the
/// sandbox's own network) and the CLI's base URL points at it.
fn script(command_line: &str, tools: bool, gateway: bool) -> String {
    let mut s = String::from(
        "mkdir -p \"$PIPE_WORK/out\" || exit 125\n\
         export PIPE_PROMPT=\"$PIPE_WORK/prompt/prompt.md\" PIPE_USAGE=\"$PIPE_WORK/out/usage.json\"\n",
    );
    if gateway {
        s.push_str(GATEWAY_PRELUDE);
    }
    if tools {
        s.push_str("export PATH=\"$PIPE_WORK/tools:$PATH\"\n");
    }
    s.push_str("cd \"$PIPE_WORK/workspace\" || exit 125\n");
    s.push_str(command_line);
    s.push('\n');
    s
}

/// Starts the gateway's relay and waits (up to 10 s) for its port; exports the base URL the
/// CLIs read (`OPENAI_BASE_URL`, `OPENAI_API_BASE`) and `PIPE_GATEWAY_URL`.
const GATEWAY_PRELUDE: &str = r#"python3 -I "$PIPE_WORK/pipe/relay.py" "$PIPE_GATEWAY_SOCKET" "$PIPE_WORK/pipe/port" 2>"$PIPE_WORK/pipe/relay.log" &
i=0
while [ ! -s "$PIPE_WORK/pipe/port" ]; do
  i=$((i + 1))
  if [ "$i" -gt 200 ]; then echo "pipe: the model gateway's relay did not start:" >&2; cat "$PIPE_WORK/pipe/relay.log" >&2; exit 125; fi
  sleep 0.05
done
PIPE_GATEWAY_URL="http://127.0.0.1:$(cat "$PIPE_WORK/pipe/port")/v1"
export PIPE_GATEWAY_URL OPENAI_BASE_URL="$PIPE_GATEWAY_URL" OPENAI_API_BASE="$PIPE_GATEWAY_URL"
"#;

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
    let task = ctx.task();
    let Subject::Impl { model, sample, .. } = &ctx.node.subject else {
        unreachable!("build nodes are per implementation")
    };
    let m = ctx
        .pipeline()
        .model(model)
        .expect("plan models come from the pipeline");
    let text = templates::render_for_run(prompt, &prompt_context(ctx, model, *sample)?)
        .map_err(NodeError::Configuration)?;
    let mut outputs = vec![write_text(dir, PROMPT_MD, &text)?];
    let command_line = command_line(ctx, command, m, *sample)?;
    let (mut env, mut secrets) = agent_env(command, m, *sample, &task.name)?;
    let gateway = open_gateway(ctx, command, m)?;
    if let Some(g) = &gateway {
        for name in ["PIPE_GATEWAY_TOKEN", "OPENAI_API_KEY"] {
            env.insert(name.into(), g.token().to_string());
        }
        secrets.push(("PIPE_GATEWAY_TOKEN".into(), g.token().to_string()));
    }
    let staging = tempfile::Builder::new()
        .prefix("pipe-agent-")
        .tempdir()
        .map_err(|e| NodeError::Infrastructure(format!("temp dir: {e}")))?;
    let mut job = agent_job(staging.path(), task, command, &command_line, &text, env)?;
    let r = match &gateway {
        Some(g) => {
            let relay = staging.path().join(GATEWAY_DIR);
            let relay_py = relay.join("relay.py");
            fsutil::write_atomic(&relay_py, gateway::RELAY_PY.as_bytes()).map_err(io(&relay_py))?;
            job.inputs.push((GATEWAY_DIR.to_string(), relay));
            job.gateway = Some(g.socket());
            let notify = ctx.notify();
            tokio::select! {
                r = ctx.services.sandbox.run(&job, &ctx.cancel) => r,
                never = g.serve(&ctx.services.providers, &notify) => match never {},
            }
        }
        None => ctx.services.sandbox.run(&job, &ctx.cancel).await,
    }?;
    drop(staging);
    let metered = gateway.map(Gateway::finish);
    match metered.as_ref().and_then(|f| f.stop.as_ref()) {
        Some(Stop::Budget(m)) => return Err(NodeError::Budget(m.clone())),
        Some(Stop::Setup(m)) => return Err(NodeError::Configuration(m.clone())),
        _ => {}
    }
    outputs.push(write_text(
        dir,
        AGENT_OUTPUT_TXT,
        &redact(&transcript(&command_line, &r), &secrets),
    )?);

    let (reported, source) = reported_usage(&r, command.usage.as_deref());
    let starter = starter_files(task.workspace_dir.as_deref())
        .map_err(|e| NodeError::Infrastructure(format!("reading the starter workspace: {e}")))?;
    let tree = r.tree.clone().unwrap_or_default();
    let (kept, mut rejected) = sort_workspace(&tree, command, task, &starter, &secrets);
    let (mut outcome, mut reason) = build_outcome(&r, &tree, command, &kept, &starter);
    if let Some(f) = &metered {
        (outcome, reason) = metered_outcome(f, outcome, reason);
    }
    let mut written = Written::default();
    if outcome.has_implementation() {
        match write_implementation(dir, task, &kept)? {
            Ok(w) => written = w,
            Err((r, why)) => {
                outcome = BuildOutcome::Rejected;
                reason = Some(why);
                rejected.push(r);
            }
        }
    }
    outputs.extend(written.outputs);
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
        throttled_ms: 0,
        loc: written.loc,
        files: written.files,
        rejected,
        reason,
        exit_code: r.exit_code,
        usage_source: Some(source.to_string()),
        reported_cost_usd: reported.cost_usd,
        reported_usage: None,
        gateway: None,
        sandbox: Some(r.sandbox.clone()),
    };
    if let Some(f) = metered {
        report.reported_usage = reported.usage;
        report.usage = f.usage;
        report.usage_source = Some(GATEWAY_USAGE.to_string());
        report.latency_ms = f.report.latency_ms;
        report.attempts = f.report.attempts;
        report.throttled_ms = f.report.throttled_ms;
        report.gateway = Some(f.report);
    }
    report.cost_usd = report.cost_at(m.price);
    outputs.push(write_output(dir, BUILD_JSON, &report)?);
    Ok(outputs)
}

/// The build's gateway, when the command has no network: the model's calls go through its
/// provider, recorded (or replayed) at this node's call site.
fn open_gateway(
    ctx: &NodeCtx,
    command: &CommandHarness,
    m: &ModelConfig,
) -> Result<Option<Gateway>, NodeError> {
    let Some(limits) = command.gateway else {
        return Ok(None);
    };
    let spec = gateway::Spec {
        provider: m.provider.clone(),
        model: m.model.clone(),
        sampling: m.sampling.clone(),
        price: Some(m.price),
        stage: ctx.node.stage.clone(),
        model_id: m.id.clone(),
        subject: ctx.node.subject.call_subject().unwrap_or_default(),
        limits,
    };
    Gateway::open(spec)
        .map(Some)
        .map_err(|e| NodeError::Infrastructure(format!("cannot open the model gateway: {e}")))
}

/// The outcome once the gateway's account is in: an endpoint that failed is a fault, a limit
/// reached is `budget` (what the CLI wrote by then is tested as it is).
fn metered_outcome(
    f: &gateway::Finished,
    outcome: BuildOutcome,
    reason: Option<String>,
) -> (BuildOutcome, Option<String>) {
    if let Some(Stop::Fault(m)) = &f.stop {
        return (
            BuildOutcome::Fault,
            Some(format!("the endpoint failed behind the gateway: {m}")),
        );
    }
    match &f.report.limit {
        Some(limit) => {
            let then = reason.map(|r| format!("; then {r}")).unwrap_or_default();
            (BuildOutcome::Budget, Some(format!("{limit}{then}")))
        }
        None => (outcome, reason),
    }
}

/// The pipeline's `run` template rendered for this model, task and sample.
fn command_line(
    ctx: &NodeCtx,
    command: &CommandHarness,
    m: &ModelConfig,
    sample: u32,
) -> Result<String, NodeError> {
    // Through the gateway the CLI's endpoint is the relay's, known once the sandbox runs.
    let base_url = match ctx.pipeline().providers.get(&m.provider).map(|pr| &pr.kind) {
        _ if command.gateway.is_some() => "${PIPE_GATEWAY_URL}".to_string(),
        Some(ProviderKind::OpenAi { base_url, .. }) => base_url.clone(),
        _ => String::new(),
    };
    let cctx = CommandCtx {
        model: CommandModelCtx {
            id: m.id.to_string(),
            slug: m.model.clone(),
            provider: m.provider.clone(),
            base_url,
        },
        task: CommandTaskCtx {
            name: ctx.task().name.to_string(),
        },
        sample,
    };
    templates::render(&command.run, &cctx).map_err(|d| {
        NodeError::Configuration(format!(
            "{}: the `run` template of build stage `{}`: {}",
            command.run.path.display(),
            ctx.node.stage,
            d.message
        ))
    })
}

/// The agent's environment: the variables it needs (read now, handed to the sandbox only) and
/// pipe's own; with the values to cut out of what it leaves (the ones long enough to search for).
fn agent_env(
    command: &CommandHarness,
    m: &ModelConfig,
    sample: u32,
    task: &str,
) -> Result<(BTreeMap<String, String>, Vec<(String, String)>), NodeError> {
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
    env.insert("PIPE_MODEL".into(), m.id.to_string());
    env.insert("PIPE_MODEL_SLUG".into(), m.model.clone());
    env.insert("PIPE_SAMPLE".into(), sample.to_string());
    env.insert("PIPE_TASK".into(), task.to_string());
    Ok((env, secrets))
}

/// The sandbox job: the workspace (the task's starter, or empty), the prompt and the tools in
/// under `$PIPE_WORK`; the usage file and the workspace collected. `staging` holds what pipe
/// writes for it and must outlive the run.
fn agent_job(
    staging: &Path,
    task: &Task,
    command: &CommandHarness,
    command_line: &str,
    prompt: &str,
    env: BTreeMap<String, String>,
) -> Result<Job, NodeError> {
    let prompt_dir = staging.join(PROMPT_DIR);
    let prompt_file = prompt_dir.join(PROMPT_MD);
    fsutil::write_atomic(&prompt_file, prompt.as_bytes()).map_err(io(&prompt_file))?;
    let workspace = if let Some(w) = &task.workspace_dir {
        w.clone()
    } else {
        let empty = staging.join(WORKSPACE);
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
    Ok(Job {
        inputs,
        script: script(
            command_line,
            command.tools.is_some(),
            command.gateway.is_some(),
        ),
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
        gateway: None,
        image: command.image.clone(),
        // An agent CLI runs on a JavaScript engine that reserves far more address space than it
        // uses: no address-space cap; in Docker a memory limit of its own.
        limits: JobLimits {
            address_space: None,
            memory: Some(AGENT_MEMORY_BYTES),
            ..JobLimits::default()
        },
    })
}

/// What the agent command printed, for `agent-output.txt` (before redaction).
fn transcript(command_line: &str, r: &JobResult) -> String {
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
    transcript
}

/// The collected workspace split into the files kept as the implementation and the ones refused
/// (sorted by path): protected starter files left as given are neither.
fn sort_workspace(
    tree: &CollectedTree,
    command: &CommandHarness,
    task: &Task,
    starter: &BTreeMap<String, Vec<u8>>,
    secrets: &[(String, String)],
) -> (Vec<(PathBuf, Vec<u8>)>, Vec<Rejection>) {
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
    (kept.into_iter().collect(), rejected)
}

/// How the build ended, and why when it is not completed: the run's own end first, then a
/// workspace over the limits, empty, or left as the starter.
fn build_outcome(
    r: &JobResult,
    tree: &CollectedTree,
    command: &CommandHarness,
    kept: &[(PathBuf, Vec<u8>)],
    starter: &BTreeMap<String, Vec<u8>>,
) -> (BuildOutcome, Option<String>) {
    let unchanged = !kept.is_empty()
        && kept.len() == starter.len()
        && kept
            .iter()
            .all(|(p, b)| p.to_str().and_then(|p| starter.get(p)) == Some(b));
    if let Some(ended) = run_outcome(r, command.timeout_secs) {
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
    }
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
        let s = script("agent --go", true, false);
        let cd = s.find("cd \"$PIPE_WORK/workspace\"").unwrap();
        assert!(s.find("PIPE_PROMPT=").unwrap() < cd);
        assert!(s.find("$PIPE_WORK/tools:$PATH").unwrap() < cd);
        assert!(s.ends_with("agent --go\n"));
        assert!(!script("agent", false, false).contains("tools"));
        let g = script("agent", false, true);
        assert!(g.find("relay.py").unwrap() < g.find("cd \"$PIPE_WORK/workspace\"").unwrap());
        assert!(g.contains("OPENAI_BASE_URL=\"$PIPE_GATEWAY_URL\""));
    }
}
