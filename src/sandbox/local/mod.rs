//! The local sandbox: a private workspace per job (`workspace`), a cleared environment, rlimits
//! (`limits`), its own process group killed at the timeout together with anything still holding
//! its output (`reap`), capped output. Under bubblewrap (`bwrap`, when it works) the job sees only
//! its workspace and what a program needs to run; without it (`unisolated`) the job shares the
//! host's files and network. When pipe runs as root a job runs as `nobody` either way.

mod bwrap;
mod limits;
mod reap;
pub mod workspace;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Once;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::{CollectDir, CollectedTree, Job, JobResult, SandboxError, python};
use crate::base::fsutil;
use workspace::Workspace;

/// How long a job's output may stay open after its command ended (or was killed) before
/// whatever holds it is killed.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Default)]
pub struct LocalSandbox {
    /// Run jobs under bubblewrap; without it a job is unisolated (the host's files and network).
    pub bwrap: bool,
}

/// Makes pipe's own process undumpable: its memory (`/proc/<pid>/mem`) and environment
/// (`/proc/<pid>/environ`, where API keys live) are then closed to other processes of its user,
/// model code run without bubblewrap among them. pipe calls it first thing; a local sandbox calls
/// it again before its first job, for pipe used as a library.
pub fn protect_process() {
    // SAFETY: prctl(2) with PR_SET_DUMPABLE takes integers only.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

/// Sweeps workspaces left by pipes that are gone, once per process (see [`workspace::sweep`]).
pub fn sweep_leftovers() {
    static SWEPT: Once = Once::new();
    SWEPT.call_once(|| {
        workspace::sweep(&std::env::temp_dir());
    });
}

impl LocalSandbox {
    /// Bubblewrap when it works here, with the mounts and user every job gets; sweeps the
    /// workspaces of pipes that are gone.
    pub fn detect() -> Self {
        sweep_leftovers();
        let bwrap = std::env::var_os("PIPE_NO_BWRAP").is_none() && bwrap_works();
        Self { bwrap }
    }

    /// What [`JobResult::sandbox`] says for a job of this sandbox.
    pub fn label(&self) -> &'static str {
        if self.bwrap {
            "local+bwrap"
        } else {
            "unisolated"
        }
    }

    pub async fn run(
        &self,
        job: &Job,
        cancel: &CancellationToken,
    ) -> Result<JobResult, SandboxError> {
        if let Some(image) = &job.image {
            return Err(SandboxError::Setup(format!(
                "this build's agent CLIs come in a Docker image (`{image}`), which the local sandbox cannot run: run with `--sandbox docker`"
            )));
        }
        static PROTECT: Once = Once::new();
        PROTECT.call_once(protect_process);
        let (path, mut expose) = self.python(job).await?;
        // Unisolated, the job reaches the gateway's socket where it is; under bubblewrap it is
        // bound at its own place (`GATEWAY_DIR`).
        if !self.bwrap
            && let Some(dir) = job.gateway.as_deref().and_then(Path::parent)
        {
            expose.push(dir.to_path_buf());
        }
        let mut user = limits::job_user();
        // Unisolated, a job run as `nobody` reads the venv and the Python it links to where they
        // are; where others cannot enter them (a Python under /root), the job runs as root with
        // every capability dropped instead: pipe's memory and environment stay closed to it
        // (pipe is not dumpable and the job cannot ptrace), root's files do not.
        let drop_caps = !self.bwrap && user.is_some() && !reachable(&expose);
        if drop_caps {
            user = None;
        }
        let ws = self.workspace(job, user)?;
        let mut cmd = self.command(job, ws.work(), &path, &expose, user, drop_caps)?;
        let start = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| SandboxError::Setup(format!("cannot start the command: {e}")))?;
        let ran = supervise(child, job, cancel).await;
        if ran.cancelled {
            return Err(SandboxError::Cancelled);
        }
        let (files, tree) = collect(job, ws.work()).await?;
        // Removing the workspace waits on the disk (an ext4 mounted with `discard` trims every
        // freed block synchronously: about 18 ms a workspace, a third of a HumanEval gate): it
        // happens on the blocking pool, after the result is handed back, not on a runtime thread
        // in the job's path. The process waits for it at exit (or drops the task, which removes
        // the directory too).
        tokio::task::spawn_blocking(move || drop(ws));
        use std::os::unix::process::ExitStatusExt;
        let ((stdout, stdout_dropped), (stderr, stderr_dropped)) = ran.output;
        Ok(JobResult {
            exit_code: ran.status.and_then(|s| s.code()),
            signal: ran.status.and_then(|s| s.signal()),
            timed_out: ran.timed_out,
            oom_killed: false,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            stdout_dropped,
            stderr_dropped,
            duration_ms: start.elapsed().as_millis() as u64,
            files,
            tree,
            sandbox: self.label().into(),
        })
    }

    /// A fresh workspace holding the job's inputs and the directories every job has, given to
    /// the job's user.
    fn workspace(&self, job: &Job, user: Option<(u32, u32)>) -> Result<Workspace, SandboxError> {
        let setup = |e: std::io::Error| SandboxError::Setup(e.to_string());
        let ws = Workspace::create().map_err(setup)?;
        let work = ws.work();
        for (name, src) in &job.inputs {
            fsutil::copy_tree(src, &work.join(name))
                .map_err(|e| SandboxError::Setup(format!("copy {name}: {e}")))?;
        }
        for d in ["home", "tmp", "scratch", "out"] {
            std::fs::create_dir_all(work.join(d)).map_err(setup)?;
        }
        if let Some((uid, gid)) = user {
            ws.give_to(uid, gid).map_err(setup)?;
            if !self.bwrap {
                ws.let_through().map_err(setup)?;
            }
        }
        Ok(ws)
    }

    /// The job's `PATH` and the host directories it reads besides the system ones: the venv of
    /// its Python requirements and the Python that venv links to.
    async fn python(&self, job: &Job) -> Result<(String, Vec<PathBuf>), SandboxError> {
        let mut path = String::from("/usr/local/bin:/usr/bin:/bin");
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
        Ok((path, expose))
    }

    /// The command: `sh -c script` under bubblewrap or as it is, with the job's environment,
    /// user, session and rlimits.
    fn command(
        &self,
        job: &Job,
        work: &Path,
        path: &str,
        expose: &[PathBuf],
        user: Option<(u32, u32)>,
        drop_caps: bool,
    ) -> Result<Command, SandboxError> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("PATH".into(), path.to_string());
        env.insert("HOME".into(), work.join("home").display().to_string());
        env.insert("TMPDIR".into(), work.join("tmp").display().to_string());
        env.insert("LANG".into(), "C.UTF-8".into());
        env.insert("PIPE_WORK".into(), work.display().to_string());
        env.extend(job.env.clone());
        if let Some(socket) = &job.gateway {
            let seen = match socket.file_name() {
                Some(name) if self.bwrap => Path::new(super::GATEWAY_DIR).join(name),
                _ => socket.clone(),
            };
            env.insert("PIPE_GATEWAY_SOCKET".into(), seen.display().to_string());
        }
        let scratch = work.join("scratch");
        let mut cmd = if self.bwrap {
            let setpriv = match user {
                Some(_) => Some(bwrap::setpriv().ok_or_else(|| {
                    SandboxError::Setup(
                        "pipe runs as root and drops a job to `nobody` with setpriv (util-linux), which is not installed".into(),
                    )
                })?),
                None => None,
            };
            let mounts = bwrap::Mounts {
                work,
                expose,
                network: job.network,
                gateway: job.gateway.as_deref().and_then(Path::parent),
                user: user
                    .zip(setpriv.as_deref())
                    .map(|((uid, gid), sp)| (uid, gid, sp)),
                cwd: &scratch,
            };
            let mut c = Command::new("bwrap");
            c.args(bwrap::args(&mounts, &job.script));
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &job.script]);
            if let Some((uid, gid)) = user {
                // std clears the supplementary groups when it drops root.
                c.uid(uid).gid(gid);
            }
            c
        };
        cmd.env_clear().envs(&env).current_dir(&scratch);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.kill_on_drop(true);
        // SAFETY: getuid(2) cannot fail.
        let uid = user.map_or_else(|| unsafe { libc::getuid() }, |(u, _)| u);
        let rlimits = limits::Rlimits::new(&job.limits, job.timeout, uid);
        let unisolated = !self.bwrap;
        // SAFETY: the closure only makes async-signal-safe system calls (setsid, setrlimit,
        // prctl, capset).
        unsafe {
            cmd.pre_exec(move || {
                limits::confine(&rlimits, unisolated)?;
                if drop_caps {
                    limits::drop_capabilities()?;
                }
                Ok(())
            });
        }
        Ok(cmd)
    }
}

/// How a job's command ended.
struct Ran {
    status: Option<std::process::ExitStatus>,
    timed_out: bool,
    cancelled: bool,
    output: (Captured, Captured),
}

/// Waits for the command, its timeout or the cancellation, then kills what is left of the job
/// and reads the rest of its output.
async fn supervise(mut child: Child, job: &Job, cancel: &CancellationToken) -> Ran {
    let group = Group(child.id().map(|p| p as i32));
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let inodes: Vec<u64> = [reap::pipe_inode(&stdout), reap::pipe_inode(&stderr)]
        .into_iter()
        .flatten()
        .collect();
    let stop = CancellationToken::new();
    let out = tokio::spawn(read_capped(stdout, job.output_limit, stop.clone()));
    let err = tokio::spawn(read_capped(stderr, job.output_limit, stop.clone()));
    let mut timed_out = false;
    let mut cancelled = false;
    let status = tokio::select! {
        s = child.wait() => s.ok(),
        () = tokio::time::sleep(job.timeout) => { timed_out = true; None }
        () = cancel.cancelled() => { cancelled = true; None }
    };
    // The command exited or is killed now; anything it left running in its group goes too.
    group.kill();
    let status = match status {
        Some(s) => Some(s),
        None => child.wait().await.ok(),
    };
    let output = drain(out, err, inodes, stop).await;
    Ran {
        status,
        timed_out,
        cancelled,
        output,
    }
}

/// The files and the directory the job asked to read back.
async fn collect(
    job: &Job,
    work: &Path,
) -> Result<(BTreeMap<String, Vec<u8>>, Option<CollectedTree>), SandboxError> {
    let mut files = BTreeMap::new();
    for rel in &job.collect {
        if let Ok(bytes) = read_inside(work, Path::new(rel)) {
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
    Ok((files, tree))
}

/// Whether bubblewrap runs a job here as every job is run (the same mounts and user).
fn bwrap_works() -> bool {
    let Ok(ws) = Workspace::create() else {
        return false;
    };
    let user = limits::job_user();
    if let Some((uid, gid)) = user
        && ws.give_to(uid, gid).is_err()
    {
        return false;
    }
    let setpriv = bwrap::setpriv();
    if user.is_some() && setpriv.is_none() {
        return false;
    }
    let mounts = bwrap::Mounts {
        work: ws.work(),
        expose: &[],
        network: false,
        gateway: None,
        user: user
            .zip(setpriv.as_deref())
            .map(|((uid, gid), sp)| (uid, gid, sp)),
        cwd: ws.work(),
    };
    std::process::Command::new("bwrap")
        .args(bwrap::args(&mounts, "true"))
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `nobody` can read every one of `expose` (a venv, the Python it links to).
fn reachable(expose: &[PathBuf]) -> bool {
    expose.iter().all(|p| limits::reachable_by_others(p))
}

/// The job's process group (its session, led by the command): killed (SIGKILL) on demand and
/// when dropped, so a job whose future is dropped leaves nothing of its group running.
struct Group(Option<i32>);

impl Group {
    fn kill(&self) {
        if let Some(pgid) = self.0 {
            // SAFETY: kill(2) with a negative pid signals the process group we created; no memory
            // is touched.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

type Captured = (Vec<u8>, u64);

/// Waits for the job's output readers after its command ended: a short grace for the pipes to
/// close, then every process still holding one is killed (a `setsid` daemon escapes the group
/// kill), and at last the readers stop with what they have. Bounded in time whatever the job did.
async fn drain(
    out: tokio::task::JoinHandle<Captured>,
    err: tokio::task::JoinHandle<Captured>,
    inodes: Vec<u64>,
    stop: CancellationToken,
) -> (Captured, Captured) {
    let both = async { (out.await.unwrap_or_default(), err.await.unwrap_or_default()) };
    tokio::pin!(both);
    if let Ok(r) = tokio::time::timeout(OUTPUT_GRACE, &mut both).await {
        return r;
    }
    // A holder may have forked before it was killed: look again until none is left.
    for _ in 0..5 {
        let inodes = inodes.clone();
        let killed = tokio::task::spawn_blocking(move || reap::kill_holders(&inodes))
            .await
            .unwrap_or(0);
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(200), &mut both).await {
            return r;
        }
        if killed == 0 {
            break;
        }
    }
    stop.cancel();
    both.await
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

/// Reads `r` to its end (or until `stop`), keeping `limit` bytes and counting the rest.
async fn read_capped<R: AsyncRead + Unpin>(
    mut r: R,
    limit: usize,
    stop: CancellationToken,
) -> Captured {
    let mut kept = Vec::new();
    let mut dropped = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            n = r.read(&mut buf) => n,
            () = stop.cancelled() => break,
        };
        match n {
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
    use crate::sandbox::JobLimits;

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
            gateway: None,
            image: None,
            limits: JobLimits::default(),
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
    #[cfg_attr(
        not(pipe_has_bwrap),
        ignore = "needs a working bubblewrap: apt-get install bubblewrap, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
    )]
    async fn bubblewrap_cuts_the_network_and_hides_home() {
        let sandbox = bwrap();
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
    #[cfg_attr(
        not(pipe_has_bwrap),
        ignore = "needs a working bubblewrap: apt-get install bubblewrap, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
    )]
    async fn the_network_switch_opens_the_network_only_when_asked() {
        let sandbox = bwrap();
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

    /// The sandbox with bubblewrap: the tests that need it are ignored where the build found it
    /// missing, and fail, saying so, when run anyway.
    fn bwrap() -> LocalSandbox {
        let s = LocalSandbox::detect();
        assert!(
            s.bwrap,
            "this test needs a working bubblewrap (`bwrap`): apt-get install bubblewrap"
        );
        s
    }

    /// A test of both sandboxes, `s` in its body: `NAME::unisolated` runs everywhere,
    /// `NAME::under_bubblewrap` is ignored where the build found no working bubblewrap.
    macro_rules! both {
        ($(#[$doc:meta])* async fn $name:ident($s:ident) $body:block) => {
            $(#[$doc])*
            mod $name {
                use super::*;

                #[tokio::test(flavor = "multi_thread")]
                async fn unisolated() {
                    let $s = LocalSandbox { bwrap: false };
                    $body
                }

                #[tokio::test(flavor = "multi_thread")]
                #[cfg_attr(
                    not(pipe_has_bwrap),
                    ignore = "needs a working bubblewrap: apt-get install bubblewrap, then re-probe with PIPE_TEST_PROBE=$(date +%s) cargo test"
                )]
                async fn under_bubblewrap() {
                    let $s = bwrap();
                    $body
                }
            }
        };
    }

    /// A `sleep` duration no other process uses, to find a job's daemon by.
    fn unique_sleep() -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!("{}.{nanos:09}", 4000 + std::process::id() % 1000)
    }

    /// Processes whose command line holds `needle` (zombies have none).
    fn running(needle: &str) -> Vec<String> {
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                if cmd.contains(needle) {
                    found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
                }
            }
        }
        found
    }

    async fn daemon_dies_with_its_job(sandbox: &LocalSandbox, tail: &str, timeout: Duration) {
        let mark = unique_sleep();
        // The pause lets the daemon leave the job's session before the job ends.
        let mut j = job(&format!(
            "setsid sh -c 'sleep {mark}; echo late' & sleep 0.3; echo started{tail}"
        ));
        j.timeout = timeout;
        let t = Instant::now();
        let r = tokio::time::timeout(
            timeout + Duration::from_secs(20),
            sandbox.run(&j, &CancellationToken::new()),
        )
        .await
        .expect("the job returns although its daemon holds stdout")
        .unwrap();
        let took = t.elapsed();
        assert!(
            took < timeout + Duration::from_secs(4),
            "{} took {took:?}",
            r.sandbox
        );
        assert!(r.stdout.contains("started"), "{r:?}");
        assert!(!r.stdout.contains("late"), "{r:?}");
        // SIGKILLed processes are gone once reaped; give the reaper a moment.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !running(&mark).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(running(&mark), Vec::<String>::new(), "{}", r.sandbox);
    }

    both! {
        async fn a_setsid_daemon_holding_stdout_dies_when_its_job_ends(s) {
            daemon_dies_with_its_job(&s, "", Duration::from_secs(30)).await;
        }
    }

    both! {
        async fn a_setsid_daemon_holding_stdout_dies_at_the_timeout(s) {
            let t = Duration::from_secs(1);
            daemon_dies_with_its_job(&s, "; sleep 60", t).await;
        }
    }

    both! {
        async fn a_setsid_daemon_holding_stdout_dies_at_cancellation(s) {
            let mark = unique_sleep();
            let j = job(&format!("setsid sh -c 'sleep {mark}' & sleep 60"));
            let cancel = CancellationToken::new();
            let c = cancel.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                c.cancel();
            });
            let t = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(20), s.run(&j, &cancel))
                .await
                .expect("the job returns");
            assert!(matches!(r, Err(SandboxError::Cancelled)), "{r:?}");
            assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
            let deadline = Instant::now() + Duration::from_secs(2);
            while !running(&mark).is_empty() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(running(&mark), Vec::<String>::new(), "{}", s.label());
        }
    }

    both! {
        async fn the_rlimits_reach_every_process_of_the_job(s) {
            let script = "python3 -c 'import resource as r; print(*[r.getrlimit(getattr(r, \"RLIMIT_\" + n))[0] for n in (\"AS\", \"FSIZE\", \"CPU\", \"CORE\", \"NPROC\")])'";
            let r = s
                .run(&job(script), &CancellationToken::new())
                .await
                .unwrap();
            let v: Vec<u64> = r
                .stdout
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            assert_eq!(v.len(), 5, "{r:?}");
            assert_eq!(v[..4], [2 << 30, 256 << 20, 16, 0], "{}: {r:?}", s.label());
            assert!(v[4] >= 256 && v[4] < 1 << 20, "{}: {r:?}", s.label());
        }
    }

    both! {
        async fn a_write_past_the_file_size_cap_stops_its_writer(s) {
            let mut j = job(
                "head -c 3000000 /dev/zero > \"$PIPE_WORK/big\"; echo \"exit $?\"; wc -c < \"$PIPE_WORK/big\"",
            );
            j.limits.file_size = 1 << 20;
            let r = s.run(&j, &CancellationToken::new()).await.unwrap();
            let lines: Vec<&str> = r.stdout.lines().collect();
            // 128 + SIGXFSZ (25): the writer was killed at the cap.
            assert_eq!(lines, ["exit 153", "1048576"], "{}: {r:?}", s.label());
        }
    }

    both! {
        async fn a_fork_loop_is_bounded(s) {
            let script = "python3 -c '
import os, time
n = 0
for _ in range(200):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(3)
        os._exit(0)
    n += 1
print(n)
'";
            let mut j = job(script);
            j.limits.processes = 20;
            let r = s.run(&j, &CancellationToken::new()).await.unwrap();
            let n: u32 = r.stdout.trim().parse().unwrap_or_else(|_| panic!("{r:?}"));
            // The job's user may run other processes meanwhile (other tests' jobs): bounded well
            // below the 200 it tried, not at exactly 20.
            assert!(n < 100, "{}: forked {n}", s.label());
        }
    }

    both! {
        async fn a_memory_hog_fails(s) {
            // 3 GiB of address space, never touched: refused under the default 2 GiB cap.
            let r = s
                .run(
                    &job("python3 -c 'import mmap; mmap.mmap(-1, 3 << 30)' 2>&1; echo \"exit $?\""),
                    &CancellationToken::new(),
                )
                .await
                .unwrap();
            assert!(r.stdout.contains("exit 1"), "{}: {r:?}", s.label());
            // Memory really filled, past a job's own lower cap.
            let mut j = job("python3 -c 'b = bytearray(600 << 20)' 2>&1; echo \"exit $?\"");
            j.limits.address_space = Some(256 << 20);
            let r = s.run(&j, &CancellationToken::new()).await.unwrap();
            assert!(r.stdout.contains("MemoryError"), "{}: {r:?}", s.label());
            assert!(r.stdout.contains("exit 1"), "{}: {r:?}", s.label());
        }
    }

    both! {
        async fn the_workspace_is_private(s) {
            let r = s
                .run(&job("stat -c %a \"$PIPE_WORK\""), &CancellationToken::new())
                .await
                .unwrap();
            assert_eq!(r.stdout.trim(), "700", "{}: {r:?}", s.label());
        }
    }

    both! {
        async fn a_job_of_root_runs_as_nobody_with_no_capability(s) {
            // SAFETY: geteuid(2) cannot fail.
            let root = unsafe { libc::geteuid() } == 0;
            let r = s
                .run(
                    &job("id -u; id -G; grep CapEff /proc/self/status; id -un"),
                    &CancellationToken::new(),
                )
                .await
                .unwrap();
            let lines: Vec<&str> = r.stdout.lines().collect();
            assert_eq!(lines.len(), 4, "{r:?}");
            if root {
                // By name too: the sandbox's /etc/passwd knows it.
                assert_eq!(lines[..2], ["65534", "65534"], "{}: {r:?}", s.label());
                assert_eq!(lines[3], "nobody", "{}: {r:?}", s.label());
            }
            assert_eq!(
                lines[2],
                "CapEff:\t0000000000000000",
                "{}: {r:?}",
                s.label()
            );
        }
    }

    /// Unisolated with a venv (the path that may keep uid 0 without capabilities, when pipe is
    /// root and `nobody` cannot reach the venv): pipe's environment stays closed to the job.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_unisolated_job_with_a_venv_cannot_read_pipes_environment() {
        // What cargo put in this process's environment at its start (`/proc/<pid>/environ` shows
        // that, not later `set_var`s); the job's own environment holds none of it.
        let mut j = job(
            "tr '\\0' '\\n' < /proc/$PPID/environ | grep -c CARGO_PKG_NAME=; \
             grep CapEff /proc/self/status; echo done",
        );
        j.python = vec!["pytest==8.3.5".into()];
        j.timeout = Duration::from_secs(120);
        let r = LocalSandbox { bwrap: false }
            .run(&j, &CancellationToken::new())
            .await
            .unwrap();
        assert!(r.stdout.contains("done"), "{r:?}");
        assert!(!r.stdout.starts_with('1'), "{r:?}");
        assert!(r.stdout.contains("CapEff:\t0000000000000000"), "{r:?}");
        // The same read by this process finds it: the test can fail.
        let own = std::fs::read(format!("/proc/{}/environ", std::process::id())).unwrap();
        assert!(String::from_utf8_lossy(&own).contains("CARGO_PKG_NAME="));
    }

    both! {
        async fn a_job_is_a_session_of_its_own(s) {
            // Its own session: no controlling terminal to push keystrokes into.
            let script = "exec python3 -c 'import os; print(os.getsid(0), os.getpid())'";
            let r = s
                .run(&job(script), &CancellationToken::new())
                .await
                .unwrap();
            let ids: Vec<u32> = r
                .stdout
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            if s.bwrap {
                // Led by bubblewrap's init; a session begun outside its pid namespace reads 0.
                assert_ne!(ids[0], 0, "{r:?}");
            } else {
                assert_eq!(ids[0], ids[1], "{r:?}");
            }
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_unisolated_job_gains_no_privilege_by_exec() {
        let r = LocalSandbox { bwrap: false }
            .run(
                &job("grep NoNewPrivs /proc/self/status"),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        assert_eq!(r.stdout.trim(), "NoNewPrivs:\t1", "{r:?}");
    }

    both! {
        async fn what_programs_need_of_etc_is_readable(s) {
            let script = "getent passwd root > /dev/null && getent hosts localhost > /dev/null && \
                          test -r /etc/ld.so.cache && echo readable";
            let r = s
                .run(&job(script), &CancellationToken::new())
                .await
                .unwrap();
            assert_eq!(r.stdout.trim(), "readable", "{}: {r:?}", s.label());
        }
    }
}
