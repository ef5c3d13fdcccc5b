//! Sandboxes: where model-written code runs. A [`Job`] names input directories, a command and
//! limits; a sandbox copies the inputs into a fresh workspace, runs the command with nothing of
//! pipe's environment, kills it at the timeout, caps its output and hands back the files asked
//! for. `local` runs on the host (under bubblewrap when installed); the Docker sandbox keeps the
//! same contract.

pub mod local;
pub mod python;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// One run in a fresh sandbox.
#[derive(Debug, Clone)]
pub struct Job {
    /// Host directories copied in, each under `$PIPE_WORK/<name>`.
    pub inputs: Vec<(String, PathBuf)>,
    /// The command, run with `sh -c`; it finds its inputs through `$PIPE_WORK`.
    pub script: String,
    /// Extra environment; the sandbox passes nothing else of the parent's.
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
    /// Bytes of stdout and of stderr kept; the rest is counted and dropped.
    pub output_limit: usize,
    /// Files (relative to `$PIPE_WORK`) to read back after the run.
    pub collect: Vec<String>,
    /// Python requirements the command needs (a cached venv on the local sandbox).
    pub python: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    /// Bytes dropped past the output limit.
    pub stdout_dropped: u64,
    pub stderr_dropped: u64,
    pub duration_ms: u64,
    /// Collected files that existed.
    #[serde(skip)]
    pub files: BTreeMap<String, Vec<u8>>,
    /// Which sandbox ran it (`local`, `local+bwrap`, `docker`).
    pub sandbox: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    #[error("interrupted")]
    Cancelled,
}

/// The sandbox a round uses.
#[derive(Debug, Clone)]
pub enum Sandbox {
    Local(local::LocalSandbox),
}

impl Sandbox {
    pub async fn run(
        &self,
        job: &Job,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<JobResult, SandboxError> {
        match self {
            Self::Local(l) => l.run(job, cancel).await,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Local(_) => "local",
        }
    }
}
