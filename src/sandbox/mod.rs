//! Sandboxes: where model-written code runs. A [`Job`] names input directories, a command and
//! limits; a sandbox copies the inputs into a fresh workspace, runs the command with nothing of
//! pipe's environment, kills it at the timeout, caps its output and hands back the files asked
//! for. `local` runs on the host under bubblewrap (or, unisolated, without it); the Docker sandbox
//! keeps the same contract.

pub mod bootstrap;
pub mod docker;
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
    /// Give the command network. Off for everything but a build whose pipeline asks for it
    /// (`harness = "command"` with `network = true`); the gate never has it.
    pub network: bool,
    /// A directory (relative to `$PIPE_WORK`) read back whole after the run.
    pub collect_dir: Option<CollectDir>,
    /// Resource limits of the job's processes (the local sandbox's rlimits; a Docker container
    /// has its own cgroup limits).
    pub limits: JobLimits,
}

/// What each process of a local job may use, set as rlimits before the command starts (under
/// bubblewrap too). The CPU time of each process is capped at the job's timeout plus a margin,
/// and no process writes a core file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobLimits {
    /// Address space of each process, in bytes; `None` leaves it unlimited (an agent CLI on V8 or
    /// JavaScriptCore reserves tens of GiB of address space it never touches).
    pub address_space: Option<u64>,
    /// Processes and threads the job may start, beyond those its user already has.
    pub processes: u64,
    /// The largest file a process may write, in bytes: a write past it kills the writer.
    pub file_size: u64,
}

impl Default for JobLimits {
    fn default() -> Self {
        Self {
            address_space: Some(2 << 30),
            processes: 256,
            file_size: 256 << 20,
        }
    }
}

/// A directory to read back after a job, within limits: regular files only (a symlink is never
/// followed, it and any special file are listed as refused), paths confined to the directory.
#[derive(Debug, Clone)]
pub struct CollectDir {
    /// Relative to `$PIPE_WORK`.
    pub dir: String,
    /// Directory names skipped wherever they appear (`.git`, `__pycache__`).
    pub skip: Vec<String>,
    pub max_files: usize,
    pub max_bytes: u64,
}

/// What [`CollectDir`] read back.
#[derive(Debug, Clone, Default)]
pub struct CollectedTree {
    /// Regular files by `/`-separated path relative to the directory.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Entries not read, with the reason (a symlink, a special file, a name that is not UTF-8).
    pub refused: Vec<(String, String)>,
    /// Set when the directory exceeded a limit; `files` is then incomplete.
    pub overflow: Option<String>,
    /// Bytes in `files`.
    pub bytes: u64,
}

impl CollectedTree {
    /// Adds one regular file, enforcing the limits; false once a limit is exceeded.
    pub fn add(&mut self, spec: &CollectDir, path: String, bytes: Vec<u8>) -> bool {
        if self.files.len() >= spec.max_files {
            self.overflow = Some(format!("more than {} files", spec.max_files));
            return false;
        }
        if self.bytes + bytes.len() as u64 > spec.max_bytes {
            self.overflow = Some(format!("more than {} bytes", spec.max_bytes));
            return false;
        }
        self.bytes += bytes.len() as u64;
        self.files.insert(path, bytes);
        true
    }

    /// True when `rel` (a path inside the collected directory) lies under a skipped directory.
    pub fn skipped(spec: &CollectDir, rel: &str) -> bool {
        let mut parts: Vec<&str> = rel.split('/').collect();
        parts.pop();
        parts.iter().any(|p| spec.skip.iter().any(|s| s == p))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// The kernel killed the job for exceeding its memory limit.
    #[serde(default)]
    pub oom_killed: bool,
    pub stdout: String,
    pub stderr: String,
    /// Bytes dropped past the output limit.
    pub stdout_dropped: u64,
    pub stderr_dropped: u64,
    pub duration_ms: u64,
    /// Collected files that existed.
    #[serde(skip)]
    pub files: BTreeMap<String, Vec<u8>>,
    /// The directory of [`Job::collect_dir`], when asked for and present.
    #[serde(skip)]
    pub tree: Option<CollectedTree>,
    /// Which sandbox ran it (`unisolated`, `local+bwrap`, `docker`).
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
    Docker(docker::DockerSandbox),
}

/// How many sandbox jobs run at once in this process: model code is CPU-bound, so more jobs than
/// cores only make every one of them slower (and their timeouts likelier).
static SLOTS: std::sync::LazyLock<tokio::sync::Semaphore> =
    std::sync::LazyLock::new(|| tokio::sync::Semaphore::new(default_slots()));

/// One sandbox job per core.
pub fn default_slots() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
}

/// Sets how many sandbox jobs may run at once (at least one). Call before any job starts.
pub fn set_slots(n: usize) {
    let n = n.max(1);
    let now = SLOTS.available_permits();
    if n > now {
        SLOTS.add_permits(n - now);
    } else if n < now {
        SLOTS.forget_permits(now - n);
    }
}

impl Sandbox {
    /// Runs a job once a slot is free (see [`set_slots`]).
    pub async fn run(
        &self,
        job: &Job,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<JobResult, SandboxError> {
        let _slot = tokio::select! {
            s = SLOTS.acquire() => s.map_err(|e| SandboxError::Setup(e.to_string()))?,
            () = cancel.cancelled() => return Err(SandboxError::Cancelled),
        };
        match self {
            Self::Local(l) => l.run(job, cancel).await,
            Self::Docker(d) => d.run(job, cancel).await,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Local(_) => "local",
            Self::Docker(_) => "docker",
        }
    }

    /// The sandbox for a round: `docker` needs an answering engine and the image; `auto` takes
    /// Docker when it can and otherwise falls back to `local`, saying what that loses. Leftover
    /// containers of the round (from a killed run) are removed first.
    pub async fn select(
        choice: SandboxChoice,
        image: &str,
        round: &str,
    ) -> Result<(Self, Option<String>), String> {
        // Whichever sandbox runs now, the workspaces a killed pipe left (copies of hidden tests
        // among them) go.
        local::sweep_leftovers();
        if choice == SandboxChoice::Local {
            return Ok((Self::Local(local::LocalSandbox::detect()), None));
        }
        let engine = match docker::connect().await {
            Ok(d) if docker::has_image(&d, image).await => Ok(d),
            Ok(_) => Err(format!(
                "the sandbox image `{image}` is missing: build it offline with `pipe sandbox bootstrap`"
            )),
            Err(e) => Err(format!("the Docker engine does not answer ({e})")),
        };
        match (engine, choice) {
            (Ok(d), _) => {
                docker::sweep(&d, Some(round)).await?;
                let sandbox = docker::DockerSandbox {
                    docker: d,
                    image: image.to_string(),
                    limits: docker::Limits::default(),
                    round: round.to_string(),
                };
                Ok((Self::Docker(sandbox), None))
            }
            (Err(e), SandboxChoice::Docker) => Err(e),
            (Err(e), _) => {
                let local = local::LocalSandbox::detect();
                let network = if local.bwrap {
                    ""
                } else {
                    ", and the host's files and network (bubblewrap is not installed)"
                };
                let warning = format!(
                    "{e}; running model code in the local sandbox instead: rlimits (address space, processes, CPU time) rather than a memory cgroup, no CPU share{network}"
                );
                Ok((Self::Local(local), Some(warning)))
            }
        }
    }
}

pub use crate::config::SandboxChoice;
