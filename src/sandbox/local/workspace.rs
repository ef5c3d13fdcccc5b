//! A local job's workspace: `$TMPDIR/pipe-sandbox-XXXX/` (mode 0700) holding `work/` (the job's
//! `$PIPE_WORK`, the only part a job under bubblewrap sees) and `owner.lock`, locked by the pipe
//! that made it for as long as it exists. A pipe killed mid-job leaves the directory behind, with
//! the copies of hidden tests in it; the next pipe to start a sandbox sweeps every workspace whose
//! lock it can take (its owner is gone) and never one a live pipe holds.

use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The name every workspace starts with.
pub const PREFIX: &str = "pipe-sandbox-";
/// The owner's lock, beside `work/`.
pub const LOCK: &str = "owner.lock";
/// The lock file while its owner takes it, before it is renamed to [`LOCK`].
const LOCK_PENDING: &str = "owner.lock.pending";
/// The job's directory (`$PIPE_WORK`).
pub const WORK: &str = "work";
/// A workspace without a lock (from a pipe that predates it, or created this instant) is left
/// alone until it is this old.
const UNLOCKED_GRACE: Duration = Duration::from_secs(3600);

/// A workspace held by this process: removed on drop, its lock released after.
#[derive(Debug)]
pub struct Workspace {
    // Field order is drop order: the directory goes before its lock is released.
    dir: tempfile::TempDir,
    _lock: File,
    work: PathBuf,
}

impl Workspace {
    /// A fresh workspace in the temp dir, locked, with an empty `work/` (0700).
    pub fn create() -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()?;
        // The lock is taken under another name and only then renamed into place: a sweep (of
        // another pipe) that finds the lock file finds it held, and one that comes before the
        // rename finds no lock in a young directory, which it leaves alone.
        let pending = dir.path().join(LOCK_PENDING);
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pending)?;
        lock.lock()?;
        std::fs::rename(&pending, dir.path().join(LOCK))?;
        let work = dir.path().join(WORK);
        std::fs::DirBuilder::new().mode(0o700).create(&work)?;
        Ok(Self {
            dir,
            _lock: lock,
            work,
        })
    }

    /// `$PIPE_WORK`.
    pub fn work(&self) -> &Path {
        &self.work
    }

    /// Hands `work/` to `uid:gid`: everything in it, links not followed. `work/` stays 0700.
    pub fn give_to(&self, uid: u32, gid: u32) -> io::Result<()> {
        for entry in walkdir::WalkDir::new(&self.work).follow_links(false) {
            let entry = entry.map_err(io::Error::other)?;
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))?;
        }
        Ok(())
    }

    /// Lets other users through the workspace directory (0711), to the `work/` given to one of
    /// them, without letting them list it or open the lock: for a job run as another user
    /// without bubblewrap (which otherwise mounts `work/` for it).
    pub fn let_through(&self) -> io::Result<()> {
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o711))
    }
}

/// Removes every workspace in `tmp` whose owner is gone: its lock can be taken, or it has none
/// and is older than an hour. Returns the directories removed.
pub fn sweep(tmp: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return Vec::new();
    };
    let mut swept = Vec::new();
    for e in entries.flatten() {
        let is_workspace = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(PREFIX))
            && e.file_type().is_ok_and(|t| t.is_dir());
        if is_workspace && sweep_one(&e.path()) {
            swept.push(e.path());
        }
    }
    swept
}

/// Removes `dir` when its owner is gone; true when it did.
fn sweep_one(dir: &Path) -> bool {
    match File::open(dir.join(LOCK)) {
        Ok(lock) => {
            if lock.try_lock().is_err() {
                return false;
            }
            // Removed while we hold the lock: no other sweeper takes it meanwhile.
            let removed = std::fs::remove_dir_all(dir).is_ok();
            drop(lock);
            removed
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let old = std::fs::symlink_metadata(dir)
                .and_then(|m| m.modified())
                .is_ok_and(|t| {
                    SystemTime::now()
                        .duration_since(t)
                        .is_ok_and(|age| age > UNLOCKED_GRACE)
                });
            old && std::fs::remove_dir_all(dir).is_ok()
        }
        // Someone else's workspace (not ours to open) is not ours to remove.
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_workspace_is_private_and_locked_until_dropped() {
        let ws = Workspace::create().unwrap();
        let top = ws.work().parent().unwrap().to_path_buf();
        assert_eq!(std::fs::metadata(&top).unwrap().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(ws.work()).unwrap().mode() & 0o777, 0o700);
        let other = File::open(top.join(LOCK)).unwrap();
        assert!(other.try_lock().is_err(), "held by its owner");
        drop(other);
        drop(ws);
        assert!(!top.exists());
    }

    #[test]
    fn the_sweep_removes_dead_owners_and_old_unlocked_leftovers_only() {
        let tmp = tempfile::tempdir().unwrap();
        let make = |name: &str, lock: bool| {
            let dir = tmp.path().join(name);
            std::fs::create_dir_all(dir.join(WORK).join("hidden")).unwrap();
            std::fs::write(dir.join(WORK).join("hidden/test_x.py"), "secret").unwrap();
            if lock {
                std::fs::write(dir.join(LOCK), "").unwrap();
            }
            dir
        };
        let dead = make("pipe-sandbox-dead", true);
        let held = make("pipe-sandbox-held", true);
        let fresh = make("pipe-sandbox-fresh", false);
        let legacy = make("pipe-sandbox-legacy", false);
        let unrelated = make("other-dir", true);
        let hour_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
        File::open(&legacy).unwrap().set_modified(hour_ago).unwrap();
        // A live owner: this lock is taken through another open file, as another pipe would.
        let owner = File::open(held.join(LOCK)).unwrap();
        owner.lock().unwrap();

        let mut swept = sweep(tmp.path());
        swept.sort();
        assert_eq!(swept, [dead.clone(), legacy.clone()]);
        assert!(!dead.exists() && !legacy.exists());
        assert!(held.join(WORK).join("hidden/test_x.py").exists());
        assert!(fresh.exists() && unrelated.exists());

        // Its owner gone, the held one goes at the next sweep.
        drop(owner);
        assert_eq!(sweep(tmp.path()), [held]);
    }

    /// A sweep running beside the creation of workspaces (as another pipe's start does) takes
    /// none of them from their owner.
    #[test]
    fn a_workspace_being_created_is_never_swept() {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sweeper = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    sweep(&std::env::temp_dir());
                }
            })
        };
        let mut failed = 0;
        for _ in 0..3000 {
            match Workspace::create() {
                Ok(ws) => drop(ws),
                Err(_) => failed += 1,
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        sweeper.join().unwrap();
        assert_eq!(failed, 0);
    }
}
