//! `command`: a shell command per implementation in the sandbox (a linter, a line count), its
//! output and exit code recorded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::builds::report::BuildReport;
use super::{NodeCtx, NodeError, write_output};
use crate::config::CommandStage;
use crate::plan::NodeKind;
use crate::sandbox::Job;
use crate::stages::outputs::{BUILD_JSON, COMMAND_JSON, FILES_DIR};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandReport {
    pub command: String,
    pub ran: bool,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

pub async fn run(
    ctx: &NodeCtx,
    stage: &CommandStage,
    dir: &Path,
) -> Result<Vec<PathBuf>, NodeError> {
    let CommandStage {
        command,
        timeout_secs,
    } = stage;
    let build = ctx
        .upstream_of_kind(NodeKind::Build)
        .ok_or_else(|| NodeError::Internal("command node without its build".into()))?;
    let b: BuildReport = ctx.read_output(build, BUILD_JSON)?;
    if !b.has_implementation() {
        let report = CommandReport {
            command: command.clone(),
            ran: false,
            exit_code: None,
            timed_out: false,
            stdout: String::new(),
            stderr: String::new(),
            duration_ms: 0,
            reason: Some("the build produced no implementation".into()),
        };
        return Ok(vec![write_output(dir, COMMAND_JSON, &report)?]);
    }
    let mut env = BTreeMap::new();
    if let Some((_, model, sample)) = ctx.node.subject.implementation() {
        env.insert("PIPE_MODEL".into(), model.to_string());
        env.insert("PIPE_SAMPLE".into(), sample.to_string());
    }
    let job = Job {
        inputs: vec![("impl".into(), ctx.dir_of(build).join(FILES_DIR))],
        script: format!("cd \"$PIPE_WORK/impl\" && {command}"),
        env,
        timeout: Duration::from_secs(*timeout_secs),
        output_limit: 64 * 1024,
        collect: vec![],
        python: vec![],
        network: false,
        collect_dir: None,
        gateway: None,
        image: None,
        limits: crate::sandbox::JobLimits::default(),
    };
    let r = ctx.services.sandbox.run(&job, &ctx.cancel).await?;
    let report = CommandReport {
        command: command.clone(),
        ran: true,
        exit_code: r.exit_code,
        timed_out: r.timed_out,
        stdout: r.stdout,
        stderr: r.stderr,
        duration_ms: r.duration_ms,
        reason: None,
    };
    Ok(vec![write_output(dir, COMMAND_JSON, &report)?])
}
