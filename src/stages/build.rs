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

/// A write that failed because of the path the build chose, not because of the host: a name the
/// file system refuses, a file where a directory must go or the reverse.
fn the_builds_fault(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::InvalidFilename
            | K::NotADirectory
            | K::IsADirectory
            | K::DirectoryNotEmpty
            | K::AlreadyExists
            | K::InvalidInput
    )
}

/// Writes a build's files into `dir/files/` and returns them as outputs. A file the file system
/// cannot take for its path (see [`the_builds_fault`]) is the build's doing: what was written is
/// removed and the refusal returned, for a rejected build, the same on every run. Any other
/// failure (a full disk, permissions) is the host's: a node failure, retried next run.
pub(super) fn write_files<'a>(
    dir: &Path,
    files: impl IntoIterator<Item = (&'a Path, &'a [u8])>,
) -> Result<Result<Vec<PathBuf>, Rejection>, NodeError> {
    let root = dir.join(FILES_DIR);
    let mut outputs = Vec::new();
    for (rel, bytes) in files {
        let path = root.join(rel);
        match fsutil::write_replace(&path, bytes) {
            Ok(()) => outputs.push(Path::new(FILES_DIR).join(rel)),
            Err(e) if the_builds_fault(&e) => {
                match std::fs::remove_dir_all(&root) {
                    Err(r) if r.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io(&root)(r));
                    }
                    _ => {}
                }
                return Ok(Err(Rejection {
                    path: rel.display().to_string(),
                    reason: format!("cannot be written: {e}"),
                }));
            }
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Ok(Ok(outputs))
}

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
        let text = templates::render_for_run(template, &bctx).map_err(NodeError::Configuration)?;
        return super::agent::run(ctx, dir, m, agent, text).await;
    }
    let text = templates::render_for_run(prompt, &bctx).map_err(NodeError::Configuration)?;
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
    outputs.push(write_text(dir, "answer.md", &response.content)?);

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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(
        dir: &Path,
        files: &[(&str, &str)],
    ) -> Result<Result<Vec<PathBuf>, Rejection>, NodeError> {
        write_files(
            dir,
            files.iter().map(|(p, c)| (Path::new(*p), c.as_bytes())),
        )
    }

    #[test]
    fn a_file_the_file_system_cannot_take_is_a_refusal_and_leaves_no_files() {
        let long = format!("{}.py", "n".repeat(297));
        let deep = format!("{}/x.py", vec!["d".repeat(99); 50].join("/"));
        let cases: [&[(&str, &str)]; 4] = [
            &[("a.py", "1"), ("a.py/b.py", "2")],
            &[("a.py/b.py", "2"), ("a.py", "1")],
            &[("ok.py", "1"), (&long, "2")],
            &[("ok.py", "1"), (&deep, "2")],
        ];
        for files in cases {
            let dir = tempfile::tempdir().unwrap();
            let refused = write(dir.path(), files)
                .expect("not a node failure")
                .expect_err("a refusal");
            assert_eq!(refused.path, files[1].0);
            assert!(
                refused.reason.starts_with("cannot be written: "),
                "{refused:?}"
            );
            assert!(!dir.path().join(FILES_DIR).exists());
        }
        let dir = tempfile::tempdir().unwrap();
        let written = write(dir.path(), &[("a.py", "1"), ("pkg/b.py", "2")])
            .unwrap()
            .unwrap();
        assert_eq!(
            written,
            [PathBuf::from("files/a.py"), PathBuf::from("files/pkg/b.py")]
        );
    }

    #[test]
    fn only_a_failure_of_the_path_is_the_builds_fault() {
        use std::io::{Error, ErrorKind};
        for errno in [
            libc::ENAMETOOLONG,
            libc::ENOTDIR,
            libc::EISDIR,
            libc::EEXIST,
        ] {
            assert!(
                the_builds_fault(&Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        for errno in [
            libc::ENOSPC,
            libc::EACCES,
            libc::EROFS,
            libc::EIO,
            libc::EDQUOT,
        ] {
            assert!(
                !the_builds_fault(&Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        assert!(!the_builds_fault(&Error::from(ErrorKind::Other)));
    }

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
