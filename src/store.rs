//! The round directory: node outputs and node records under `out/<round-id>/`, a lock so two runs
//! of a round never interleave, and the sweep that removes what a killed run left half-written.
//!
//! Layout:
//! ```text
//! out/<round-id>/
//!   .lock                      held by the running `pipe run`
//!   nodes/<stage>/.../         a node's outputs
//!   nodes/<stage>/.../node.json  its record, committed last
//!   report.md, dataset.json    copies of the publish outputs
//! ```

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::plan::Node;

pub const RECORD_FILE: &str = "node.json";
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

/// Held for the length of a run; dropped, the lock is released (the OS releases it on a kill).
#[derive(Debug)]
pub struct RoundLock {
    _file: File,
}

impl RoundStore {
    pub fn new(out: &Path, round_id: &str) -> Self {
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

    /// Removes temp files a killed run left behind. Call with the lock held.
    pub fn sweep(&self) -> Result<usize, StoreError> {
        fsutil::sweep_temp_files(&self.root).map_err(io_err(&self.root))
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
        fsutil::remove_durably(&dir.join(RECORD_FILE)).map_err(io_err(&dir))?;
        if dir.exists() {
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

    /// Commits a node's record after its outputs are on disk. The manifest lists every output file
    /// with its digest.
    pub fn commit(
        &self,
        node: &Node,
        mut record: NodeRecord,
        outputs: &[PathBuf],
    ) -> Result<(), StoreError> {
        let dir = self.node_dir(node);
        record.outputs = outputs
            .iter()
            .map(|rel| {
                let path = dir.join(rel);
                let meta = fs::metadata(&path).map_err(io_err(&path))?;
                Ok(OutputFile {
                    path: rel.to_string_lossy().into_owned(),
                    bytes: meta.len(),
                    blake3: fsutil::hash_file(&path).map_err(io_err(&path))?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let path = dir.join(RECORD_FILE);
        fsutil::write_json(&path, &record).map_err(io_err(&path))
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
