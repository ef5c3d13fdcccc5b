//! Who made a sandbox container: the pipe process, named so that a sweep can tell a live owner
//! from a dead one. A pid alone is not enough (pids are reused), so the owner is the pid with the
//! process's start time (`/proc/<pid>/stat` field 22, clock ticks since boot) and the boot id
//! (`/proc/sys/kernel/random/boot_id`), plus the pid namespace the pid belongs to: a pid of
//! another namespace (pipe in another container, sharing the engine) cannot be looked up from
//! here, so its container is never taken for a dead owner's.

use std::fmt;
use std::path::Path;

/// A process that owns sandbox containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The kernel's boot id: a pid and start time only mean something within one boot.
    pub boot: String,
    /// The pid namespace (`/proc/self/ns/pid`'s inode) the pid is a pid in.
    pub pid_ns: String,
    pub pid: u32,
    /// Clock ticks after boot at which the process started.
    pub start: u64,
}

/// Whether a container's owner is still running, as far as this process can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The process runs: same boot, same pid, same start time.
    Alive,
    /// Another boot, no such pid, or the pid now names a process that started at another time.
    Gone,
    /// A pid of another pid namespace: it cannot be looked up from here, so it counts as alive.
    Unknown,
}

impl Owner {
    /// This process.
    pub fn current() -> Result<Self, String> {
        let proc = Path::new("/proc");
        let pid = std::process::id();
        let boot = std::fs::read_to_string(proc.join("sys/kernel/random/boot_id"))
            .map_err(|e| format!("cannot read the boot id: {e}"))?
            .trim()
            .to_string();
        let pid_ns = pid_namespace(proc, "self")
            .ok_or("cannot read this process's pid namespace (/proc/self/ns/pid)")?;
        let start = start_time(proc, pid)
            .ok_or("cannot read this process's start time (/proc/self/stat)")?;
        Ok(Self {
            boot,
            pid_ns,
            pid,
            start,
        })
    }

    /// Is this owner running, seen from `here` (the current process)?
    pub fn liveness(&self, here: &Owner) -> Liveness {
        self.liveness_in(Path::new("/proc"), here)
    }

    fn liveness_in(&self, proc: &Path, here: &Owner) -> Liveness {
        if self.boot != here.boot {
            Liveness::Gone
        } else if self.pid_ns != here.pid_ns {
            Liveness::Unknown
        } else if start_time(proc, self.pid) == Some(self.start) {
            Liveness::Alive
        } else {
            Liveness::Gone
        }
    }

    /// The label value (`boot/pid-namespace/pid/start`); [`Owner::parse`] reads it back.
    pub fn label(&self) -> String {
        self.to_string()
    }

    /// An owner from its label value; None when it is not one.
    pub fn parse(label: &str) -> Option<Self> {
        let mut parts = label.split('/');
        let boot = parts.next()?;
        let pid_ns = parts.next()?;
        let pid = parts.next()?.parse().ok()?;
        let start = parts.next()?.parse().ok()?;
        if parts.next().is_some() || boot.is_empty() || pid_ns.is_empty() {
            return None;
        }
        Some(Self {
            boot: boot.to_string(),
            pid_ns: pid_ns.to_string(),
            pid,
            start,
        })
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.boot, self.pid_ns, self.pid, self.start
        )
    }
}

/// The inode of a process's pid namespace (`pid:[4026531836]` → `4026531836`).
fn pid_namespace(proc: &Path, who: &str) -> Option<String> {
    let link = std::fs::read_link(proc.join(who).join("ns/pid")).ok()?;
    let link = link.to_str()?;
    let inode = link.strip_prefix("pid:[")?.strip_suffix(']')?;
    (!inode.is_empty() && inode.bytes().all(|b| b.is_ascii_digit())).then(|| inode.to_string())
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks after boot. None
/// when there is no such process.
fn start_time(proc: &Path, pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(proc.join(pid.to_string()).join("stat")).ok()?;
    parse_start_time(&stat)
}

/// The command name (field 2) is in parentheses and may itself hold spaces and parentheses:
/// the fields after it start past the last `)`. Field 3 is the first of them, so field 22 is the
/// 20th.
fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat_line(comm: &str, start: u64) -> String {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
        // stime cutime cstime priority nice threads itrealvalue starttime vsize ...
        format!(
            "4242 ({comm}) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 {start} 1234 56"
        )
    }

    #[test]
    fn the_start_time_is_field_22_whatever_the_command_name() {
        assert_eq!(parse_start_time(&stat_line("pipe", 987_654)), Some(987_654));
        assert_eq!(
            parse_start_time(&stat_line("a) S 1 2 3 (b", 31_337)),
            Some(31_337)
        );
        assert_eq!(parse_start_time(&stat_line("with space", 7)), Some(7));
        assert_eq!(parse_start_time("4242 (cut"), None);
        assert_eq!(parse_start_time("4242 (pipe) S 1 2"), None);
    }

    #[test]
    fn a_label_reads_back_and_a_malformed_one_is_refused() {
        let o = Owner {
            boot: "6f1c2a3e-1111-2222-3333-444455556666".into(),
            pid_ns: "4026531836".into(),
            pid: 4242,
            start: 987_654,
        };
        assert_eq!(Owner::parse(&o.label()), Some(o.clone()));
        for bad in [
            "",
            "x",
            "b/n/1",
            "b/n/1/2/3",
            "b/n/x/2",
            "b/n/1/-2",
            "/n/1/2",
            "b//1/2",
        ] {
            assert_eq!(Owner::parse(bad), None, "{bad}");
        }
    }

    /// A fake `/proc` holding one process, 4242, started at tick 1000.
    fn fake_proc() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("4242")).unwrap();
        std::fs::write(dir.path().join("4242/stat"), stat_line("pipe", 1000)).unwrap();
        dir
    }

    #[test]
    fn an_owner_lives_only_with_its_pid_start_time_and_boot() {
        let proc = fake_proc();
        let here = Owner {
            boot: "boot-a".into(),
            pid_ns: "1".into(),
            pid: 1,
            start: 1,
        };
        let owner = |boot: &str, ns: &str, pid, start| Owner {
            boot: boot.into(),
            pid_ns: ns.into(),
            pid,
            start,
        };
        let live = |o: Owner| o.liveness_in(proc.path(), &here);
        assert_eq!(live(owner("boot-a", "1", 4242, 1000)), Liveness::Alive);
        // The pid was reused by a process that started later.
        assert_eq!(live(owner("boot-a", "1", 4242, 999)), Liveness::Gone);
        // No such process.
        assert_eq!(live(owner("boot-a", "1", 4243, 1000)), Liveness::Gone);
        // Same pid and start time, but of an earlier boot.
        assert_eq!(live(owner("boot-b", "1", 4242, 1000)), Liveness::Gone);
        // A pid of another namespace cannot be looked up here.
        assert_eq!(live(owner("boot-a", "2", 4243, 1000)), Liveness::Unknown);
    }

    #[test]
    fn this_process_is_alive_and_its_label_names_it() {
        let me = Owner::current().unwrap();
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.liveness(&me), Liveness::Alive);
        assert_eq!(Owner::parse(&me.label()), Some(me));
    }
}
