//! Build. `single-shot` harness: one prompt (the task spec and the starter workspace), one answer,
//! files parsed out of it. A rejected answer is a result (outcome `rejected`), not a failure.
//! A build stage with `harness = "command"` hands over to [`command`].
//! `agent` harness: a tool-calling loop in the sandbox ([`agent`]). The harness is the
//! model's own (`[[models]] harness`) or the build stage's.

pub mod agent;
pub mod answer;
pub mod command;
pub mod command_usage;
pub mod prompt;
pub mod report;

use std::path::{Path, PathBuf};
use std::time::Instant;

use answer::Rejection;
use prompt::prompt_context;
use report::write_files;
use report::{BuildOutcome, BuildReport};

use crate::config::templates;
use crate::config::{BuildStage, Harness};
use crate::plan::Subject;
use crate::provider::{CallSite, ChatRequest, Message};
use crate::stages::outputs::{ANSWER_MD, BUILD_JSON, PROMPT_MD};
use crate::stages::{NodeCtx, NodeError, write_output, write_text};

/// Longest path a build's reason quotes; the refusals in `rejected` keep the whole path.
const REASON_PATH_BYTES: usize = 160;

/// Why a parsed answer is refused as a whole, if it is: over a limit, a refused file, no files.
fn refusal(parsed: &answer::Parsed) -> Option<String> {
    let mut why: Vec<String> = parsed.over.iter().cloned().collect();
    why.extend(parsed.rejected.iter().map(listed));
    if !why.is_empty() {
        return Some(format!("answer refused: {}", why.join("; ")));
    }
    parsed
        .files
        .is_empty()
        .then(|| "the answer holds no files (fenced blocks with path=...)".into())
}

/// A refusal as a reason lists it: the path (a long one shortened) and why.
fn listed(r: &Rejection) -> String {
    let path = if r.path.len() > REASON_PATH_BYTES {
        let mut end = REASON_PATH_BYTES;
        while !r.path.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... ({} bytes)", &r.path[..end], r.path.len())
    } else {
        r.path.clone()
    };
    format!("{path} ({})", r.reason)
}

pub async fn run(ctx: &NodeCtx, stage: &BuildStage, dir: &Path) -> Result<Vec<PathBuf>, NodeError> {
    let p = ctx.pipeline();
    let BuildStage {
        prompt,
        command,
        agent,
        agent_prompt,
        ..
    } = stage;
    let Subject::Impl { model, sample, .. } = &ctx.node.subject else {
        unreachable!("build nodes are per implementation")
    };
    let m = p.model(model).expect("plan models come from the pipeline");
    let harness = stage.harness_for(m);
    if harness == Harness::Command {
        let Some(command) = command else {
            return Err(NodeError::Configuration(format!(
                "model `{model}` builds with harness `command`, but build stage `{}` has no [command] table",
                ctx.node.stage
            )));
        };
        return command::run(ctx, dir, prompt, command).await;
    }
    let bctx = prompt_context(ctx, model, *sample)?;
    if harness == Harness::Agent {
        let template = agent_prompt.as_ref().unwrap_or(prompt);
        let text = templates::render_for_run(template, &bctx).map_err(NodeError::Configuration)?;
        return agent::run(ctx, dir, m, agent, text).await;
    }
    let text = templates::render_for_run(prompt, &bctx).map_err(NodeError::Configuration)?;
    let mut outputs = vec![write_text(dir, PROMPT_MD, &text)?];
    let request = ChatRequest {
        model: m.model.clone(),
        messages: vec![Message::user(text)],
        sampling: m.sampling.clone(),
        json_schema: None,
        tools: Vec::new(),
        tool_choice: None,
    };
    let site = CallSite {
        stage: ctx.node.stage.clone(),
        model: model.clone(),
        // In a suite each task has its own recordings: `<model>/<task>/<sample>.yaml`.
        subject: ctx.node.subject.call_subject().unwrap_or_default(),
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
    outputs.push(write_text(dir, ANSWER_MD, &response.content)?);

    let task = ctx.task();
    let mut parsed = answer::parse(&response.content, &|rel: &Path| task.is_protected(rel));
    let (mut outcome, mut reason) = match refusal(&parsed) {
        Some(why) => (BuildOutcome::Rejected, Some(why)),
        None => (BuildOutcome::Completed, None),
    };
    let mut loc = 0;
    let mut files = Vec::new();
    if outcome == BuildOutcome::Completed {
        let written = write_files(
            dir,
            parsed
                .files
                .iter()
                .map(|f| (f.path.as_path(), f.content.as_bytes())),
        )?;
        match written {
            Ok(written) => {
                outputs.extend(written);
                for f in &parsed.files {
                    if task.is_source(&f.path) {
                        loc += answer::loc(&f.content);
                    }
                    files.push(f.path.display().to_string());
                }
            }
            Err(r) => {
                outcome = BuildOutcome::Rejected;
                reason = Some(format!("answer refused: {}", listed(&r)));
                parsed.rejected.push(r);
            }
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
        throttled_ms: response.throttled_ms,
        loc,
        files,
        rejected: parsed.rejected,
        reason,
        exit_code: None,
        usage_source: None,
        reported_cost_usd: None,
        reported_usage: None,
        gateway: None,
        sandbox: None,
        agent: None,
    };
    outputs.push(write_output(dir, BUILD_JSON, &report)?);
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_path_is_shortened_in_the_reason_only() {
        let r = Rejection {
            path: "d/".repeat(2500),
            reason: "too long".into(),
        };
        let line = listed(&r);
        assert!(line.len() < 220, "{line}");
        assert!(line.ends_with("... (5000 bytes) (too long)"), "{line}");
        assert_eq!(
            listed(&Rejection {
                path: "a.py".into(),
                reason: "x".into()
            }),
            "a.py (x)"
        );
    }
}
