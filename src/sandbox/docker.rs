//! The Docker sandbox, through bollard: every job is its own container with no network, memory
//! (and swap), pids and CPU limits, a non-root user, a read-only root, all capabilities dropped.
//! Files go in and come out as tar streams on the container's attached stdin and stdout, through
//! a prologue that is the container's PID 1 (`prologue.py`; no bind mount of a host path, and no
//! archive API call); the workspace `/work` is a tmpfs with a hard size cap, gone with the
//! container. A timeout asks the prologue to kill the job and send what it wrote, then kills the
//! container; Ctrl-C kills it outright. Every container is removed afterwards, and is labelled
//! with the process that made it ([`Owner`]), so a sweep removes those a killed pipe left behind
//! and never one whose owner still runs.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::AttachContainerResults;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, ContainerSummary, HostConfig, HostConfigLogConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::owner::{Liveness, Owner};
use super::{CollectDir, CollectedTree, Job, JobResult, SandboxError};
use crate::base::fsutil;

/// The image pipe's own tasks use, built offline by `pipe sandbox bootstrap`.
pub const DEFAULT_IMAGE: &str = "pipe-sandbox/python:bookworm";
/// The user jobs run as (nobody).
pub const USER: u64 = 65534;
pub const LABEL_MANAGED: &str = "pipe.managed";
pub const LABEL_ROUND: &str = "pipe.round";
/// The process that made the container ([`Owner::label`]).
pub const LABEL_OWNER: &str = "pipe.owner";
/// Files (inodes) the workspace can hold: bounds the kernel memory a job can pin with empty
/// files, which the byte cap does not.
pub const WORK_INODES: u64 = 65_536;
/// The size of `/tmp` (a tmpfs too).
pub const TMP_BYTES: u64 = 64 << 20;

/// What one job's container may use. `/work` and `/tmp` are tmpfs: the files a job writes there
/// are memory, charged to the container's memory limit, so the defaults keep both caps well
/// under it (a full `/work` and `/tmp` still leave 192 MiB to the job's processes).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The container's memory limit (swap none), files in `/work` and `/tmp` included.
    pub memory_bytes: i64,
    pub pids: i64,
    pub nano_cpus: i64,
    /// The hard cap on the workspace `/work`: a write past it fails with ENOSPC.
    pub work_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 512 << 20,
            pids: 256,
            nano_cpus: 1_000_000_000,
            work_bytes: 256 << 20,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DockerSandbox {
    pub docker: Docker,
    pub image: String,
    pub limits: Limits,
    /// The round whose containers these are (a label, for the operator's eyes).
    pub round: String,
    /// This process: every container is labelled with it, so that no other pipe's sweep removes
    /// a container while this process runs.
    pub owner: std::sync::Arc<Owner>,
}

impl DockerSandbox {
    /// A sandbox on `docker` for the round, owned by this process, with the default limits.
    pub fn new(docker: Docker, image: &str, round: &str) -> Result<Self, String> {
        Ok(Self {
            docker,
            image: image.to_string(),
            limits: Limits::default(),
            round: round.to_string(),
            owner: std::sync::Arc::new(Owner::current()?),
        })
    }
}

/// Connects to the local engine and checks it answers.
pub async fn connect() -> Result<Docker, String> {
    let docker = Docker::connect_with_local_defaults().map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(3), docker.ping()).await {
        Ok(Ok(_)) => Ok(docker),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the Docker engine did not answer within 3 s".into()),
    }
}

/// True when the image is present locally.
pub async fn has_image(docker: &Docker, image: &str) -> bool {
    docker.inspect_image(image).await.is_ok()
}

/// pipe's containers: of one round, or all of them.
async fn summaries(docker: &Docker, round: Option<&str>) -> Result<Vec<ContainerSummary>, String> {
    let label = match round {
        Some(r) => format!("{LABEL_ROUND}={r}"),
        None => format!("{LABEL_MANAGED}=true"),
    };
    let filters: HashMap<String, Vec<String>> = HashMap::from([("label".to_string(), vec![label])]);
    docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| e.to_string())
}

/// The ids of pipe's containers: of one round, or all of them.
pub async fn list(docker: &Docker, round: Option<&str>) -> Result<Vec<String>, String> {
    Ok(summaries(docker, round)
        .await?
        .into_iter()
        .filter_map(|c| c.id)
        .collect())
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Containers removed: their owner is gone.
    pub removed: usize,
    /// Containers left: their owner still runs, or cannot be told from here (a pid of another
    /// pid namespace, or no owner label at all).
    pub alive: usize,
    /// Containers of a gone owner the engine would not remove, with its answer.
    pub failed: Vec<String>,
}

/// The owner a container's labels name; None for a container without a readable owner label.
fn owner_of(c: &ContainerSummary) -> Option<Owner> {
    c.labels
        .as_ref()
        .and_then(|l| l.get(LABEL_OWNER))
        .and_then(|v| Owner::parse(v))
}

/// Removes every pipe container whose owner is gone (see [`Owner`]): a killed pipe's leftovers,
/// of any round. A container whose owner runs (another `pipe run`, `pipe check-task`, this
/// process) is left alone, whatever its round.
pub async fn sweep(docker: &Docker) -> Result<Swept, String> {
    let here = Owner::current()?;
    let mut swept = Swept::default();
    for c in summaries(docker, None).await? {
        let Some(id) = c.id.as_deref() else { continue };
        // No owner label: made by a pipe from before containers had one, which may still run
        // (another checkout, another user's). It is left for the operator (`docker rm`).
        let live = owner_of(&c).map_or(Liveness::Unknown, |o| o.liveness(&here));
        if live != Liveness::Gone {
            swept.alive += 1;
            continue;
        }
        match try_remove(docker, id).await {
            Ok(true) => swept.removed += 1,
            // Removed meanwhile (by its own owner's last act, or another sweep).
            Ok(false) => {}
            Err(e) => swept.failed.push(format!("{}: {e}", short(id))),
        }
    }
    Ok(swept)
}

/// Removes every container `owner` made; for the owner itself, once it runs no job any more (a
/// run that was interrupted may have been cut off between a kill and its removal).
pub async fn remove_owned(docker: &Docker, owner: &Owner) -> Result<usize, String> {
    let mut removed = 0;
    for c in summaries(docker, None).await? {
        if owner_of(&c).as_ref() == Some(owner)
            && let Some(id) = c.id.as_deref()
            && try_remove(docker, id).await?
        {
            removed += 1;
        }
    }
    Ok(removed)
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Removes a container (killing it if it runs) with its anonymous volumes, whatever comes of it.
pub(super) async fn remove(docker: &Docker, id: &str) {
    let _ = try_remove(docker, id).await;
}

/// Removes a container (killing it if it runs) with its anonymous volumes. False when there is
/// no such container (any more).
async fn try_remove(docker: &Docker, id: &str) -> Result<bool, String> {
    let removed = docker
        .remove_container(
            id,
            Some(
                RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        )
        .await;
    match removed {
        Ok(()) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        // Already being removed by someone else.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            message,
        }) if message.contains("already in progress") => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// The job's inputs as a tar owned by the sandbox user, laid out under `/work`.
fn input_tar(job: &Job) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str| -> std::io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_uid(USER);
        h.set_gid(USER);
        h.set_size(0);
        b.append_data(&mut h, path, std::io::empty())
    };
    for d in ["scratch", "tmp", "home", "out"] {
        dir(&mut b, d)?;
    }
    for (name, src) in &job.inputs {
        dir(&mut b, name)?;
        for rel in fsutil::list_files(src)? {
            let data = std::fs::read(src.join(&rel))?;
            let mut parent = Path::new(name).to_path_buf();
            for comp in rel.parent().into_iter().flat_map(Path::components) {
                parent.push(comp);
                dir(&mut b, &parent.to_string_lossy())?;
            }
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            // Executables (a task's or a harness's tools) stay executable.
            h.set_mode(if is_executable(&src.join(&rel)) {
                0o755
            } else {
                0o644
            });
            h.set_uid(USER);
            h.set_gid(USER);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, Path::new(name).join(&rel), data.as_slice())?;
        }
    }
    b.into_inner()
}

/// PID 1 of a job's container: unpacks the inputs from stdin, runs the job, sends the results
/// back on stdout after a marker (see the file for the protocol).
const PROLOGUE: &str = include_str!("prologue.py");

fn prologue_cmd(job: &Job) -> Vec<String> {
    let mut cmd: Vec<String> = vec![
        "python3".into(),
        "-I".into(),
        "-S".into(),
        "-c".into(),
        PROLOGUE.into(),
        job.script.clone(),
    ];
    match &job.collect_dir {
        Some(spec) => cmd.extend([
            spec.dir.clone(),
            spec.max_files.to_string(),
            spec.max_bytes.to_string(),
            spec.skip.len().to_string(),
        ]),
        None => cmd.extend([String::new(), "0".into(), "0".into(), "0".into()]),
    }
    if let Some(spec) = &job.collect_dir {
        cmd.extend(spec.skip.iter().cloned());
    }
    cmd.extend(job.collect.iter().cloned());
    cmd
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

/// How long a timed-out job's prologue has to kill what runs and send the files written so far
/// before the container is killed outright.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The mount options of the workspace: a tmpfs of `bytes` at most, owned by the sandbox user;
/// unlike `/tmp` it allows executables (a task's or a harness's tools run from there).
fn work_tmpfs(bytes: u64) -> String {
    format!(
        "rw,exec,nosuid,nodev,size={bytes},nr_inodes={WORK_INODES},uid={USER},gid={USER},mode=0755"
    )
}

impl DockerSandbox {
    /// Runs the job in a container of its own, removed afterwards whatever happened.
    pub async fn run(
        &self,
        job: &Job,
        cancel: &CancellationToken,
    ) -> Result<JobResult, SandboxError> {
        let setup = |e: &dyn std::fmt::Display| SandboxError::Setup(format!("docker: {e}"));
        let name = format!(
            "pipe-{}-{:08x}",
            sanitize(&self.round),
            rand::random::<u32>()
        );
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                self.container(job),
            )
            .await
            .map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                } => SandboxError::Setup(match &job.image {
                    Some(image) => format!(
                        "docker: the agent CLI image `{image}` is not found; build it offline with `pipe sandbox bootstrap --pipeline <this pipeline>`"
                    ),
                    None => format!(
                        "docker: image `{}` not found; build it offline with `pipe sandbox bootstrap`",
                        self.image
                    ),
                }),
                e => setup(&e),
            })?;
        let id = created.id;
        let result = self.run_created(&id, job, cancel).await;
        remove(&self.docker, &id).await;
        result
    }

    /// The container of one job.
    fn container(&self, job: &Job) -> ContainerCreateBody {
        let mut env = vec![
            "PIPE_WORK=/work".to_string(),
            "HOME=/work/home".to_string(),
            "TMPDIR=/work/tmp".to_string(),
            "LANG=C.UTF-8".to_string(),
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ];
        env.extend(job.env.iter().map(|(k, v)| format!("{k}={v}")));
        let memory = job
            .limits
            .memory
            .and_then(|m| i64::try_from(m).ok())
            .unwrap_or(self.limits.memory_bytes);
        let mut binds = Vec::new();
        if let Some(socket) = &job.gateway
            && let (Some(dir), Some(name)) = (socket.parent(), socket.file_name())
        {
            binds.push(format!("{}:{}:ro", dir.display(), super::GATEWAY_DIR));
            env.push(format!(
                "PIPE_GATEWAY_SOCKET={}/{}",
                super::GATEWAY_DIR,
                name.to_string_lossy()
            ));
        }
        let labels = HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_ROUND.to_string(), self.round.clone()),
            (LABEL_OWNER.to_string(), self.owner.label()),
        ]);
        ContainerCreateBody {
            image: Some(job.image.clone().unwrap_or_else(|| self.image.clone())),
            cmd: Some(prologue_cmd(job)),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(true),
            tty: Some(false),
            env: Some(env),
            user: Some(format!("{USER}:{USER}")),
            // The prologue starts in /work and runs the job in /work/scratch once it has
            // unpacked the inputs.
            working_dir: Some("/work".into()),
            labels: Some(labels),
            network_disabled: Some(!job.network),
            host_config: Some(HostConfig {
                network_mode: Some(if job.network { "bridge" } else { "none" }.into()),
                // The model gateway's socket, the one way out of a container without network.
                binds: (!binds.is_empty()).then_some(binds),
                memory: Some(memory),
                memory_swap: Some(memory),
                pids_limit: Some(self.limits.pids),
                nano_cpus: Some(self.limits.nano_cpus),
                readonly_rootfs: Some(true),
                // The workspace and /tmp are memory with a hard cap each, not the engine's disk.
                tmpfs: Some(HashMap::from([
                    ("/work".to_string(), work_tmpfs(self.limits.work_bytes)),
                    (
                        "/tmp".to_string(),
                        format!("rw,nosuid,nodev,size={TMP_BYTES},nr_inodes=16384"),
                    ),
                ])),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                // The output is read from the attach stream; the engine keeps no log of it.
                log_config: Some(HostConfigLogConfig {
                    typ: Some("none".into()),
                    config: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn run_created(
        &self,
        id: &str,
        job: &Job,
        cancel: &CancellationToken,
    ) -> Result<JobResult, SandboxError> {
        let setup = |e: &dyn std::fmt::Display| SandboxError::Setup(format!("docker: {e}"));
        let tar = input_tar(job).map_err(|e| setup(&e))?;
        let nonce = format!("{:032x}", rand::random::<u128>());
        let mut marker = b"\n\0pipe-result-".to_vec();
        marker.extend_from_slice(nonce.as_bytes());
        marker.push(0);
        // Attached before the start, so nothing of the output is missed: the inputs go in on
        // stdin, the job's output and then the results come out on stdout and stderr.
        let AttachContainerResults { output, mut input } = self
            .docker
            .attach_container(
                id,
                Some(
                    AttachContainerOptionsBuilder::default()
                        .stdin(true)
                        .stdout(true)
                        .stderr(true)
                        .stream(true)
                        .build(),
                ),
            )
            .await
            .map_err(|e| setup(&e))?;
        let reader = tokio::spawn(read_attach(
            output,
            marker,
            job.output_limit,
            result_cap(job),
        ));
        let mut stdin = format!("{nonce}{:016x}", tar.len()).into_bytes();
        stdin.extend_from_slice(&tar);
        drop(tar);
        // The engine takes the input once the container runs; the prologue reads exactly the
        // announced length, so stdin need not be closed.
        let writer = tokio::spawn(async move {
            let _ = input.write_all(&stdin).await;
            let _ = input.flush().await;
            input
        });
        let start = Instant::now();
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| setup(&e))?;
        let mut timed_out = false;
        let mut cancelled = false;
        let mut wait = self.docker.wait_container(id, None);
        tokio::select! {
            _ = wait.next() => {}
            () = tokio::time::sleep(job.timeout) => timed_out = true,
            () = cancel.cancelled() => cancelled = true,
        }
        drop(wait);
        if timed_out {
            // The prologue kills the job and sends what it wrote (the workspace is a tmpfs: it
            // is gone once the container stops); should it not finish, the kill below stops it.
            self.signal(id, "USR1").await;
            let mut wait = self.docker.wait_container(id, None);
            let stopped = tokio::select! {
                r = tokio::time::timeout(STOP_GRACE, wait.next()) => r.is_ok(),
                () = cancel.cancelled() => { cancelled = true; false }
            };
            drop(wait);
            if !stopped {
                self.kill(id).await;
            }
        }
        if cancelled {
            self.kill(id).await;
            reader.abort();
            writer.abort();
            return Err(SandboxError::Cancelled);
        }
        let duration_ms = start.elapsed().as_millis() as u64;
        let state = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| setup(&e))?
            .state
            .unwrap_or_default();
        let mut capture = match tokio::time::timeout(Duration::from_secs(10), reader).await {
            Ok(Ok(c)) => c,
            _ => Capture {
                stderr: b"[output lost: the attach stream did not end]".to_vec(),
                ..Capture::default()
            },
        };
        writer.abort();
        // The results the prologue sent. Missing when it could not send them (the kernel's OOM
        // killer took it, or a timed-out job outlived the grace): nothing is collected then.
        let (files, tree) = match capture.result.as_deref().map(|r| parse_result(r, job)) {
            Some(Some(Ok(v))) => v,
            Some(Some(Err(e))) => return Err(SandboxError::Setup(format!("docker: {e}"))),
            Some(None) => {
                capture.stderr.extend_from_slice(
                    b"\n[sandbox: the results were malformed; nothing collected]",
                );
                (BTreeMap::new(), None)
            }
            None => (BTreeMap::new(), None),
        };
        let exit = state.exit_code.map(|c| c as i32);
        Ok(JobResult {
            // A killed container exits 137; report the signal like the local sandbox does.
            exit_code: if timed_out {
                None
            } else {
                exit.filter(|c| *c < 128)
            },
            signal: if timed_out {
                Some(9)
            } else {
                exit.filter(|c| *c >= 128).map(|c| c - 128)
            },
            timed_out,
            oom_killed: state.oom_killed.unwrap_or(false),
            stdout: String::from_utf8_lossy(&capture.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&capture.stderr).into_owned(),
            stdout_dropped: capture.stdout_dropped,
            stderr_dropped: capture.stderr_dropped,
            duration_ms,
            files,
            tree,
            sandbox: "docker".into(),
        })
    }

    async fn signal(&self, id: &str, signal: &str) {
        let _ = self
            .docker
            .kill_container(
                id,
                Some(
                    KillContainerOptionsBuilder::default()
                        .signal(signal)
                        .build(),
                ),
            )
            .await;
    }

    /// SIGKILL, then wait (a while) until the engine says the container stopped.
    async fn kill(&self, id: &str) {
        self.signal(id, "KILL").await;
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            self.docker.wait_container(id, None).next(),
        )
        .await;
    }
}

/// One entry of a collected directory's tar (`<dir>/...`): the first component is dropped and
/// only plain names are kept, so nothing can point outside the directory; links and special files
/// are refused. False once a limit is exceeded.
fn tree_entry<R: Read>(
    tree: &mut CollectedTree,
    spec: &CollectDir,
    entry: &mut tar::Entry<'_, R>,
) -> bool {
    let Ok(path) = entry.path().map(std::borrow::Cow::into_owned) else {
        return true;
    };
    let mut parts = path.components();
    parts.next();
    let plain: Option<Vec<&str>> = parts
        .map(|c| match c {
            std::path::Component::Normal(n) => n.to_str(),
            _ => None,
        })
        .collect();
    let Some(plain) = plain else {
        tree.refused.push((
            path.display().to_string(),
            "not a plain relative UTF-8 path".into(),
        ));
        return true;
    };
    if plain.is_empty() {
        return true;
    }
    let rel = plain.join("/");
    let kind = entry.header().entry_type();
    if kind.is_dir() || CollectedTree::skipped(spec, &rel) {
        return true;
    }
    if kind != tar::EntryType::Regular && kind != tar::EntryType::Continuous {
        let what = if kind.is_symlink() || kind.is_hard_link() {
            "a link (not followed)"
        } else {
            "not a regular file"
        };
        tree.refused.push((rel, what.into()));
        return true;
    }
    let mut data = Vec::new();
    if entry.read_to_end(&mut data).is_err() {
        tree.refused.push((rel, "unreadable".into()));
        return true;
    }
    tree.add(spec, rel, data)
}

/// What came out of the attached container: the job's own stdout and stderr, each capped at the
/// job's limit with the rest counted, and the bytes after the marker on stdout (the results).
#[derive(Default)]
struct Capture {
    stdout: Vec<u8>,
    stdout_dropped: u64,
    stderr: Vec<u8>,
    stderr_dropped: u64,
    /// None when no marker came, or when the results exceeded their cap.
    result: Option<Vec<u8>>,
}

fn keep(buf: &mut Vec<u8>, dropped: &mut u64, limit: usize, bytes: &[u8]) {
    let take = limit.saturating_sub(buf.len()).min(bytes.len());
    buf.extend_from_slice(&bytes[..take]);
    *dropped += (bytes.len() - take) as u64;
}

/// The most the results of a job can take on stdout: every collected file at its 64 MiB cap, the
/// collected directory's stream cap, and headers.
fn result_cap(job: &Job) -> u64 {
    let files = job.collect.len() as u64 * ((64 << 20) + 4096);
    let tree = job
        .collect_dir
        .as_ref()
        .map_or(0, |s| s.max_bytes + (s.max_files as u64 + 16) * 1536);
    files + tree + (1 << 20)
}

async fn read_attach(
    mut output: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
    >,
    marker: Vec<u8>,
    limit: usize,
    cap: u64,
) -> Capture {
    let mut c = Capture::default();
    // Stdout bytes that may be the start of the marker, held back until that is decided.
    let mut pending: Vec<u8> = Vec::new();
    let mut result: Option<Vec<u8>> = None;
    let mut over = false;
    while let Some(Ok(chunk)) = output.next().await {
        match chunk {
            LogOutput::StdOut { message } => {
                if let Some(r) = result.as_mut() {
                    if r.len() as u64 + message.len() as u64 > cap {
                        over = true;
                    } else {
                        r.extend_from_slice(&message);
                    }
                    continue;
                }
                pending.extend_from_slice(&message);
                if let Some(i) = pending.windows(marker.len()).position(|w| w == marker) {
                    keep(&mut c.stdout, &mut c.stdout_dropped, limit, &pending[..i]);
                    let rest = pending.split_off(i + marker.len());
                    over = rest.len() as u64 > cap;
                    result = Some(rest);
                    pending.clear();
                } else {
                    let held = pending.len().min(marker.len() - 1);
                    let done = pending.len() - held;
                    keep(
                        &mut c.stdout,
                        &mut c.stdout_dropped,
                        limit,
                        &pending[..done],
                    );
                    pending.drain(..done);
                }
            }
            LogOutput::StdErr { message } => {
                keep(&mut c.stderr, &mut c.stderr_dropped, limit, &message);
            }
            _ => {}
        }
    }
    keep(&mut c.stdout, &mut c.stdout_dropped, limit, &pending);
    c.result = result.filter(|_| !over);
    c
}

/// The prologue's result tar: collected files under `f/`, the collected directory under `t`,
/// notes under `m/`. None when it is not a well-formed archive (nothing is collected then); an
/// error when the prologue could not set the job up.
#[allow(clippy::type_complexity)]
fn parse_result(
    bytes: &[u8],
    job: &Job,
) -> Option<Result<(BTreeMap<String, Vec<u8>>, Option<CollectedTree>), String>> {
    let mut files = BTreeMap::new();
    let mut tree: Option<CollectedTree> = None;
    let mut tree_done = false;
    let mut overflow = None;
    let mut unreadable = Vec::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        let path = entry.path().ok()?.into_owned();
        let path = path.to_str()?.to_string();
        let (top, rest) = path.split_once('/').unwrap_or((path.as_str(), ""));
        match top {
            "f" => {
                if !job.collect.iter().any(|c| c == rest)
                    || entry.header().entry_type() != tar::EntryType::Regular
                {
                    return None;
                }
                let mut data = Vec::new();
                entry.read_to_end(&mut data).ok()?;
                files.insert(rest.to_string(), data);
            }
            "t" => {
                let spec = job.collect_dir.as_ref()?;
                let t = tree.get_or_insert_with(CollectedTree::default);
                if !tree_done && !tree_entry(t, spec, &mut entry) {
                    tree_done = true;
                }
            }
            "m" => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).ok()?;
                match rest.split_once('/').unwrap_or((rest, "")) {
                    ("setup-error", _) => {
                        return Some(Err(String::from_utf8_lossy(&data).into_owned()));
                    }
                    ("overflow", _) => overflow = Some(data),
                    ("unreadable", rel) => unreadable.push(rel.to_string()),
                    _ => return None,
                }
            }
            _ => return None,
        }
    }
    if let (Some(t), Some(spec)) = (tree.as_mut(), job.collect_dir.as_ref()) {
        for rel in unreadable {
            if !CollectedTree::skipped(spec, &rel) {
                t.refused.push((rel, "unreadable".into()));
            }
        }
        if t.overflow.is_none() {
            t.overflow = match overflow.as_deref() {
                Some(b"files") => Some(format!("more than {} files", spec.max_files)),
                Some(b"bytes") => Some(format!("more than {} bytes", spec.max_bytes)),
                Some(_) => return None,
                None => None,
            };
        }
    }
    Some(Ok((files, tree)))
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
