//! The Docker sandbox, through bollard: every job is its own container with no network, memory
//! (and swap), pids and CPU limits, a non-root user, a read-only root, all capabilities dropped.
//! Files go in and come out as tar streams through the API (no bind mount of a host path); the
//! workspace is an anonymous volume removed with the container. A timeout or Ctrl-C kills the
//! container; every container is removed afterwards, and carries labels so a sweep removes any
//! that a killed run left behind.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{CollectDir, CollectedTree, Job, JobResult, SandboxError};
use crate::fsutil;

/// The image pipe's own tasks use, built offline by `pipe sandbox bootstrap`.
pub const DEFAULT_IMAGE: &str = "pipe-sandbox/python:bookworm";
/// The user jobs run as (nobody).
pub const USER: u64 = 65534;
pub const LABEL_MANAGED: &str = "pipe.managed";
pub const LABEL_ROUND: &str = "pipe.round";

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: i64,
    pub pids: i64,
    pub nano_cpus: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 512 << 20,
            pids: 256,
            nano_cpus: 1_000_000_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DockerSandbox {
    pub docker: Docker,
    pub image: String,
    pub limits: Limits,
    /// The round whose containers these are (a label, for the sweep).
    pub round: String,
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

/// The ids of pipe's containers: of one round, or all of them.
pub async fn list(docker: &Docker, round: Option<&str>) -> Result<Vec<String>, String> {
    let label = match round {
        Some(r) => format!("{LABEL_ROUND}={r}"),
        None => format!("{LABEL_MANAGED}=true"),
    };
    let filters: HashMap<String, Vec<String>> = HashMap::from([("label".to_string(), vec![label])]);
    let list = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| e.to_string())?;
    Ok(list.into_iter().filter_map(|c| c.id).collect())
}

/// Removes every container pipe left behind: of one round, or all of them. Returns how many.
pub async fn sweep(docker: &Docker, round: Option<&str>) -> Result<usize, String> {
    let ids = list(docker, round).await?;
    for id in &ids {
        remove(docker, id).await;
    }
    Ok(ids.len())
}

async fn remove(docker: &Docker, id: &str) {
    let _ = docker
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

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

impl DockerSandbox {
    pub async fn run(
        &self,
        job: &Job,
        cancel: &CancellationToken,
    ) -> Result<JobResult, SandboxError> {
        let setup = |e: &dyn std::fmt::Display| SandboxError::Setup(format!("docker: {e}"));
        let mut env = vec![
            "PIPE_WORK=/work".to_string(),
            "HOME=/work/home".to_string(),
            "TMPDIR=/work/tmp".to_string(),
            "LANG=C.UTF-8".to_string(),
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ];
        env.extend(job.env.iter().map(|(k, v)| format!("{k}={v}")));
        let labels = HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_ROUND.to_string(), self.round.clone()),
        ]);
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(vec!["sh".into(), "-c".into(), job.script.clone()]),
            env: Some(env),
            user: Some(format!("{USER}:{USER}")),
            working_dir: Some("/work/scratch".into()),
            labels: Some(labels),
            network_disabled: Some(!job.network),
            volumes: Some(vec!["/work".into()]),
            host_config: Some(HostConfig {
                network_mode: Some(if job.network { "bridge" } else { "none" }.into()),
                memory: Some(self.limits.memory_bytes),
                memory_swap: Some(self.limits.memory_bytes),
                pids_limit: Some(self.limits.pids),
                nano_cpus: Some(self.limits.nano_cpus),
                readonly_rootfs: Some(true),
                tmpfs: Some(HashMap::from([(
                    "/tmp".to_string(),
                    "rw,nosuid,nodev,size=64m".to_string(),
                )])),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".into()),
                    config: Some(HashMap::from([
                        ("max-size".to_string(), "8m".to_string()),
                        ("max-file".to_string(), "1".to_string()),
                    ])),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = format!(
            "pipe-{}-{:08x}",
            sanitize(&self.round),
            rand::random::<u32>()
        );
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await
            .map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                } => SandboxError::Setup(format!(
                    "docker: image `{}` not found; build it offline with `pipe sandbox bootstrap`",
                    self.image
                )),
                e => setup(&e),
            })?;
        let id = created.id;
        let result = self.run_created(&id, job, cancel).await;
        remove(&self.docker, &id).await;
        result
    }

    async fn run_created(
        &self,
        id: &str,
        job: &Job,
        cancel: &CancellationToken,
    ) -> Result<JobResult, SandboxError> {
        let setup = |e: &dyn std::fmt::Display| SandboxError::Setup(format!("docker: {e}"));
        let tar = input_tar(job).map_err(|e| setup(&e))?;
        self.docker
            .upload_to_container(
                id,
                Some(
                    UploadToContainerOptionsBuilder::default()
                        .path("/work")
                        .build(),
                ),
                bollard::body_full(tar.into()),
            )
            .await
            .map_err(|e| setup(&e))?;
        let start = Instant::now();
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| setup(&e))?;
        // Follow the output while the job runs, keeping the first `output_limit` bytes of each
        // stream and counting the rest: a flood is cut here, and the engine's own log is capped.
        let logs = tokio::spawn(follow_logs(
            self.docker.clone(),
            id.to_string(),
            job.output_limit,
        ));
        let mut timed_out = false;
        let mut cancelled = false;
        let mut wait = self.docker.wait_container(id, None);
        tokio::select! {
            _ = wait.next() => {}
            () = tokio::time::sleep(job.timeout) => timed_out = true,
            () = cancel.cancelled() => cancelled = true,
        }
        if timed_out || cancelled {
            let _ = self
                .docker
                .kill_container(
                    id,
                    Some(
                        KillContainerOptionsBuilder::default()
                            .signal("KILL")
                            .build(),
                    ),
                )
                .await;
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                self.docker.wait_container(id, None).next(),
            )
            .await;
        }
        let duration_ms = start.elapsed().as_millis() as u64;
        if cancelled {
            return Err(SandboxError::Cancelled);
        }
        let state = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| setup(&e))?
            .state
            .unwrap_or_default();
        let (stdout, stdout_dropped, stderr, stderr_dropped) =
            match tokio::time::timeout(Duration::from_secs(10), logs).await {
                Ok(Ok(v)) => v,
                _ => (
                    String::new(),
                    0,
                    "[output lost: the log stream did not end]".into(),
                    0,
                ),
            };
        let mut files = BTreeMap::new();
        for rel in &job.collect {
            if let Some(bytes) = self.download(id, &format!("/work/{rel}")).await {
                files.insert(rel.clone(), bytes);
            }
        }
        let tree = match &job.collect_dir {
            Some(spec) => self.download_tree(id, spec).await,
            None => None,
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
            stdout,
            stderr,
            stdout_dropped,
            stderr_dropped,
            duration_ms,
            files,
            tree,
            sandbox: "docker".into(),
        })
    }

    /// A regular file out of the container (a symlink or directory is not followed).
    async fn download(&self, id: &str, path: &str) -> Option<Vec<u8>> {
        let mut stream = self.docker.download_from_container(
            id,
            Some(
                DownloadFromContainerOptionsBuilder::default()
                    .path(path)
                    .build(),
            ),
        );
        let mut tar_bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            tar_bytes.extend_from_slice(&chunk.ok()?);
            if tar_bytes.len() > 64 << 20 {
                return None;
            }
        }
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let mut entry = archive.entries().ok()?.next()?.ok()?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return None;
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).ok()?;
        Some(data)
    }
}

impl DockerSandbox {
    /// A directory out of the container as one tar stream, within the limits of `spec`: regular
    /// files only (links and special files refused), every path confined to the directory.
    async fn download_tree(&self, id: &str, spec: &CollectDir) -> Option<CollectedTree> {
        let mut stream = self.docker.download_from_container(
            id,
            Some(
                DownloadFromContainerOptionsBuilder::default()
                    .path(&format!("/work/{}", spec.dir))
                    .build(),
            ),
        );
        let mut tree = CollectedTree::default();
        // Tar headers and padding add at most 1.5 KiB per entry over the content.
        let stream_cap = spec.max_bytes + (spec.max_files as u64 + 16) * 1536;
        let mut tar_bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            tar_bytes.extend_from_slice(&chunk.ok()?);
            if tar_bytes.len() as u64 > stream_cap {
                tree.overflow = Some(format!("more than {} bytes", spec.max_bytes));
                return Some(tree);
            }
        }
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        for entry in archive.entries().ok()? {
            let Ok(mut entry) = entry else { break };
            let Ok(path) = entry.path().map(std::borrow::Cow::into_owned) else {
                continue;
            };
            // The archive's entries are `<dir>/...`: drop the first component, keep only plain
            // names, so nothing can point outside the directory.
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
                continue;
            };
            if plain.is_empty() {
                continue;
            }
            let rel = plain.join("/");
            let kind = entry.header().entry_type();
            if kind.is_dir() || CollectedTree::skipped(spec, &rel) {
                continue;
            }
            if kind != tar::EntryType::Regular && kind != tar::EntryType::Continuous {
                let what = if kind.is_symlink() || kind.is_hard_link() {
                    "a link (not followed)"
                } else {
                    "not a regular file"
                };
                tree.refused.push((rel, what.into()));
                continue;
            }
            let mut data = Vec::new();
            if entry.read_to_end(&mut data).is_err() {
                tree.refused.push((rel, "unreadable".into()));
                continue;
            }
            if !tree.add(spec, rel, data) {
                break;
            }
        }
        Some(tree)
    }
}

async fn follow_logs(docker: Docker, id: String, limit: usize) -> (String, u64, String, u64) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let (mut out_dropped, mut err_dropped) = (0u64, 0u64);
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .follow(true)
        .build();
    let mut stream = docker.logs(&id, Some(options));
    while let Some(Ok(chunk)) = stream.next().await {
        let (buf, dropped, bytes) = match chunk {
            LogOutput::StdOut { message } => (&mut out, &mut out_dropped, message),
            LogOutput::StdErr { message } => (&mut err, &mut err_dropped, message),
            _ => continue,
        };
        let room = limit.saturating_sub(buf.len());
        let take = room.min(bytes.len());
        buf.extend_from_slice(&bytes[..take]);
        *dropped += (bytes.len() - take) as u64;
    }
    (
        String::from_utf8_lossy(&out).into_owned(),
        out_dropped,
        String::from_utf8_lossy(&err).into_owned(),
        err_dropped,
    )
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
