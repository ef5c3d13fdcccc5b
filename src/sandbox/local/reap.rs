//! Finding what a job left running. A process that leaves the job's process group (`setsid`)
//! escapes the group kill; if it keeps the job's stdout or stderr open it also keeps pipe
//! reading forever. Every process holding one of those pipes is found by its open files
//! (`/proc/<pid>/fd/* -> pipe:[inode]`) and killed.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The inode of the pipe behind `fd` (both ends of a pipe share it).
pub fn pipe_inode(fd: &impl AsFd) -> Option<u64> {
    let file = std::fs::File::from(fd.as_fd().try_clone_to_owned().ok()?);
    let meta = file.metadata().ok()?;
    Some(meta.ino())
}

/// The processes under `proc` (`/proc`) other than `me` holding a pipe with one of `inodes`.
pub fn holders(proc: &Path, inodes: &[u64], me: u32) -> Vec<i32> {
    let wanted: Vec<String> = inodes.iter().map(|i| format!("pipe:[{i}]")).collect();
    let Ok(entries) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid as u32 == me {
            continue;
        }
        // A process that ends meanwhile, or whose files pipe may not see, is skipped.
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| wanted.iter().any(|w| target.as_os_str() == w.as_str()))
        });
        if holds {
            pids.push(pid);
        }
    }
    pids
}

/// SIGKILLs every process (but pipe) holding one of `inodes`; how many were found.
pub fn kill_holders(inodes: &[u64]) -> usize {
    let pids = holders(Path::new("/proc"), inodes, std::process::id());
    for &pid in &pids {
        // SAFETY: kill(2) on a pid just read from /proc; no memory is touched.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    pids.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn the_holder_of_a_pipe_is_found_by_its_inode_and_pipe_itself_is_not() {
        let mut child = Command::new("sleep")
            .arg("30")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let inode = pipe_inode(&out).unwrap();
        let found = holders(Path::new("/proc"), &[inode], std::process::id());
        assert_eq!(found, [child.id() as i32]);
        assert_eq!(kill_holders(&[inode]), 1);
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        assert!(holders(Path::new("/proc"), &[inode], std::process::id()).is_empty());
    }
}
