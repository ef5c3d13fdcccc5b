//! The round directory: node outputs and node records under `out/<round-id>/`, a lock so two runs
//! of a round never interleave, and the sweep that removes what a killed run left half-written.
//!
//! Layout:
//! ```text
//! out/<round-id>/
//!   .lock                      held by the running `pipe run`
//!   .unfinished                present while a run is on (a killed run leaves it: sweep)
//!   nodes/<stage>/.../         a node's outputs
//!   nodes/<stage>/.../node.json  its record, committed last
//!   report.md, dataset.json    copies of the publish outputs
//! ```

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::names::SafeName;
use crate::plan::Node;

pub const RECORD_FILE: &str = "node.json";
/// Present while a run uses the round; left behind by a killed run, it asks for a sweep.
pub const UNFINISHED_MARK: &str = ".unfinished";
pub const RECORD_FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Done,
    Failed,
}

/// Who is to blame for a failure: the infrastructure (endpoint, sandbox, disk) or pipe itself.
/// A model's bad answer is not a failure: it is a result, recorded in the node's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    Infrastructure,
    Configuration,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputFile {
    pub path: String,
    pub bytes: u64,
    pub blake3: String,
}

/// What the store keeps about one node run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub format: u32,
    pub id: String,
    pub key: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    pub attempts: u32,
    /// Tokens a failed node still used (failed attempts are billed too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::provider::Usage>,
    pub outputs: Vec<OutputFile>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("round `{round}` is busy: another `pipe run` holds {lock}")]
    Busy { round: String, lock: PathBuf },
    #[error("cannot write to {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// A path pipe would write or remove is not plainly inside the round directory.
    #[error("refusing to use {path}: {reason}")]
    Outside { path: PathBuf, reason: String },
}

pub fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A round's directory.
#[derive(Debug, Clone)]
pub struct RoundStore {
    pub root: PathBuf,
}

/// A record waiting for its commit.
#[derive(Debug)]
pub struct PendingRecord {
    path: PathBuf,
    bytes: Vec<u8>,
}

/// Group commit. Nodes hand their prepared records over; a committer thread takes whatever has
/// queued up, makes every write so far durable with one [`fsutil::sync_filesystem`], then writes
/// the records (atomic, not yet durable: the next batch's sync, or [`Committer::finish`], makes
/// them so) and acknowledges each. So a record is never on disk before the outputs it names, and
/// a crash loses at most the records not yet synced, whose nodes run again (the executor's
/// `outstanding` re-runs their dependents too). Thousands of nodes cost a few syncs per batch
/// instead of several fsyncs each.
pub struct Committer<T: Send + 'static> {
    tx: Option<std::sync::mpsc::Sender<(T, PendingRecord)>>,
    thread: Option<std::thread::JoinHandle<Result<(), StoreError>>>,
}

impl<T: Send + 'static> Committer<T> {
    /// Starts the committer for the round at `root`; each acknowledgement carries back the tag
    /// given with its record and whether the write succeeded.
    pub fn start(
        root: &Path,
        acks: tokio::sync::mpsc::UnboundedSender<(T, Result<(), StoreError>)>,
    ) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<(T, PendingRecord)>();
        let root = root.to_path_buf();
        let thread = std::thread::spawn(move || {
            let sync = || fsutil::sync_filesystem(&root);
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                let synced = sync();
                for (tag, record) in batch {
                    let result = match &synced {
                        Ok(()) => fsutil::write_replace(&record.path, &record.bytes)
                            .map_err(io_err(&record.path)),
                        Err(e) => Err(StoreError::Io {
                            path: root.clone(),
                            source: io::Error::new(e.kind(), e.to_string()),
                        }),
                    };
                    // The receiver is gone only when the run is over; the record is written.
                    let _ = acks.send((tag, result));
                }
            }
            sync().map_err(io_err(&root))
        });
        Self {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// Queues a record; its acknowledgement arrives on the channel given to [`Committer::start`].
    pub fn submit(&self, tag: T, record: PendingRecord) {
        if let Some(tx) = &self.tx {
            // The thread ends only after `finish` drops the sender.
            let _ = tx.send((tag, record));
        }
    }

    /// Writes what is queued and makes every record durable.
    pub fn finish(mut self) -> Result<(), StoreError> {
        self.tx = None;
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(StoreError::Io {
                path: PathBuf::new(),
                source: io::Error::other("the committer thread panicked"),
            }),
            None => Ok(()),
        }
    }
}

impl<T: Send + 'static> Drop for Committer<T> {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Held for the length of a run; dropped, the lock is released (the OS releases it on a kill).
#[derive(Debug)]
pub struct RoundLock {
    _file: File,
}

impl RoundStore {
    /// The round `round_id` under the output directory `out` (`--out`, given by the operator).
    pub fn new(out: &Path, round_id: &SafeName) -> Self {
        Self {
            root: out.join(round_id),
        }
    }

    /// Creates the directory and takes the round's lock. A round directory that is a symbolic
    /// link is refused: pipe writes and removes only inside a real directory it was pointed at.
    pub fn lock(&self) -> Result<RoundLock, StoreError> {
        self.check_root()?;
        fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
        self.check_root()?;
        let path = self.root.join(".lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(RoundLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(StoreError::Busy {
                round: self.round_id(),
                lock: path,
            }),
            Err(fs::TryLockError::Error(e)) => Err(StoreError::Io { path, source: e }),
        }
    }

    fn round_id(&self) -> String {
        self.root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Removes temp files a killed run left behind, then marks the round as in use until
    /// [`RoundStore::finished`]. Call with the lock held. The walk over every node directory
    /// happens only when the last run did not finish (the mark is still there): a clean round
    /// holds no temp files, and a fully cached re-run of a large round stays cheap.
    pub fn sweep(&self) -> Result<usize, StoreError> {
        let mark = self.root.join(UNFINISHED_MARK);
        let removed = if mark.exists() {
            fsutil::sweep_temp_files(&self.root).map_err(io_err(&self.root))?
        } else {
            0
        };
        fsutil::write_atomic(&mark, b"a pipe run is using this round, or was killed\n")
            .map_err(io_err(&mark))?;
        Ok(removed)
    }

    /// The run is over and every file it wrote is complete: the next run need not sweep.
    pub fn finished(&self) -> Result<(), StoreError> {
        let mark = self.root.join(UNFINISHED_MARK);
        match fs::remove_file(&mark) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&mark)(e)),
            _ => Ok(()),
        }
    }

    pub fn node_dir(&self, node: &Node) -> PathBuf {
        self.root.join(&node.dir)
    }

    /// A node's record; a missing or unreadable record reads as none (the node runs again).
    pub fn record(&self, node: &Node) -> Option<NodeRecord> {
        let path = self.node_dir(node).join(RECORD_FILE);
        let bytes = fs::read(path).ok()?;
        let record: NodeRecord = serde_json::from_slice(&bytes).ok()?;
        (record.format == RECORD_FORMAT && record.id == node.id).then_some(record)
    }

    /// The round directory, when it is not a symbolic link nor anything but a directory (a missing
    /// one is fine: it is created).
    fn check_root(&self) -> Result<(), StoreError> {
        match fs::symlink_metadata(&self.root) {
            Ok(m) if m.file_type().is_symlink() => Err(Self::outside(
                &self.root,
                format!(
                    "the round directory is a symbolic link (to {}); pipe keeps a round in a real directory: remove the link",
                    fs::read_link(&self.root)
                        .map_or_else(|_| "?".into(), |t| t.display().to_string())
                ),
            )),
            Ok(m) if !m.is_dir() => Err(Self::outside(
                &self.root,
                "the round directory is not a directory".into(),
            )),
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&self.root)(e)),
            _ => Ok(()),
        }
    }

    fn outside(path: &Path, reason: String) -> StoreError {
        StoreError::Outside {
            path: path.to_path_buf(),
            reason,
        }
    }

    /// `rel` under the round directory, proven inside it ([`fsutil::inside`]) with the round
    /// directory itself a real directory.
    pub fn inside(&self, rel: &Path) -> Result<PathBuf, StoreError> {
        self.check_root()?;
        fsutil::inside(&self.root, rel).map_err(|e| match e {
            fsutil::Outside::Refused { path, reason } => StoreError::Outside { path, reason },
            fsutil::Outside::Io { path, source } => StoreError::Io { path, source },
        })
    }

    /// Starts a node: forgets its record before any output is touched, so a crash mid-way never
    /// leaves a record pointing at half-replaced outputs. Returns the (emptied) output directory.
    /// Nothing is removed unless the node directory is proven inside the round ([`Self::inside`]).
    pub fn begin(&self, node: &Node) -> Result<PathBuf, StoreError> {
        let dir = self.inside(&node.dir)?;
        if !dir.exists() {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            return Ok(dir);
        }
        fsutil::remove_durably(&dir.join(RECORD_FILE)).map_err(io_err(&dir))?;
        {
            // Node directories never nest, so everything here is this node's old output.
            for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
                let entry = entry.map_err(io_err(&dir))?;
                let ft = entry.file_type().map_err(io_err(&dir))?;
                if ft.is_dir() {
                    fs::remove_dir_all(entry.path()).map_err(io_err(&entry.path()))?;
                } else {
                    fs::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
                }
            }
        }
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(dir)
    }

    /// A node's record, ready to commit: the manifest lists every output file with its digest.
    pub fn prepare(
        &self,
        node: &Node,
        mut record: NodeRecord,
        outputs: &[PathBuf],
    ) -> Result<PendingRecord, StoreError> {
        let dir = self.node_dir(node);
        record.outputs = outputs
            .iter()
            .map(|rel| {
                let path = dir.join(rel);
                let bytes = fs::read(&path).map_err(io_err(&path))?;
                Ok(OutputFile {
                    path: rel.to_string_lossy().into_owned(),
                    bytes: bytes.len() as u64,
                    blake3: blake3::hash(&bytes).to_hex().to_string(),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let path = dir.join(RECORD_FILE);
        let bytes = fsutil::json_bytes(&record).map_err(io_err(&path))?;
        Ok(PendingRecord { path, bytes })
    }

    /// Forgets the whole round. A round directory that is a symbolic link is refused; links
    /// inside it are removed, never followed.
    pub fn clean(&self) -> Result<bool, StoreError> {
        self.check_root()?;
        if !self.root.exists() {
            return Ok(false);
        }
        // Take the lock so a running round is not pulled from under its feet.
        let lock = self.lock()?;
        fs::remove_dir_all(&self.root).map_err(io_err(&self.root))?;
        drop(lock);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Subject;

    fn name(s: &str) -> SafeName {
        SafeName::new(s).unwrap()
    }

    fn node(dir: &str) -> Node {
        Node {
            id: "gate:alpha#1".into(),
            stage: name("gate"),
            kind: "gate",
            subject: Subject::Impl {
                task: None,
                model: name("alpha"),
                sample: 1,
            },
            dir: PathBuf::from(dir),
            key: "k".into(),
            tolerant: false,
        }
    }

    /// A round store under a temp dir, and a directory outside it holding one file.
    fn setup() -> (tempfile::TempDir, RoundStore, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let store = RoundStore::new(&tmp.path().join("out"), &name("r-2026-01-01"));
        fs::create_dir_all(store.root.join("nodes/gate/alpha")).unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("precious"), "keep").unwrap();
        (tmp, store, outside)
    }

    fn is_outside(r: &Result<PathBuf, StoreError>) -> bool {
        matches!(r, Err(StoreError::Outside { .. }))
    }

    #[test]
    fn begin_empties_a_real_node_directory() {
        let (_tmp, store, _) = setup();
        let dir = store.root.join("nodes/gate/alpha/1");
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("old.txt"), "x").unwrap();
        assert_eq!(store.begin(&node("nodes/gate/alpha/1")).unwrap(), dir);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn begin_never_empties_a_node_directory_linked_outside() {
        let (_tmp, store, outside) = setup();
        std::os::unix::fs::symlink(&outside, store.root.join("nodes/gate/alpha/1")).unwrap();
        assert!(is_outside(&store.begin(&node("nodes/gate/alpha/1"))));
        assert!(outside.join("precious").exists());
    }

    #[test]
    fn begin_refuses_a_link_on_the_way_down() {
        let (_tmp, store, outside) = setup();
        fs::create_dir_all(outside.join("alpha/1")).unwrap();
        fs::remove_dir_all(store.root.join("nodes/gate")).unwrap();
        std::os::unix::fs::symlink(&outside, store.root.join("nodes/gate")).unwrap();
        assert!(is_outside(&store.begin(&node("nodes/gate/alpha/1"))));
        assert!(outside.join("precious").exists());
        assert!(outside.join("alpha/1").is_dir());
    }

    #[test]
    fn a_path_that_climbs_out_is_refused() {
        let (_tmp, store, outside) = setup();
        for dir in ["nodes/../../outside", "/tmp", ""] {
            assert!(is_outside(&store.begin(&node(dir))), "{dir}");
        }
        assert!(outside.join("precious").exists());
    }

    #[test]
    fn a_round_directory_that_is_a_link_is_refused() {
        let (tmp, _, outside) = setup();
        let linked = RoundStore::new(&tmp.path().join("out"), &name("linked-2026-01-01"));
        std::os::unix::fs::symlink(&outside, &linked.root).unwrap();
        assert!(matches!(linked.lock(), Err(StoreError::Outside { .. })));
        assert!(matches!(linked.clean(), Err(StoreError::Outside { .. })));
        assert!(is_outside(&linked.begin(&node("nodes/gate/alpha/1"))));
        assert_eq!(
            crate::fsutil::list_files(&outside).unwrap(),
            [PathBuf::from("precious")]
        );
    }

    #[test]
    fn clean_removes_links_not_what_they_point_at() {
        let (_tmp, store, outside) = setup();
        std::os::unix::fs::symlink(&outside, store.root.join("nodes/gate/alpha/1")).unwrap();
        assert!(store.clean().unwrap());
        assert!(!store.root.exists());
        assert!(outside.join("precious").exists());
    }
}
