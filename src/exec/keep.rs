//! The executor's side of the result store ([`crate::results`]): a node about to run whose result
//! the store holds is restored instead (see [`restore`]), and each executed node's result is kept
//! by a thread of its own ([`Keeper`]), off the nodes' critical path. A store that fails (a full
//! disk, a read-only shared file system) never fails the round: the first failure is said once,
//! and the round goes on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use crate::base::fsutil;
use crate::exec::progress::Progress;
use crate::results::{Entry, Found, ResultStore};
use crate::store::{StoreError, io_err};

/// Restores the result stored under `key` computed from `upstream` into the node's emptied
/// directory `dir`: every blob verified first, then each file written. None when the store has
/// no such result, or only one that does not verify (said in the log, naming the entry).
pub fn restore(
    results: &ResultStore,
    key: &str,
    upstream: &str,
    dir: &Path,
) -> Result<Option<(Entry, Vec<PathBuf>)>, StoreError> {
    let (entry, files) = match results.lookup(key, upstream) {
        Found::Hit { entry, files } => (*entry, files),
        Found::Miss => return Ok(None),
        Found::Bad { entry, why } => {
            tracing::warn!(entry = %entry.display(), why, "store entry not used: the node runs");
            return Ok(None);
        }
    };
    let mut paths = Vec::with_capacity(files.len());
    for (rel, bytes) in files {
        // The entry's paths are plain relative (checked when it was read): they stay in `dir`.
        let dest = dir.join(&rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        fsutil::write_replace(&dest, &bytes).map_err(io_err(&dest))?;
        paths.push(PathBuf::from(rel));
    }
    Ok(Some((entry, paths)))
}

/// Keeps executed nodes' results in the store on a thread of its own.
pub struct Keeper {
    tx: Option<mpsc::Sender<(Entry, PathBuf)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keeper {
    pub fn start(results: Arc<ResultStore>, progress: Arc<Progress>) -> Self {
        let (tx, rx) = mpsc::channel::<(Entry, PathBuf)>();
        let thread = std::thread::spawn(move || {
            let mut warned = false;
            for (entry, dir) in rx {
                let Err(e) = results.put(&entry, &dir) else {
                    continue;
                };
                tracing::warn!(id = %entry.id, error = %e, "result not kept in the store");
                if !warned {
                    warned = true;
                    progress.note(&format!(
                        "cannot keep results in the store ({e}); the round goes on without it"
                    ));
                }
            }
        });
        Self {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// Queues a done node's result, its outputs read from `dir`.
    pub fn keep(&self, entry: Entry, dir: PathBuf) {
        if let Some(tx) = &self.tx {
            // The thread ends only after `finish` drops the sender.
            let _ = tx.send((entry, dir));
        }
    }

    /// Keeps what is queued.
    pub fn finish(mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
