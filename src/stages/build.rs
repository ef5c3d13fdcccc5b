//! Build. `single-shot` harness: one prompt (the task spec and the starter workspace), one answer,
//! files parsed out of it. A rejected answer is a result (outcome `rejected`), not a failure.
//! A build stage with `harness = "command"` hands over to [`super::build_command`].
//! `agent` harness: a tool-calling loop in the sandbox (`stages/agent/`). The harness is the
//! model's own (`[[models]] harness`) or the build stage's.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::answer::{self, Rejection};
use super::{NodeCtx, NodeError, io, write_output, write_text};
use crate::config::{Harness, StageKind};
use crate::fsutil;
use crate::plan::Subject;
use crate::provider::{CallSite, ChatRequest, Message, Price, Usage};
use crate::templates::{self, BuildCtx, FileCtx, TaskCtx};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BuildOutcome {
    /// Files were produced.
    Completed,
    /// The answer was refused: a path outside the workspace, a protected file, or no files.
    Rejected,
    /// Command harness: the agent command exited non-zero or was killed.
    Failed,
    /// Command harness: the agent command ran past its timeout.
    TimedOut,
    /// Agent: the workspace stopped changing for `stagnation_steps` steps.
    Stagnated,
    /// Agent: steps, wall time or context (in the last pass) ran out before a verified `done`.
    Budget,
    /// Agent: the endpoint failed after its retries; nothing was built.
    Fault,
}

impl BuildOutcome {
    /// The build left an implementation to test and judge: completed, or an agent build that
    /// stagnated or ran out of budget (what it built is tested as it is). Rejected and faulted
    /// builds leave none.
    pub fn has_implementation(self) -> bool {
        matches!(self, Self::Completed | Self::Stagnated | Self::Budget)
    }
}

/// `build.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildReport {
    pub harness: Harness,
    pub outcome: BuildOutcome,
    pub model: String,
    pub model_slug: String,
    pub sample: u32,
    pub usage: Usage,
    pub cost_usd: f64,
    pub wall_ms: u64,
    pub latency_ms: u64,
    pub attempts: u32,
    pub loc: usize,
    pub files: Vec<String>,
    pub rejected: Vec<Rejection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Command harness: the agent command's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Command harness: where `usage` came from (`file`, `stdout`), or `none`: the CLI reported
    /// no tokens, and `usage` (zeros) means unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_source: Option<String>,
    /// Command harness: the cost the CLI itself reported, in USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_cost_usd: Option<f64>,
    /// Command harness: which sandbox ran the agent (`local+bwrap`, `docker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// The agent harness's account: steps, `done` rejections, passes, tool calls, refusals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<super::agent::AgentReport>,
}

impl BuildReport {
    /// There are files to test and judge.
    pub fn has_implementation(&self) -> bool {
        self.outcome.has_implementation() && !self.files.is_empty()
    }
}

impl BuildReport {
    /// The build's cost at `price`: tokens times price when the tokens are known and priced,
    /// else what the CLI reported, else zero.
    pub fn cost_at(&self, price: Price) -> f64 {
        let tokens_known = self.usage_source.as_deref() != Some(NO_USAGE);
        let priced = price.cost(self.usage);
        match self.reported_cost_usd {
            Some(reported) if !tokens_known || priced == 0.0 => reported,
            _ => priced,
        }
    }
}

/// [`BuildReport::usage_source`] when the CLI reported no tokens.
pub const NO_USAGE: &str = "none";

pub const FILES_DIR: &str = "files";

pub async fn run(ctx: &NodeCtx, dir: &Path) -> Result<Vec<PathBuf>, NodeError> {
    let p = ctx.pipeline();
    let kind = ctx.stage_kind();
    let StageKind::Build {
        prompt,
        command,
        agent,
        agent_prompt,
        ..
    } = kind
    else {
        unreachable!("dispatched by kind")
    };
    let Subject::Impl { model, sample, .. } = &ctx.node.subject else {
        unreachable!("build nodes are per implementation")
    };
    let m = p.model(model).expect("plan models come from the pipeline");
    let harness = kind.harness_for(m).expect("a build stage");
    if harness == Harness::Command {
        let Some(command) = command else {
            return Err(NodeError::Configuration(format!(
                "model `{model}` builds with harness `command`, but build stage `{}` has no [command] table",
                ctx.node.stage
            )));
        };
        return super::build_command::run(ctx, dir, prompt, command).await;
    }
    let bctx = prompt_context(ctx, model, *sample)?;
    if harness == Harness::Agent {
        let template = agent_prompt.as_ref().unwrap_or(prompt);
        let text =
            templates::render(template, &bctx).map_err(|d| NodeError::Internal(d.message))?;
        return super::agent::run(ctx, dir, m, agent, text).await;
    }
    let text = templates::render(prompt, &bctx).map_err(|d| NodeError::Internal(d.message))?;
    let mut outputs = vec![write_text(dir, "prompt.md", &text)?];
    let request = ChatRequest {
        model: m.model.clone(),
        messages: vec![Message::user(text)],
        sampling: m.sampling.clone(),
        json_schema: None,
        tools: Vec::new(),
    };
    let site = CallSite {
        stage: ctx.node.stage.clone(),
        model: model.clone(),
        // In a suite each task has its own recordings: `<model>/<task>/<sample>.yaml`.
        subject: ctx.build_subject(),
        turn: 0,
    };
    let t = Instant::now();
    let notify = ctx.notify();
    let response = tokio::select! {
        r = ctx.services.providers.chat(&m.provider, &site, &request, &notify) => r,
        () = ctx.cancel.cancelled() => return Err(NodeError::Cancelled),
    };
    let response = response?;
    let wall_ms = t.elapsed().as_millis() as u64;
    outputs.push(write_text(dir, "answer.md", &response.content)?);

    let task = ctx.task();
    let parsed = answer::parse(&response.content, &|rel: &Path| task.is_protected(rel));
    let (outcome, reason) = if !parsed.rejected.is_empty() {
        let list: Vec<String> = parsed
            .rejected
            .iter()
            .map(|r| format!("{} ({})", r.path, r.reason))
            .collect();
        (
            BuildOutcome::Rejected,
            Some(format!("answer refused: {}", list.join("; "))),
        )
    } else if parsed.files.is_empty() {
        (
            BuildOutcome::Rejected,
            Some("the answer holds no files (fenced blocks with path=...)".into()),
        )
    } else {
        (BuildOutcome::Completed, None)
    };
    let mut loc = 0;
    let mut files = Vec::new();
    if outcome == BuildOutcome::Completed {
        let root = dir.join(FILES_DIR);
        for f in &parsed.files {
            let path = root.join(&f.path);
            fsutil::write_replace(&path, f.content.as_bytes()).map_err(io(&path))?;
            let rel = Path::new(FILES_DIR).join(&f.path);
            outputs.push(rel);
            if task.is_source(&f.path) {
                loc += answer::loc(&f.content);
            }
            files.push(f.path.display().to_string());
        }
    }
    let report = BuildReport {
        harness,
        outcome,
        model: model.to_string(),
        model_slug: m.model.clone(),
        sample: *sample,
        usage: response.usage,
        cost_usd: m.price.cost(response.usage),
        wall_ms: if response.latency_ms > 0 {
            response.latency_ms
        } else {
            wall_ms
        },
        latency_ms: response.latency_ms,
        attempts: response.attempts,
        loc,
        files,
        rejected: parsed.rejected,
        reason,
        exit_code: None,
        usage_source: None,
        reported_cost_usd: None,
        sandbox: None,
        agent: None,
    };
    outputs.push(write_output(dir, "build.json", &report)?);
    Ok(outputs)
}

/// What the build prompt template sees: the task, its starter workspace, the protected globs.
pub(super) fn prompt_context(
    ctx: &NodeCtx,
    model: &str,
    sample: u32,
) -> Result<BuildCtx, NodeError> {
    let workspace = match &ctx.task().workspace_dir {
        Some(w) => fsutil::list_files(w)
            .map_err(io(w))?
            .into_iter()
            .map(|rel| {
                let content = std::fs::read_to_string(w.join(&rel)).unwrap_or_default();
                FileCtx {
                    path: rel.display().to_string(),
                    content,
                }
            })
            .collect(),
        None => Vec::new(),
    };
    Ok(BuildCtx {
        task: TaskCtx {
            name: ctx.task().name.to_string(),
            spec: ctx.task().spec.clone(),
        },
        workspace,
        protected: ctx.task().protected_patterns.clone(),
        model: model.to_string(),
        sample,
    })
}
