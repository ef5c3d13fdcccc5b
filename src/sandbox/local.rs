//! The local sandbox: a temp workspace per job, a cleared environment, its own process group
//! killed at the timeout, capped output; under bubblewrap (no network, read-only host) when
//! `bwrap` is installed and works.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::{CollectDir, CollectedTree, Job, JobResult, SandboxError, python};
use crate::fsutil;

#[derive(Debug, Clone, Default)]
pub struct LocalSandbox {
    /// Wrap commands in bubblewrap (no network).
    pub bwrap: bool,
}

impl LocalSandbox {
    pub fn detect() -> Self {
        let bwrap = std::env::var_os("PIPE_NO_BWRAP").is_none()
            && std::process::Command::new("bwrap")
                .args([
                    "--unshare-net",
                    "--ro-bind",
                    "/",
                    "/",
                    "--dev",
                    "/dev",
                    "true",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        Self { bwrap }
    }

    pub async fn run(
        &self,
        job: &Job,
        cancel: &CancellationToken,
    ) -> Result<JobResult, SandboxError> {
        let ws = tempfile::Builder::new()
            .prefix("pipe-sandbox-")
            .tempdir()
            .map_err(|e| SandboxError::Setup(e.to_string()))?;
        let work = ws.path().to_path_buf();
        for (name, src) in &job.inputs {
            fsutil::copy_tree(src, &work.join(name))
                .map_err(|e| SandboxError::Setup(format!("copy {name}: {e}")))?;
        }
        for d in ["home", "tmp", "scratch", "out"] {
            std::fs::create_dir_all(work.join(d))
                .map_err(|e| SandboxError::Setup(e.to_string()))?;
        }
        let mut path = String::from("/usr/local/bin:/usr/bin:/bin");
        // Host directories the command needs to read besides the system ones.
        let mut expose: Vec<PathBuf> = Vec::new();
        if !job.python.is_empty() {
            let reqs = job.python.clone();
            let bin = tokio::task::spawn_blocking(move || python::ensure_venv(&reqs))
                .await
                .map_err(|e| SandboxError::Setup(e.to_string()))??;
            path = format!("{}:{path}", bin.display());
            if let Some(venv) = bin.parent() {
                expose.push(venv.to_path_buf());
                expose.extend(python::base_prefix(venv));
            }
        }
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("PATH".into(), path);
        env.insert("HOME".into(), work.join("home").display().to_string());
        env.insert("TMPDIR".into(), work.join("tmp").display().to_string());
        env.insert("LANG".into(), "C.UTF-8".into());
        env.insert("PIPE_WORK".into(), work.display().to_string());
        env.extend(job.env.clone());

        let mut cmd = if self.bwrap {
            let mut c = Command::new("bwrap");
            if !job.network {
                c.arg("--unshare-net");
            }
            c.args([
                "--unshare-pid",
                "--die-with-parent",
                "--ro-bind",
                "/",
                "/",
                "--dev",
                "/dev",
                "--proc",
                "/proc",
            ]);
            c.arg("--bind").arg(&work).arg(&work);
            c.args(["--", "sh", "-c", &job.script]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &job.script]);
            c
        };
        cmd.env_clear().envs(&env).current_dir(work.join("scratch"));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.process_group(0);
        cmd.kill_on_drop(true);
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| SandboxError::Setup(format!("cannot start the command: {e}")))?;
        let pgid = child.id().map(|p| p as i32);
        let out = tokio::spawn(read_capped(
            child.stdout.take().expect("piped"),
            job.output_limit,
        ));
        let err = tokio::spawn(read_capped(
            child.stderr.take().expect("piped"),
            job.output_limit,
        ));
        let mut timed_out = false;
        let mut cancelled = false;
        let status = tokio::select! {
            s = child.wait() => s.ok(),
            () = tokio::time::sleep(job.timeout) => { timed_out = true; None }
            () = cancel.cancelled() => { cancelled = true; None }
        };
        let status = if let Some(s) = status {
            // The command exited; anything it left running in its group goes too.
            kill_group(pgid);
            Some(s)
        } else {
            kill_group(pgid);
            child.wait().await.ok()
        };
        let (stdout, stdout_dropped) = out.await.unwrap_or_default();
        let (stderr, stderr_dropped) = err.await.unwrap_or_default();
        if cancelled {
            return Err(SandboxError::Cancelled);
        }
        let mut files = BTreeMap::new();
        for rel in &job.collect {
            if let Ok(bytes) = read_inside(&work, Path::new(rel)) {
                files.insert(rel.clone(), bytes);
            }
        }
        let tree = match &job.collect_dir {
            Some(spec) => {
                let spec = spec.clone();
                let root = work.join(&spec.dir);
                tokio::task::spawn_blocking(move || collect_tree(&root, &spec))
                    .await
                    .map_err(|e| SandboxError::Setup(e.to_string()))?
            }
            None => None,
        };
        // Removing the workspace waits on the disk (an ext4 mounted with `discard` trims every
        // freed block synchronously: about 18 ms a workspace, a third of a HumanEval gate): it
        // happens on the blocking pool, after the result is handed back, not on a runtime thread
        // in the job's path. The process waits for it at exit (or drops the task, which removes
        // the directory too).
        tokio::task::spawn_blocking(move || drop(ws));
        use std::os::unix::process::ExitStatusExt;
        Ok(JobResult {
            exit_code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            timed_out,
            oom_killed: false,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            stdout_dropped,
            stderr_dropped,
            duration_ms: start.elapsed().as_millis() as u64,
            files,
            tree,
            sandbox: if self.bwrap {
                "local+bwrap".into()
            } else {
                "unisolated".into()
            },
        })
    }
}

/// Reads a file inside the workspace without following a symlink out of it.
fn read_inside(work: &Path, rel: &Path) -> std::io::Result<Vec<u8>> {
    let path: PathBuf = work.join(rel);
    let meta = std::fs::symlink_metadata(&path)?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    std::fs::read(path)
}

/// Reads the directory `root` (absent: `None`) within the limits of `spec`, never following a
/// symlink: walkdir reports a link as a link, and only regular files are read.
fn collect_tree(root: &Path, spec: &CollectDir) -> Option<CollectedTree> {
    if !std::fs::symlink_metadata(root).is_ok_and(|m| m.is_dir()) {
        return None;
    }
    let mut tree = CollectedTree::default();
    let walk = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| {
            !(e.file_type().is_dir() && spec.skip.iter().any(|s| e.file_name() == s.as_str()))
        });
    for entry in walk {
        let Ok(entry) = entry else { continue };
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        let Some(rel) = rel.to_str().map(str::to_string) else {
            tree.refused.push((
                rel.to_string_lossy().into_owned(),
                "the name is not UTF-8".into(),
            ));
            continue;
        };
        let kind = entry.file_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            let what = if kind.is_symlink() {
                "a symlink (not followed)"
            } else {
                "not a regular file"
            };
            tree.refused.push((rel, what.into()));
            continue;
        }
        let size = entry.metadata().map_or(0, |m| m.len());
        if tree.bytes + size > spec.max_bytes {
            tree.overflow = Some(format!("more than {} bytes", spec.max_bytes));
            break;
        }
        let Ok(bytes) = read_inside(root, Path::new(&rel)) else {
            tree.refused.push((rel, "unreadable".into()));
            continue;
        };
        if !tree.add(spec, rel, bytes) {
            break;
        }
    }
    Some(tree)
}

fn kill_group(pgid: Option<i32>) {
    if let Some(pgid) = pgid {
        // SAFETY: kill(2) with a negative pid signals the process group we created; no memory is touched.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

async fn read_capped<R: AsyncRead + Unpin>(mut r: R, limit: usize) -> (Vec<u8>, u64) {
    let mut kept = Vec::new();
    let mut dropped = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit.saturating_sub(kept.len());
                let take = room.min(n);
                kept.extend_from_slice(&buf[..take]);
                dropped += (n - take) as u64;
            }
        }
    }
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn job(script: &str) -> Job {
        Job {
            inputs: vec![],
            script: script.into(),
            env: BTreeMap::new(),
            timeout: Duration::from_secs(10),
            output_limit: 1000,
            collect: vec![],
            python: vec![],
            network: false,
            collect_dir: None,
        }
    }

    #[tokio::test]
    async fn environment_is_cleared() {
        // SAFETY: a test-only variable no other test reads.
        unsafe { std::env::set_var("PIPE_TEST_SECRET_SANDBOX", "sk-sentinel-123") };
        let r = LocalSandbox::default()
            .run(&job("env"), &CancellationToken::new())
            .await
            .unwrap();
        assert!(!r.stdout.contains("sk-sentinel-123"));
        assert!(r.stdout.contains("PIPE_WORK="));
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let mut j = job("sleep 30 & sleep 30; echo never");
        j.timeout = Duration::from_millis(300);
        let t = Instant::now();
        let r = LocalSandbox::default()
            .run(&j, &CancellationToken::new())
            .await
            .unwrap();
        assert!(r.timed_out);
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(!r.stdout.contains("never"));
    }

    #[tokio::test]
    async fn bubblewrap_cuts_the_network_and_hides_home() {
        let sandbox = LocalSandbox::detect();
        if !sandbox.bwrap {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI installs bubblewrap: it must be usable"
            );
            return;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let script = format!(
            "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), timeout=2)' && echo CONNECTED; ls /root | wc -l"
        );
        let r = sandbox
            .run(&job(&script), &CancellationToken::new())
            .await
            .unwrap();
        assert!(!r.stdout.contains("CONNECTED"), "{r:?}");
        assert_eq!(r.stdout.trim(), "0", "home is hidden: {r:?}");
        // The same command outside the sandbox does connect: the test can fail.
        let plain = LocalSandbox { bwrap: false }
            .run(&job(&script), &CancellationToken::new())
            .await
            .unwrap();
        assert!(plain.stdout.contains("CONNECTED"), "{plain:?}");
    }

    #[tokio::test]
    async fn the_network_switch_opens_the_network_only_when_asked() {
        let sandbox = LocalSandbox::detect();
        if !sandbox.bwrap {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI installs bubblewrap: it must be usable"
            );
            return;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut j = job(&format!(
            "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), timeout=2)' && echo CONNECTED"
        ));
        let off = sandbox.run(&j, &CancellationToken::new()).await.unwrap();
        assert!(!off.stdout.contains("CONNECTED"), "{off:?}");
        j.network = true;
        let on = sandbox.run(&j, &CancellationToken::new()).await.unwrap();
        assert!(on.stdout.contains("CONNECTED"), "{on:?}");
    }

    #[tokio::test]
    async fn collects_a_directory_within_limits_without_following_links() {
        let mut j = job(
            "cd $PIPE_WORK && mkdir -p ws/sub ws/.git && echo a > ws/a.txt && echo b > ws/sub/b.txt \
             && echo g > ws/.git/HEAD && ln -s /etc/passwd ws/leak",
        );
        let spec = CollectDir {
            dir: "ws".into(),
            skip: vec![".git".into()],
            max_files: 10,
            max_bytes: 1000,
        };
        j.collect_dir = Some(spec.clone());
        let r = LocalSandbox::default()
            .run(&j, &CancellationToken::new())
            .await
            .unwrap();
        let tree = r.tree.unwrap();
        assert_eq!(
            tree.files.keys().collect::<Vec<_>>(),
            ["a.txt", "sub/b.txt"]
        );
        assert_eq!(tree.files["sub/b.txt"], b"b\n");
        assert_eq!(tree.refused.len(), 1, "{:?}", tree.refused);
        assert_eq!(tree.refused[0].0, "leak");
        assert_eq!(tree.overflow, None);
        for (max_files, max_bytes) in [(1, 1000), (10, 3)] {
            j.collect_dir = Some(CollectDir {
                max_files,
                max_bytes,
                ..spec.clone()
            });
            let r = LocalSandbox::default()
                .run(&j, &CancellationToken::new())
                .await
                .unwrap();
            let tree = r.tree.unwrap();
            assert!(tree.overflow.is_some(), "{max_files} {max_bytes}");
            assert!(tree.files.len() < 2);
        }
        // A directory that is not there is not collected.
        j.collect_dir = Some(CollectDir {
            dir: "absent".into(),
            ..spec
        });
        let r = LocalSandbox::default()
            .run(&j, &CancellationToken::new())
            .await
            .unwrap();
        assert!(r.tree.is_none());
    }

    #[tokio::test]
    async fn output_is_capped() {
        let r = LocalSandbox::default()
            .run(&job("yes | head -c 100000"), &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(r.stdout.len(), 1000);
        assert_eq!(r.stdout_dropped, 99_000);
    }

    #[tokio::test]
    async fn collects_files_and_refuses_symlinks_out() {
        let mut j = job("echo hi > $PIPE_WORK/out.txt; ln -s /etc/passwd $PIPE_WORK/leak");
        j.collect = vec!["out.txt".into(), "leak".into()];
        let r = LocalSandbox::default()
            .run(&j, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(
            r.files.get("out.txt").map(Vec::as_slice),
            Some(&b"hi\n"[..])
        );
        assert!(!r.files.contains_key("leak"));
    }
}
