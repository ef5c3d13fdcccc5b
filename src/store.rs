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

use crate::base::dirhandle::{DirHandle, FileStat, Kind};
use crate::base::fsutil;
use crate::base::names::SafeName;
use crate::plan::Node;
use crate::plan::key::InputDigests;

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
    /// Not a failure: a spending cap kept the node from calling its model.
    Budget,
}

impl FailureKind {
    /// The label reports and messages put before the failure's message.
    pub fn label(self) -> &'static str {
        match self {
            Self::Infrastructure => "infrastructure",
            Self::Configuration => "configuration",
            Self::Internal => "internal error",
            Self::Budget => "skipped (budget)",
        }
    }
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
    /// The file's modification and change times when the record was made: while both and the
    /// size are unchanged the file is taken as unchanged; otherwise its digest decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<Stamp>,
}

/// A directory that holds outputs (`files/`, its subdirectories): a file added to it or removed
/// from it changes what a dependent that lists the directory reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputDir {
    pub path: String,
    pub stamp: Stamp,
}

/// Modification and status-change times in nanoseconds since the epoch. The change time cannot
/// be set back by a user (`touch -d` sets it to now), so an edit that restores the size and the
/// modification time is still seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl From<&FileStat> for Stamp {
    fn from(st: &FileStat) -> Self {
        Self {
            mtime_ns: st.mtime_ns,
            ctime_ns: st.ctime_ns,
        }
    }
}

impl Stamp {
    pub fn of(meta: &fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            mtime_ns: meta
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec()),
            ctime_ns: meta
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.ctime_nsec()),
        }
    }
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
    pub usage: Option<crate::vocab::Usage>,
    pub outputs: Vec<OutputFile>,
    /// The directories below the node's own that hold outputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<OutputDir>,
}

/// A record as written: the record, and the digest of each input the node's key hashed (so a
/// later `pipe status` can say which input changed). Records written before pipe kept inputs
/// have none.
#[derive(Serialize)]
struct RecordFile<'a> {
    #[serde(flatten)]
    record: &'a NodeRecord,
    inputs: &'a InputDigests,
}

/// The inputs part of a record file, read on its own.
#[derive(Deserialize)]
struct RecordInputs {
    #[serde(default)]
    inputs: Option<std::collections::BTreeMap<String, String>>,
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
    /// The record it writes.
    pub record: Box<NodeRecord>,
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

/// True for a non-empty relative path of plain components (no `..`, `.`, root or prefix).
pub fn is_plain_relative(path: &str) -> bool {
    !path.is_empty()
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'))
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
        let dir = DirHandle::open(&self.node_dir(node)).ok()?;
        Self::record_in(&dir, node)
    }

    fn record_in(dir: &DirHandle, node: &Node) -> Option<NodeRecord> {
        let bytes = dir.read(RECORD_FILE).ok()?;
        let record: NodeRecord = serde_json::from_slice(&bytes).ok()?;
        // A record read back is input like any other: one whose paths would leave the node's
        // directory is not pipe's and is ignored (the node runs again).
        let confined = record
            .outputs
            .iter()
            .map(|o| o.path.as_str())
            .chain(record.dirs.iter().map(|d| d.path.as_str()))
            .all(is_plain_relative);
        (record.format == RECORD_FORMAT && record.id == node.id && confined).then_some(record)
    }

    /// The digest of each input a node's key hashed when its record was made, by field; none
    /// without a record, or for a record made before pipe kept them.
    pub fn recorded_inputs(
        &self,
        node: &Node,
    ) -> Option<std::collections::BTreeMap<String, String>> {
        let dir = DirHandle::open(&self.node_dir(node)).ok()?;
        Self::record_in(&dir, node)?;
        let bytes = dir.read(RECORD_FILE).ok()?;
        serde_json::from_slice::<RecordInputs>(&bytes).ok()?.inputs
    }

    /// A node's record with its outputs checked: for a done record, the outputs that are no
    /// longer what it says (see [`RoundStore::changed_outputs`]).
    pub fn load(&self, node: &Node) -> (Option<NodeRecord>, Vec<String>) {
        let Ok(dir) = DirHandle::open(&self.node_dir(node)) else {
            return (None, Vec::new());
        };
        let record = Self::record_in(&dir, node);
        let changed = match &record {
            Some(r) if r.status == Status::Done => self.changed_in(&dir, node, r),
            _ => Vec::new(),
        };
        (record, changed)
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

    /// A node's record, ready to commit: the manifest lists every output file with its digest,
    /// size and times, and every directory below the node's own that holds outputs.
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
                let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
                Ok(OutputFile {
                    path: rel.to_string_lossy().into_owned(),
                    bytes: bytes.len() as u64,
                    blake3: blake3::hash(&bytes).to_hex().to_string(),
                    stamp: Some(Stamp::of(&meta)),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let mut dirs = std::collections::BTreeSet::new();
        for rel in outputs {
            let mut parent = rel.parent();
            while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                dirs.insert(p.to_path_buf());
                parent = p.parent();
            }
        }
        record.dirs = dirs
            .into_iter()
            .map(|rel| {
                let path = dir.join(&rel);
                let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
                Ok(OutputDir {
                    path: rel.to_string_lossy().into_owned(),
                    stamp: Stamp::of(&meta),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let path = dir.join(RECORD_FILE);
        let file = RecordFile {
            record: &record,
            inputs: &node.inputs,
        };
        let bytes = fsutil::json_bytes(&file).map_err(io_err(&path))?;
        Ok(PendingRecord {
            path,
            bytes,
            record: Box::new(record),
        })
    }

    /// The outputs of a record that are no longer what it says, each with what happened
    /// (`files/x.py (missing)`, `files/x.py`, `files/evil.py (added)`); empty when all stand.
    /// Size and times are compared first; a file whose times moved is hashed, so a touched but
    /// unchanged file still stands.
    pub fn changed_outputs(&self, node: &Node, record: &NodeRecord) -> Vec<String> {
        match DirHandle::open(&self.node_dir(node)) {
            Ok(dir) => self.changed_in(&dir, node, record),
            Err(_) => vec![format!("{} (missing)", node.dir.display())],
        }
    }

    fn changed_in(&self, dir: &DirHandle, node: &Node, record: &NodeRecord) -> Vec<String> {
        let mut changed = Vec::new();
        for out in &record.outputs {
            let st = match dir.stat(&out.path) {
                Ok(st) if st.kind == Kind::File => st,
                Ok(_) => {
                    changed.push(format!("{} (not a regular file)", out.path));
                    continue;
                }
                Err(_) => {
                    changed.push(format!("{} (missing)", out.path));
                    continue;
                }
            };
            if st.len != out.bytes {
                changed.push(out.path.clone());
                continue;
            }
            if out.stamp == Some(Stamp::from(&st)) {
                continue;
            }
            let same = dir
                .read(&out.path)
                .is_ok_and(|bytes| blake3::hash(&bytes).to_hex().as_str() == out.blake3);
            if !same {
                changed.push(out.path.clone());
            }
        }
        for d in &record.dirs {
            match dir.stat(&d.path) {
                Ok(st) if st.kind == Kind::Dir && Stamp::from(&st) == d.stamp => continue,
                Ok(st) if st.kind == Kind::Dir => {}
                _ => {
                    changed.push(format!("{}/ (missing)", d.path));
                    continue;
                }
            }
            let expected: std::collections::BTreeSet<&str> = record
                .outputs
                .iter()
                .map(|o| o.path.as_str())
                .chain(record.dirs.iter().map(|d| d.path.as_str()))
                .filter_map(|p| p.strip_prefix(d.path.as_str())?.strip_prefix('/'))
                .filter(|rest| !rest.contains('/'))
                .collect();
            let Ok(entries) = fs::read_dir(self.node_dir(node).join(&d.path)) else {
                changed.push(format!("{}/ (unreadable)", d.path));
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if !expected.contains(name.as_ref()) {
                    changed.push(format!("{}/{name} (added)", d.path));
                }
            }
        }
        changed
    }

    /// The round directory keeps a copy of each output of a publish node (`report.md`, ...),
    /// where people look first. After a run that found the node done, a copy that was deleted or
    /// edited is written again from the node's verified output; returns how many were.
    pub fn restore_copies(&self, node: &Node) -> Result<usize, StoreError> {
        let Some(record) = self.record(node).filter(|r| r.status == Status::Done) else {
            return Ok(0);
        };
        let dir = self.node_dir(node);
        let mut restored = 0;
        for out in record.outputs.iter().filter(|o| !o.path.contains('/')) {
            let from = dir.join(&out.path);
            let to = self.root.join(&out.path);
            let same = fs::symlink_metadata(&to).is_ok_and(|m| m.is_file() && m.len() == out.bytes)
                && fs::read(&to).is_ok_and(|b| blake3::hash(&b).to_hex().as_str() == out.blake3);
            if !same {
                let bytes = fs::read(&from).map_err(io_err(&from))?;
                fsutil::write_atomic(&to, &bytes).map_err(io_err(&to))?;
                restored += 1;
            }
        }
        Ok(restored)
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
            kind: crate::plan::NodeKind::Gate,
            subject: Subject::Impl {
                task: None,
                model: name("alpha"),
                sample: 1,
            },
            dir: PathBuf::from(dir),
            key: "k".into(),
            inputs: InputDigests::default(),
            tolerant: false,
        }
    }

    fn record(store: &RoundStore, node: &Node, outputs: &[&str]) -> NodeRecord {
        let blank = NodeRecord {
            format: RECORD_FORMAT,
            id: node.id.clone(),
            key: node.key.clone(),
            status: Status::Done,
            failure: None,
            started_at: String::new(),
            finished_at: String::new(),
            duration_ms: 0,
            attempts: 1,
            usage: None,
            outputs: Vec::new(),
            dirs: Vec::new(),
        };
        let outputs: Vec<PathBuf> = outputs.iter().map(PathBuf::from).collect();
        let pending = store.prepare(node, blank, &outputs).unwrap();
        serde_json::from_slice(&pending.bytes).unwrap()
    }

    #[test]
    fn outputs_are_verified_by_size_times_digest_and_listing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = RoundStore::new(tmp.path(), &name("r"));
        let n = node("nodes/build/a/1");
        let dir = store.begin(&n).unwrap();
        fs::create_dir_all(dir.join("files/sub")).unwrap();
        fs::write(dir.join("build.json"), "{}").unwrap();
        fs::write(dir.join("files/a.py"), "a = 1\n").unwrap();
        fs::write(dir.join("files/sub/b.py"), "b = 2\n").unwrap();
        let rec = record(&store, &n, &["build.json", "files/a.py", "files/sub/b.py"]);
        assert_eq!(
            rec.dirs.iter().map(|d| d.path.as_str()).collect::<Vec<_>>(),
            ["files", "files/sub"]
        );
        assert!(store.changed_outputs(&n, &rec).is_empty());
        // Rewritten with the same bytes: the times moved, the digest stands.
        fs::write(dir.join("files/a.py"), "a = 1\n").unwrap();
        assert!(store.changed_outputs(&n, &rec).is_empty());
        fs::write(dir.join("files/a.py"), "a = 2\n").unwrap();
        fs::write(dir.join("files/sub/c.py"), "").unwrap();
        fs::remove_file(dir.join("build.json")).unwrap();
        assert_eq!(
            store.changed_outputs(&n, &rec),
            [
                "build.json (missing)",
                "files/a.py",
                "files/sub/c.py (added)"
            ]
        );
        // A link where a file was is not the file.
        fs::remove_file(dir.join("files/sub/c.py")).unwrap();
        fs::remove_file(dir.join("files/sub/b.py")).unwrap();
        std::os::unix::fs::symlink(dir.join("files/a.py"), dir.join("files/sub/b.py")).unwrap();
        assert!(
            store
                .changed_outputs(&n, &rec)
                .contains(&"files/sub/b.py (not a regular file)".to_string())
        );
    }

    /// A node whose key hashed a few inputs, with a done record of one output committed.
    fn committed(store: &RoundStore) -> (Node, NodeRecord) {
        use crate::plan::key::{KeyInput, KindInput, PublishKey, seal};
        let mut n = node("nodes/gate/alpha/1");
        let (key, inputs) = seal(&KeyInput {
            format: 2,
            stage: name("gate"),
            kind: crate::plan::NodeKind::Gate,
            subject: n.subject.clone(),
            of_kind: KindInput::Publish(PublishKey {
                formats: vec![crate::config::PublishFormat::Markdown],
            }),
            recording: None,
            upstream: vec!["up".into()],
        });
        (n.key, n.inputs) = (key, inputs);
        let dir = store.begin(&n).unwrap();
        fs::write(dir.join("gate.json"), "{}").unwrap();
        let rec = record(store, &n, &["gate.json"]);
        let pending = store
            .prepare(&n, rec.clone(), &[PathBuf::from("gate.json")])
            .unwrap();
        fs::write(&pending.path, &pending.bytes).unwrap();
        (n, rec)
    }

    #[test]
    fn a_record_reads_back_with_the_inputs_its_key_hashed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = RoundStore::new(tmp.path(), &name("r"));
        let (n, rec) = committed(&store);
        assert_eq!(store.record(&n), Some(rec.clone()));
        assert_eq!(store.load(&n), (Some(rec), Vec::new()));
        let inputs = store.recorded_inputs(&n).unwrap();
        assert_eq!(inputs, n.inputs.to_map());
        assert_eq!(
            inputs.keys().collect::<Vec<_>>(),
            ["format", "formats", "upstream"]
        );
        // A record of another node (or of none) is not this node's.
        let mut other = n.clone();
        other.id = "gate:beta#1".into();
        assert_eq!(store.record(&other), None);
        assert_eq!(store.recorded_inputs(&other), None);
    }

    #[test]
    fn a_record_without_inputs_still_reads() {
        let tmp = tempfile::tempdir().unwrap();
        let store = RoundStore::new(tmp.path(), &name("r"));
        let (n, rec) = committed(&store);
        let path = store.node_dir(&n).join(RECORD_FILE);
        fs::write(&path, serde_json::to_vec(&rec).unwrap()).unwrap();
        assert_eq!(store.record(&n), Some(rec));
        assert_eq!(store.recorded_inputs(&n), None);
    }

    #[test]
    fn a_deleted_output_makes_a_done_node_not_done() {
        let tmp = tempfile::tempdir().unwrap();
        let store = RoundStore::new(tmp.path(), &name("r"));
        let (n, rec) = committed(&store);
        fs::remove_file(store.node_dir(&n).join("gate.json")).unwrap();
        let (read, changed) = store.load(&n);
        assert_eq!(read.map(|r| r.status), Some(Status::Done));
        assert_eq!(changed, ["gate.json (missing)"]);
        assert_eq!(store.changed_outputs(&n, &rec), changed);
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
            crate::base::fsutil::list_files(&outside).unwrap(),
            [PathBuf::from("precious")]
        );
    }

    #[test]
    fn only_plain_relative_paths_are_outputs() {
        for ok in ["a", "files/a.py", "files/sub/b"] {
            assert!(is_plain_relative(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "files/../../x",
            "./a",
            "files/./a",
        ] {
            assert!(!is_plain_relative(bad), "{bad}");
        }
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
