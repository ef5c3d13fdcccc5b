//! What a local job's processes may use and who they run as: rlimits set between fork and exec
//! (inherited by everything the job starts, bubblewrap included), and, when pipe runs as root,
//! the unprivileged user `nobody` (65534) the job runs as.

use std::io;
use std::path::Path;
use std::time::Duration;

use crate::sandbox::JobLimits;

/// The user and group a job runs as when pipe runs as root.
pub const NOBODY: u32 = 65534;

/// CPU seconds each process may use beyond the job's timeout (the timeout kills it first; the
/// rlimit bounds a process that outlives its job's kill).
const CPU_MARGIN_SECS: u64 = 5;

/// The uid and gid a job runs as: `nobody` when pipe is root (dropping root is what keeps pipe's
/// memory, its environment and root's files out of reach), else pipe's own (already unprivileged).
pub fn job_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    (unsafe { libc::geteuid() } == 0).then_some((NOBODY, NOBODY))
}

/// Rlimits computed before the fork, applied in the child: [`Rlimits::apply`] only makes
/// `setrlimit` calls (async-signal-safe), as code between fork and exec must.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimits {
    pub address_space: Option<u64>,
    pub processes: u64,
    pub file_size: u64,
    pub cpu_secs: u64,
}

impl Rlimits {
    /// The limits of a job with `limits` and `timeout`, run as `uid`. RLIMIT_NPROC counts every
    /// process and thread of the uid on the host, so the job gets its allowance on top of what
    /// that user already runs (another job's processes, or the operator's own).
    pub fn new(limits: &JobLimits, timeout: Duration, uid: u32) -> Self {
        Self {
            address_space: limits.address_space,
            processes: tasks_of(Path::new("/proc"), uid).saturating_add(limits.processes),
            file_size: limits.file_size,
            cpu_secs: timeout.as_secs() + 1 + CPU_MARGIN_SECS,
        }
    }

    /// Sets the limits on the calling process. Called between fork and exec.
    pub fn apply(&self) -> io::Result<()> {
        if let Some(bytes) = self.address_space {
            set(libc::RLIMIT_AS, bytes, bytes)?;
        }
        set(libc::RLIMIT_NPROC, self.processes, self.processes)?;
        set(libc::RLIMIT_FSIZE, self.file_size, self.file_size)?;
        // SIGXCPU at the soft limit, SIGKILL a second later.
        set(libc::RLIMIT_CPU, self.cpu_secs, self.cpu_secs + 1)?;
        set(libc::RLIMIT_CORE, 0, 0)
    }
}

/// Between fork and exec: the job becomes a session of its own (its process group, which pipe
/// kills, and no controlling terminal: it cannot push keystrokes into the operator's terminal),
/// gets its rlimits, and, unisolated, can gain no privilege by exec (a setuid program).
pub fn confine(rlimits: &Rlimits, no_new_privs: bool) -> io::Result<()> {
    // SAFETY: setsid(2) takes no argument.
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    rlimits.apply()?;
    // SAFETY: prctl(2) with PR_SET_NO_NEW_PRIVS takes integers only.
    if no_new_privs && unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Between fork and exec, for a job that keeps pipe's uid 0: every capability goes (bounding,
/// ambient, effective, permitted, inheritable), so it cannot read a non-dumpable pipe's memory or
/// environment, override file permissions, or regain them by exec.
pub fn drop_capabilities() -> io::Result<()> {
    for cap in 0..64 {
        // SAFETY: prctl(2) with integers only; EINVAL past the last capability is expected.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    }
    // SAFETY: prctl(2) with integers only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset(2) reads the header and two data structs we pass, of the layout of
    // `_LINUX_CAPABILITY_VERSION_3`.
    let r = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit(2) reads the struct we pass and nothing else.
    if unsafe { libc::setrlimit(resource, &raw const lim) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Processes and threads whose real uid is `uid`, from `proc` (`/proc`).
pub fn tasks_of(proc: &Path, uid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir(proc) else {
        return 0;
    };
    let mut n = 0u64;
    for e in entries.flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        // A process that ends meanwhile is simply not counted.
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        if let Some(threads) = threads_of(&status, uid) {
            n += threads;
        }
    }
    n
}

/// The thread count of a `/proc/<pid>/status` whose real uid is `uid`.
fn threads_of(status: &str, uid: u32) -> Option<u64> {
    let mut real = None;
    let mut threads = None;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("Uid:") {
            real = rest
                .split_whitespace()
                .next()
                .and_then(|u| u.parse::<u32>().ok());
        } else if let Some(rest) = line.strip_prefix("Threads:") {
            threads = rest.trim().parse::<u64>().ok();
        }
    }
    (real? == uid).then_some(threads.unwrap_or(1))
}

/// True when every directory above `path` lets others through and `path` itself lets them read:
/// what a job run as `nobody` without bubblewrap needs of the venv and the Python it links to.
pub fn reachable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if meta.permissions().mode() & 0o005 != 0o005 {
        return false;
    }
    path.ancestors()
        .skip(1)
        .all(|dir| std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_counts_its_threads_for_its_real_uid_only() {
        let status = "Name:\tpython3\nUid:\t1000\t1000\t1000\t1000\nThreads:\t7\n";
        assert_eq!(threads_of(status, 1000), Some(7));
        assert_eq!(threads_of(status, 0), None);
        let setuid = "Name:\tx\nUid:\t0\t1000\t1000\t1000\nThreads:\t1\n";
        assert_eq!(threads_of(setuid, 1000), None);
        assert_eq!(threads_of("Name:\tx\n", 0), None);
    }

    #[test]
    fn this_process_is_counted_with_its_threads() {
        // SAFETY: getuid(2) cannot fail.
        let uid = unsafe { libc::getuid() };
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(5));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = barrier.clone();
                std::thread::spawn(move || {
                    b.wait();
                })
            })
            .collect();
        let during = tasks_of(Path::new("/proc"), uid);
        barrier.wait();
        for t in threads {
            t.join().unwrap();
        }
        assert!(during >= 5, "{during}");
    }

    #[test]
    fn the_cpu_cap_follows_the_timeout_and_the_user_gets_its_allowance_on_top() {
        let r = Rlimits::new(
            &JobLimits::default(),
            Duration::from_secs(120),
            u32::MAX - 7,
        );
        assert_eq!(r.cpu_secs, 126);
        assert_eq!(r.processes, 256, "no process has that uid");
        assert_eq!(r.address_space, Some(2 << 30));
        assert_eq!(r.file_size, 256 << 20);
    }

    #[test]
    fn a_path_under_a_private_directory_is_not_reachable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("home");
        let venv = private.join("venv");
        std::fs::create_dir_all(&venv).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&venv, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(reachable_by_others(&venv));
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!reachable_by_others(&venv));
        assert!(!reachable_by_others(&dir.path().join("absent")));
    }
}
