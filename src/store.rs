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

    /// Creates the directory and takes the round's lock.
    pub fn lock(&self) -> Result<RoundLock, StoreError> {
        fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
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

    /// Starts a node: forgets its record before any output is touched, so a crash mid-way never
    /// leaves a record pointing at half-replaced outputs. Returns the (emptied) output directory.
    pub fn begin(&self, node: &Node) -> Result<PathBuf, StoreError> {
        let dir = self.node_dir(node);
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

    /// Forgets the whole round.
    pub fn clean(&self) -> Result<bool, StoreError> {
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
