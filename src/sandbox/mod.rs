//! Sandboxes: where model-written code runs. A [`Job`] names input directories, a command and
//! limits; a sandbox copies the inputs into a fresh workspace, runs the command with nothing of
//! pipe's environment, kills it at the timeout, caps its output and hands back the files asked
//! for. `local` runs on the host under bubblewrap (or, when explicitly chosen, `unisolated`:
//! without it); the Docker sandbox keeps the same contract. [`Sandbox::select`] never picks
//! `unisolated` on its own.

pub mod bootstrap;
pub mod choice;
pub mod clis;
pub mod docker;
pub mod local;
pub mod owner;
pub mod python;

pub use choice::SandboxChoice;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// Where an isolated job finds the directory of its model-gateway socket (bound read-only).
pub const GATEWAY_DIR: &str = "/run/pipe-gateway";

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
    /// The build's model-gateway socket on the host: its directory is bound in read-only, and
    /// the job finds the socket at `$PIPE_GATEWAY_SOCKET`. Only a command build without network
    /// has one.
    pub gateway: Option<PathBuf>,
    /// The image the job runs in instead of the sandbox's own: a command build's agent CLIs
    /// (`with = [...]`, built by `pipe sandbox bootstrap`). Only the Docker sandbox runs such a
    /// job; the local one refuses it.
    pub image: Option<String>,
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
    /// A container's memory in place of the sandbox's default (an agent CLI on a JavaScript
    /// engine needs more than a test run); `None` keeps the default.
    pub memory: Option<u64>,
}

impl Default for JobLimits {
    fn default() -> Self {
        Self {
            address_space: Some(2 << 30),
            processes: 256,
            file_size: 256 << 20,
            memory: None,
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
    /// Which sandbox ran it: [`LABEL_DOCKER`], [`LABEL_BWRAP`] or [`LABEL_UNISOLATED`].
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

    /// Removes whatever sandbox this process still holds: for Docker, every container it made.
    /// For the end of a run, once no job runs any more: a run interrupted past its deadline
    /// drops its jobs, and a dropped job may not have removed its container.
    pub async fn release(&self) -> Result<usize, String> {
        match self {
            Self::Local(_) => Ok(0),
            Self::Docker(d) => docker::remove_owned(&d.docker, &d.owner).await,
        }
    }

    /// The label jobs of this sandbox carry in their results (`JobResult::sandbox`, `gate.json`).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Local(l) if l.bwrap => LABEL_BWRAP,
            Self::Local(_) => LABEL_UNISOLATED,
            Self::Docker(_) => LABEL_DOCKER,
        }
    }

    /// True unless model code runs with no isolation at all.
    pub fn isolated(&self) -> bool {
        is_isolated(self.label())
    }

    /// The sandbox for a round, or why there is none; never unisolated unless `choice` is
    /// `unisolated` or `auto` with `unisolated_fallback`. `docker` needs an answering engine and
    /// the image; `local` needs a working bubblewrap; `auto` takes Docker, else bubblewrap, saying
    /// what the fallback loses. Leftover containers of the round (from a killed run) are removed
    /// first.
    pub async fn select(
        choice: SandboxChoice,
        unisolated_fallback: bool,
        image: &str,
        round: &str,
    ) -> Result<Selected, SelectError> {
        // Whichever sandbox runs now, the workspaces a killed pipe left (copies of hidden tests
        // among them) go.
        local::sweep_leftovers();
        match choice {
            SandboxChoice::Local => local_required().map(|l| Selected::quiet(Self::Local(l))),
            SandboxChoice::Unisolated => Ok(Selected {
                sandbox: Self::Local(local::LocalSandbox { bwrap: false }),
                warning: Some(unisolated_warning("`unisolated` was chosen")),
            }),
            SandboxChoice::Docker => {
                let engine = docker_engine(image).await.map_err(SelectError::Docker)?;
                docker_sandbox(engine, image, round).await
            }
            SandboxChoice::Auto => {
                let docker = match docker_engine(image).await {
                    Ok(engine) => return docker_sandbox(engine, image, round).await,
                    Err(e) => e,
                };
                let bwrap = match local_required() {
                    Ok(l) => {
                        let warning = format!(
                            "{docker}; running model code in the local sandbox under bubblewrap instead: rlimits rather than a container's cgroup limits, and no read-only image of its own"
                        );
                        return Ok(Selected {
                            sandbox: Self::Local(l),
                            warning: Some(warning),
                        });
                    }
                    Err(SelectError::Bubblewrap(why)) => why,
                    Err(e) => return Err(e),
                };
                if !unisolated_fallback {
                    return Err(SelectError::NoIsolation { docker, bwrap });
                }
                Ok(Selected {
                    sandbox: Self::Local(local::LocalSandbox { bwrap: false }),
                    warning: Some(unisolated_warning(&format!(
                        "`auto` found no isolating sandbox ({docker}; {bwrap}) and the round opts into `unisolated_fallback`"
                    ))),
                })
            }
        }
    }
}

/// The labels of [`JobResult::sandbox`].
pub const LABEL_DOCKER: &str = "docker";
pub const LABEL_BWRAP: &str = "local+bwrap";
pub const LABEL_UNISOLATED: &str = "unisolated";

/// True when a job with this label ran isolated (in a container or under bubblewrap). Anything
/// else, including the `local` of results written before `unisolated` had its own name (the
/// local sandbox without bubblewrap), is not.
pub fn is_isolated(label: &str) -> bool {
    label == LABEL_DOCKER || label == LABEL_BWRAP
}

/// A sandbox label as reports show it: the `local` of older results ran without bubblewrap.
pub fn canonical_label(label: &str) -> &str {
    if label == "local" {
        LABEL_UNISOLATED
    } else {
        label
    }
}

/// What [`Sandbox::select`] chose, with the warning to print when it is less than asked for.
#[derive(Debug)]
pub struct Selected {
    pub sandbox: Sandbox,
    pub warning: Option<String>,
}

impl Selected {
    fn quiet(sandbox: Sandbox) -> Self {
        Self {
            sandbox,
            warning: None,
        }
    }
}

/// Why no sandbox could be chosen; each names its fixes.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("{0}")]
    Docker(String),
    #[error(
        "the local sandbox needs bubblewrap, and {0}.\n  Install bubblewrap (`apt install bubblewrap`, `dnf install bubblewrap`), or choose `--sandbox docker` (`sandbox = \"docker\"`), or opt into running model code without any isolation with `--sandbox unisolated`"
    )]
    Bubblewrap(String),
    #[error(
        "no isolating sandbox on this machine: {docker}; {bwrap}.\n  Start Docker and build the image (`pipe sandbox bootstrap`), or install bubblewrap (`apt install bubblewrap`); or opt into running model code without any isolation: `unisolated_fallback = true` in [round] (for rounds you trust, such as replayed recordings), or `--sandbox unisolated`"
    )]
    NoIsolation { docker: String, bwrap: String },
    #[error("cannot prepare the Docker sandbox: {0}")]
    Sweep(String),
}

/// The engine, when it answers and has `image`; or why not.
async fn docker_engine(image: &str) -> Result<bollard::Docker, String> {
    match docker::connect().await {
        Ok(d) if docker::has_image(&d, image).await => Ok(d),
        Ok(_) => Err(format!(
            "the sandbox image `{image}` is missing: build it offline with `pipe sandbox bootstrap`"
        )),
        Err(e) => Err(format!("the Docker engine does not answer ({e})")),
    }
}

/// The Docker sandbox of a round, once the containers of pipes that are gone are removed (never
/// one whose owner still runs); a container the engine would not remove is a warning.
async fn docker_sandbox(
    engine: bollard::Docker,
    image: &str,
    round: &str,
) -> Result<Selected, SelectError> {
    let swept = docker::sweep(&engine).await.map_err(SelectError::Sweep)?;
    let warning = (!swept.failed.is_empty()).then(|| {
        format!(
            "cannot remove {} leftover sandbox container(s): {}",
            swept.failed.len(),
            swept.failed.join("; ")
        )
    });
    let sandbox = docker::DockerSandbox::new(engine, image, round).map_err(SelectError::Sweep)?;
    Ok(Selected {
        sandbox: Sandbox::Docker(sandbox),
        warning,
    })
}

/// The local sandbox under bubblewrap, or why bubblewrap does not work here.
fn local_required() -> Result<local::LocalSandbox, SelectError> {
    let local = local::LocalSandbox::detect();
    if local.bwrap {
        Ok(local)
    } else {
        Err(SelectError::Bubblewrap(bwrap_problem()))
    }
}

/// Why bubblewrap is not usable, in words (after [`local::LocalSandbox::detect`] found it not).
fn bwrap_problem() -> String {
    if std::env::var_os("PIPE_NO_BWRAP").is_some() {
        return "PIPE_NO_BWRAP is set (bubblewrap is treated as missing)".into();
    }
    let installed = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("bwrap").is_file()));
    if installed {
        "bubblewrap (`bwrap`) is installed but cannot create its namespaces here (unprivileged user namespaces may be disabled)".into()
    } else {
        "bubblewrap (`bwrap`) is not installed".into()
    }
}

/// The warning of a run whose model code has no isolation: what is lost, in full.
fn unisolated_warning(why: &str) -> String {
    format!(
        "MODEL CODE RUNS UNISOLATED: {why}.\n  Gates, command stages and agent commands run as you, on this machine: they can read pipe's environment (API keys included, through /proc), read and write every file you can, and reach the network.\n  The report marks each gate that ran this way."
    )
}

/// A word as a POSIX shell reads it back unchanged: left bare when it holds only safe
/// characters, else in single quotes.
pub fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./=:$\"".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
