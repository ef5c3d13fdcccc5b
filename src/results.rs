//! The result store: every done node's outputs kept by its key, in a directory shared by every
//! round of a project (`out/.store` by default, `--store DIR` or `PIPE_STORE`), so a node whose key
//! was ever computed is restored instead of run again (switch a rubric A -> B -> A and the third
//! run calls no model).
//!
//! Layout:
//! ```text
//! <store>/
//!   .lock                       shared by each run using the store, exclusive for `pipe store gc`
//!   blobs/<2 hex>/<blake3 hex>  an output file's bytes, named by their digest
//!   entries/<2 hex>/<key>.json  a node's result: its outputs (path -> blob), its record's times
//!                               and usage, and the results of its upstream when it ran; its
//!                               modification time is when it was last used
//! ```
//!
//! Everything read back is untrusted: an entry is taken only when it parses, names this key,
//! lists plain relative paths, and every blob it names is a regular file of the size and blake3
//! digest it says. Anything else is a miss and the node runs. Blobs are written before the entry
//! that names them, each atomically (a temp file renamed over the name, so concurrent runs writing
//! the same blob or entry leave one whole copy).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::base::fsutil;
use crate::store::{NodeRecord, OutputFile, is_plain_relative};
use crate::vocab::Usage;

/// The store under the output directory when none is given.
pub const DEFAULT_DIR: &str = ".store";
/// The environment variable naming the store (`--store` wins).
pub const ENV: &str = "PIPE_STORE";
pub const ENTRY_FORMAT: u32 = 1;
const LOCK_FILE: &str = ".lock";
/// An entry or blob file larger than this is not pipe's: it is not read.
const MAX_ENTRY_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("the result store {path} is busy: `pipe store gc` holds it; try again when it ends")]
    BusyGc { path: PathBuf },
    #[error(
        "the result store {path} is in use by a running `pipe run`; run `pipe store gc` when no round runs"
    )]
    BusyRun { path: PathBuf },
    #[error("result store: {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("result store: refusing {path}: {reason}")]
    Refused { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ResultsError + '_ {
    move |source| ResultsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One output of an entry: where it goes in the node's directory, and its blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryFile {
    pub path: String,
    pub bytes: u64,
    pub blake3: String,
}

/// A node's result as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub format: u32,
    pub key: String,
    pub id: String,
    pub stage: String,
    /// The results of the node's upstream when it ran ([`upstream_digest`]): an entry is restored
    /// only onto the same upstream results, so a dependent never pairs with upstream outputs it
    /// was not computed from.
    pub upstream: String,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    pub outputs: Vec<EntryFile>,
    pub created_at: String,
}

impl Entry {
    /// The entry of a done record.
    pub fn of(record: &NodeRecord, stage: &str, upstream: String) -> Self {
        Self {
            format: ENTRY_FORMAT,
            key: record.key.clone(),
            id: record.id.clone(),
            stage: stage.to_string(),
            upstream,
            started_at: record.started_at.clone(),
            finished_at: record.finished_at.clone(),
            duration_ms: record.duration_ms,
            attempts: record.attempts,
            usage: record.usage,
            outputs: record
                .outputs
                .iter()
                .map(|o| EntryFile {
                    path: o.path.clone(),
                    bytes: o.bytes,
                    blake3: o.blake3.clone(),
                })
                .collect(),
            created_at: jiff::Timestamp::now().to_string(),
        }
    }
}

/// A node's result as a digest of its outputs (path and blake3 of each): what a dependent read.
pub fn result_digest(outputs: &[OutputFile]) -> String {
    let mut files: Vec<(&str, &str)> = outputs
        .iter()
        .map(|o| (o.path.as_str(), o.blake3.as_str()))
        .collect();
    files.sort_unstable();
    let mut h = blake3::Hasher::new();
    for (path, digest) in files {
        h.update(path.as_bytes());
        h.update(b"\0");
        h.update(digest.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex().to_string()
}

/// The results a node's upstream handed it: each upstream node's id and [`result_digest`], in
/// the plan's order.
pub fn upstream_digest<'a>(upstream: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut h = blake3::Hasher::new();
    for (id, result) in upstream {
        h.update(id.as_bytes());
        h.update(b"\0");
        h.update(result.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex().to_string()
}

/// True for 64 lowercase hex digits: a key or a blake3 digest, safe as a file name.
fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Opens a regular file without following a link at its last component, and refuses one past
/// `max` bytes.
fn open_regular(path: &Path, max: u64) -> io::Result<(File, u64)> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    if meta.len() > max {
        return Err(io::Error::other(format!(
            "{} bytes, past the limit of {max}",
            meta.len()
        )));
    }
    Ok((file, meta.len()))
}

fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let (file, len) = open_regular(path, max)?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A directory of the store pipe writes into: created when missing, refused when it is a link
/// or not a directory.
fn real_dir(path: &Path) -> Result<(), ResultsError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(ResultsError::Refused {
            path: path.to_path_buf(),
            reason: "not a directory (a symbolic link or a file); pipe follows none: remove it"
                .into(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(path).map_err(io_err(path))?;
            real_dir(path)
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Found {
    /// No entry under this key, or one computed from other upstream results.
    Miss,
    /// An entry whose every blob verified: the outputs' bytes, by path.
    Hit {
        entry: Box<Entry>,
        files: Vec<(String, Vec<u8>)>,
    },
    /// An entry that cannot be used, and why (the node runs).
    Bad { entry: PathBuf, why: String },
}

/// The store, open for a run: holds the shared lock until dropped.
#[derive(Debug)]
pub struct ResultStore {
    pub root: PathBuf,
    _lock: File,
}

/// The store's paths, for the commands that only read it or hold it alone.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    pub fn entry_path(&self, key: &str) -> PathBuf {
        self.root
            .join("entries")
            .join(&key[..2])
            .join(format!("{key}.json"))
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.root.join("blobs").join(&digest[..2]).join(digest)
    }

    fn lock_file(&self) -> Result<File, ResultsError> {
        real_dir(&self.root)?;
        let path = self.root.join(LOCK_FILE);
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err(&path))
    }

    /// Takes the store alone (for `pipe store gc`): refused while a run uses it.
    pub fn lock_exclusive(&self) -> Result<File, ResultsError> {
        let file = self.lock_file()?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(fs::TryLockError::WouldBlock) => Err(ResultsError::BusyRun {
                path: self.root.clone(),
            }),
            Err(fs::TryLockError::Error(e)) => Err(io_err(&self.root.join(LOCK_FILE))(e)),
        }
    }

    /// Every entry file, with its path.
    pub fn entry_files(&self) -> Result<Vec<PathBuf>, ResultsError> {
        self.files_under("entries", |name| {
            name.strip_suffix(".json").is_some_and(is_digest)
        })
    }

    /// Every blob file.
    pub fn blob_files(&self) -> Result<Vec<PathBuf>, ResultsError> {
        self.files_under("blobs", is_digest)
    }

    /// The regular files two levels under `sub` whose name passes `named` (links are not
    /// followed, other names left alone).
    fn files_under(
        &self,
        sub: &str,
        named: impl Fn(&str) -> bool,
    ) -> Result<Vec<PathBuf>, ResultsError> {
        let dir = self.root.join(sub);
        let mut out = Vec::new();
        if !dir.exists() {
            return Ok(out);
        }
        for entry in walkdir::WalkDir::new(&dir)
            .min_depth(2)
            .max_depth(2)
            .follow_links(false)
            .sort_by_file_name()
        {
            let entry = entry.map_err(|e| io_err(&dir)(io::Error::other(e)))?;
            if entry.file_type().is_file() && named(&entry.file_name().to_string_lossy()) {
                out.push(entry.into_path());
            }
        }
        Ok(out)
    }

    /// Reads and checks an entry file: it parses, is of this format, names the key its file is
    /// named by, is done work of plain relative paths, each once, with digests for blob names.
    pub fn read_entry(path: &Path) -> Result<Entry, String> {
        let bytes = read_regular(path, MAX_ENTRY_BYTES).map_err(|e| e.to_string())?;
        let entry: Entry = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        let named = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"));
        if entry.format != ENTRY_FORMAT {
            return Err(format!("format {} is not {ENTRY_FORMAT}", entry.format));
        }
        if named != Some(entry.key.as_str()) || !is_digest(&entry.key) {
            return Err("the key inside is not the one the file is named by".into());
        }
        let mut seen = HashSet::new();
        for o in &entry.outputs {
            if !is_plain_relative(&o.path) {
                return Err(format!("output `{}` is not a plain relative path", o.path));
            }
            if !seen.insert(o.path.as_str()) {
                return Err(format!("output `{}` is listed twice", o.path));
            }
            if !is_digest(&o.blake3) {
                return Err(format!("output `{}` has no blake3 digest", o.path));
            }
        }
        // A file may not also be a directory of another (`a` and `a/b`).
        for o in &entry.outputs {
            let mut p = o.path.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                if seen.contains(parent) {
                    return Err(format!("output `{parent}` is also a directory"));
                }
                p = parent;
            }
        }
        Ok(entry)
    }

    /// A blob's bytes, when its file is a regular file of `bytes` bytes hashing to `digest`.
    fn read_blob(&self, digest: &str, bytes: u64) -> Result<Vec<u8>, String> {
        let path = self.blob_path(digest);
        let data = read_regular(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        if data.len() as u64 != bytes {
            return Err(format!(
                "{}: {} bytes, the entry says {bytes}",
                path.display(),
                data.len()
            ));
        }
        if blake3::hash(&data).to_hex().as_str() != digest {
            // Verifiably wrong: removed, so the next save writes it whole again.
            let _ = fs::remove_file(&path);
            return Err(format!(
                "{}: its content does not hash to its name (removed)",
                path.display()
            ));
        }
        Ok(data)
    }
}

impl ResultStore {
    /// Opens (creating) the store at `root` for a run, sharing it with other runs; refused while
    /// `pipe store gc` holds it, or when a directory of it is a link.
    pub fn open(root: &Path) -> Result<Self, ResultsError> {
        let layout = Layout::new(root);
        let lock = layout.lock_file()?;
        match lock.try_lock_shared() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(ResultsError::BusyGc {
                    path: root.to_path_buf(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&root.join(LOCK_FILE))(e)),
        }
        real_dir(&root.join("blobs"))?;
        real_dir(&root.join("entries"))?;
        Ok(Self {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }

    fn layout(&self) -> Layout {
        Layout::new(&self.root)
    }

    /// The result stored under `key` when it was computed from `upstream` ([`upstream_digest`]),
    /// with every blob read and verified. A hit marks the entry used now (for `pipe store gc`).
    pub fn lookup(&self, key: &str, upstream: &str) -> Found {
        if !is_digest(key) {
            return Found::Miss;
        }
        let layout = self.layout();
        let path = layout.entry_path(key);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Found::Miss,
            _ => {}
        }
        let bad = |why: String| Found::Bad {
            entry: path.clone(),
            why,
        };
        let entry = match Layout::read_entry(&path) {
            Ok(e) => e,
            Err(why) => return bad(why),
        };
        if entry.upstream != upstream {
            return Found::Miss;
        }
        let mut files = Vec::with_capacity(entry.outputs.len());
        let mut broken = Vec::new();
        // Every blob is checked (and a damaged one removed, for the next save to write whole).
        for o in &entry.outputs {
            match layout.read_blob(&o.blake3, o.bytes) {
                Ok(data) => files.push((o.path.clone(), data)),
                Err(why) => broken.push(format!("output `{}`: {why}", o.path)),
            }
        }
        if !broken.is_empty() {
            return bad(broken.join("; "));
        }
        // Last used: the entry's modification time. Failing to mark it only makes gc see it older.
        if let Ok(f) = File::options()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            let _ = f.set_modified(SystemTime::now());
        }
        Found::Hit {
            entry: Box::new(entry),
            files,
        }
    }

    /// Keeps a done node's outputs, read from its directory `dir`: each blob (unless already
    /// there whole), then the entry. An output that no longer hashes to what the entry says is
    /// not kept (nor is the entry).
    pub fn put(&self, entry: &Entry, dir: &Path) -> Result<(), ResultsError> {
        let layout = self.layout();
        if !is_digest(&entry.key) {
            return Err(ResultsError::Refused {
                path: layout.root.join("entries"),
                reason: format!("`{}` is not a key", entry.key),
            });
        }
        for o in &entry.outputs {
            let blob = layout.blob_path(&o.blake3);
            // A blob already there is kept only when it is whole (a damaged one is replaced).
            if fs::symlink_metadata(&blob).is_ok_and(|m| m.is_file() && m.len() == o.bytes)
                && layout.read_blob(&o.blake3, o.bytes).is_ok()
            {
                continue;
            }
            let from = dir.join(&o.path);
            let data = read_regular(&from, o.bytes).map_err(io_err(&from))?;
            if blake3::hash(&data).to_hex().as_str() != o.blake3 {
                return Err(ResultsError::Refused {
                    path: from,
                    reason: "changed since its record was made; not kept".into(),
                });
            }
            let parent = blob.parent().expect("a blob has a directory");
            real_dir(parent)?;
            fsutil::write_replace_shared(&blob, &data).map_err(io_err(&blob))?;
        }
        let path = layout.entry_path(&entry.key);
        real_dir(path.parent().expect("an entry has a directory"))?;
        let bytes = fsutil::json_bytes(entry).map_err(io_err(&path))?;
        fsutil::write_replace_shared(&path, &bytes).map_err(io_err(&path))
    }
}

/// What `pipe store stats` says.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub store: PathBuf,
    pub entries: usize,
    /// Entry files that are not pipe's (unreadable, or failing their checks).
    pub invalid_entries: usize,
    pub blobs: usize,
    /// Bytes of all blobs.
    pub blob_bytes: u64,
    /// Bytes of all entry files.
    pub entry_bytes: u64,
    /// Blobs no entry names (`pipe store gc` removes them).
    pub unreferenced_blobs: usize,
    /// When the least and the most recently used entries were last used.
    pub oldest_used: Option<String>,
    pub newest_used: Option<String>,
    /// Entries per stage.
    pub stages: BTreeMap<String, usize>,
}

/// An entry as `stats` and `gc` see it.
struct Listed {
    path: PathBuf,
    used: SystemTime,
    file_bytes: u64,
    entry: Option<Entry>,
}

fn list_entries(layout: &Layout) -> Result<Vec<Listed>, ResultsError> {
    layout
        .entry_files()?
        .into_iter()
        .map(|path| {
            let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
            let used = meta.modified().map_err(io_err(&path))?;
            let entry = Layout::read_entry(&path).ok();
            Ok(Listed {
                path,
                used,
                file_bytes: meta.len(),
                entry,
            })
        })
        .collect()
}

/// Each blob file's name and size.
fn list_blobs(layout: &Layout) -> Result<Vec<(PathBuf, String, u64, SystemTime)>, ResultsError> {
    layout
        .blob_files()?
        .into_iter()
        .map(|path| {
            let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mtime = meta.modified().map_err(io_err(&path))?;
            Ok((path, name, meta.len(), mtime))
        })
        .collect()
}

fn timestamp(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
        .unwrap_or_default()
}

/// Counts what the store at `root` holds; a missing store holds nothing.
pub fn stats(root: &Path) -> Result<Stats, ResultsError> {
    let layout = Layout::new(root);
    let mut s = Stats {
        store: root.to_path_buf(),
        ..Stats::default()
    };
    let entries = list_entries(&layout)?;
    let blobs = list_blobs(&layout)?;
    let mut named = HashSet::new();
    for l in &entries {
        s.entry_bytes += l.file_bytes;
        match &l.entry {
            Some(e) => {
                s.entries += 1;
                *s.stages.entry(e.stage.clone()).or_default() += 1;
                named.extend(e.outputs.iter().map(|o| o.blake3.clone()));
            }
            None => s.invalid_entries += 1,
        }
    }
    let used = entries.iter().filter(|l| l.entry.is_some()).map(|l| l.used);
    s.oldest_used = used.clone().min().map(timestamp);
    s.newest_used = used.max().map(timestamp);
    s.blobs = blobs.len();
    s.blob_bytes = blobs.iter().map(|b| b.2).sum();
    s.unreferenced_blobs = blobs.iter().filter(|b| !named.contains(&b.1)).count();
    Ok(s)
}

/// What `pipe store gc` is asked to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct GcOptions {
    /// Remove entries not used for this long.
    pub older_than: Option<Duration>,
    /// Then remove the least recently used entries until blobs and entries take at most this.
    pub max_bytes: Option<u64>,
    /// Say what would go, remove nothing.
    pub dry_run: bool,
}

/// What `pipe store gc` did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub store: PathBuf,
    pub dry_run: bool,
    pub entries_removed: usize,
    pub blobs_removed: usize,
    pub bytes_freed: u64,
    pub entries_kept: usize,
    pub blobs_kept: usize,
    pub bytes_kept: u64,
}

/// Removes entries by age, then by size (least recently used first), invalid entries, then every
/// blob no remaining entry names and temp files a killed writer left. Holds the store alone:
/// refused while a run uses it, and no run starts using it meanwhile.
pub fn gc(root: &Path, opts: GcOptions) -> Result<GcReport, ResultsError> {
    let layout = Layout::new(root);
    let _lock = layout.lock_exclusive()?;
    let now = SystemTime::now();
    let mut entries = list_entries(&layout)?;
    // Least recently used first.
    entries.sort_by_key(|l| l.used);
    let blobs = list_blobs(&layout)?;
    let blob_size: BTreeMap<&str, u64> = blobs.iter().map(|b| (b.1.as_str(), b.2)).collect();
    let mut remove = vec![false; entries.len()];
    for (i, l) in entries.iter().enumerate() {
        let stale = opts
            .older_than
            .is_some_and(|age| now.duration_since(l.used).unwrap_or_default() > age);
        remove[i] = l.entry.is_none() || stale;
    }
    // Blob references of the entries kept, and the bytes they take (a shared blob once).
    let kept_bytes = |remove: &[bool]| -> (u64, BTreeMap<&str, usize>) {
        let mut refs: BTreeMap<&str, usize> = BTreeMap::new();
        let mut bytes = 0;
        for (l, _) in entries.iter().zip(remove).filter(|(_, r)| !**r) {
            bytes += l.file_bytes;
            for o in l.entry.iter().flat_map(|e| &e.outputs) {
                *refs.entry(o.blake3.as_str()).or_default() += 1;
            }
        }
        bytes += refs
            .keys()
            .map(|d| blob_size.get(d).copied().unwrap_or(0))
            .sum::<u64>();
        (bytes, refs)
    };
    if let Some(max) = opts.max_bytes {
        let (mut total, mut refs) = kept_bytes(&remove);
        for (i, l) in entries.iter().enumerate() {
            if total <= max {
                break;
            }
            if remove[i] {
                continue;
            }
            remove[i] = true;
            total -= l.file_bytes;
            for o in l.entry.iter().flat_map(|e| &e.outputs) {
                let n = refs.get_mut(o.blake3.as_str()).expect("counted");
                *n -= 1;
                if *n == 0 {
                    refs.remove(o.blake3.as_str());
                    total -= blob_size.get(o.blake3.as_str()).copied().unwrap_or(0);
                }
            }
        }
    }
    let (bytes_kept, refs) = kept_bytes(&remove);
    let mut report = GcReport {
        store: root.to_path_buf(),
        dry_run: opts.dry_run,
        bytes_kept,
        ..GcReport::default()
    };
    for (l, _) in entries.iter().zip(&remove).filter(|(_, r)| **r) {
        report.entries_removed += 1;
        report.bytes_freed += l.file_bytes;
        if !opts.dry_run {
            fs::remove_file(&l.path).map_err(io_err(&l.path))?;
        }
    }
    report.entries_kept = entries.len() - report.entries_removed;
    let referenced: BTreeSet<&str> = refs.keys().copied().collect();
    for (path, name, bytes, _) in &blobs {
        if referenced.contains(name.as_str()) {
            report.blobs_kept += 1;
            continue;
        }
        report.blobs_removed += 1;
        report.bytes_freed += bytes;
        if !opts.dry_run {
            fs::remove_file(path).map_err(io_err(path))?;
        }
    }
    if !opts.dry_run {
        fsutil::sweep_temp_files(&root.join("blobs")).map_err(io_err(root))?;
        fsutil::sweep_temp_files(&root.join("entries")).map_err(io_err(root))?;
    }
    Ok(report)
}

/// A size as `10G`, `512M`, `64k`, `1000` (bytes; the suffixes are powers of 1024, with an
/// optional `B` or `iB`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 30),
        Some('t' | 'T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a size: write it as 10G, 512M, 64K or bytes"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// An age as `30d`, `12h`, `90m`, `45s` or `2w`.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad = || format!("`{s}` is not an age: write it as 30d, 12h, 90m, 45s or 2w");
    let unit = t.chars().last().ok_or_else(bad)?;
    let secs: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = t[..t.len() - 1].parse().map_err(|_| bad())?;
    n.checked_mul(secs).map(Duration::from_secs).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(outputs: &[(&str, &[u8])]) -> NodeRecord {
        NodeRecord {
            format: crate::store::RECORD_FORMAT,
            id: "judge:alpha#1".into(),
            key: "ab".repeat(32),
            status: crate::store::Status::Done,
            failure: None,
            started_at: "2026-01-01T00:00:00Z".into(),
            finished_at: "2026-01-01T00:00:01Z".into(),
            duration_ms: 1000,
            attempts: 1,
            usage: None,
            outputs: outputs
                .iter()
                .map(|(p, b)| OutputFile {
                    path: (*p).into(),
                    bytes: b.len() as u64,
                    blake3: blake3::hash(b).to_hex().to_string(),
                    stamp: None,
                })
                .collect(),
            dirs: Vec::new(),
        }
    }

    /// A store with one node's outputs kept, the node's directory, and its entry.
    fn kept(tmp: &Path) -> (ResultStore, Entry) {
        let files: &[(&str, &[u8])] = &[("judgment.json", b"{}\n"), ("files/a.py", b"a = 1\n")];
        let dir = tmp.join("node");
        for (p, b) in files {
            fs::create_dir_all(dir.join(p).parent().unwrap()).unwrap();
            fs::write(dir.join(p), b).unwrap();
        }
        let store = ResultStore::open(&tmp.join("store")).unwrap();
        let entry = Entry::of(&record(files), "judge", "up".into());
        store.put(&entry, &dir).unwrap();
        (store, entry)
    }

    fn hit(found: Found) -> (Entry, Vec<(String, Vec<u8>)>) {
        match found {
            Found::Hit { entry, files } => (*entry, files),
            other => panic!("not a hit: {other:?}"),
        }
    }

    #[test]
    fn a_kept_result_comes_back_byte_for_byte() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, entry) = kept(tmp.path());
        let (back, files) = hit(store.lookup(&entry.key, "up"));
        assert_eq!(back, entry);
        for (path, data) in &files {
            assert_eq!(data, &fs::read(tmp.path().join("node").join(path)).unwrap());
        }
        // Another upstream, another key: not this result.
        assert!(matches!(store.lookup(&entry.key, "other"), Found::Miss));
        assert!(matches!(store.lookup(&"cd".repeat(32), "up"), Found::Miss));
        assert!(matches!(store.lookup("../../x", "up"), Found::Miss));
    }

    #[test]
    fn a_corrupt_or_missing_blob_is_never_restored() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, entry) = kept(tmp.path());
        let layout = Layout::new(&store.root);
        let blob = layout.blob_path(&entry.outputs[0].blake3);
        // Same size, other bytes: found out by its digest, and removed.
        fs::write(&blob, b"[]\n").unwrap();
        let Found::Bad { why, .. } = store.lookup(&entry.key, "up") else {
            panic!("a corrupt blob restored");
        };
        assert!(why.contains("does not hash"), "{why}");
        assert!(!blob.exists());
        assert!(matches!(store.lookup(&entry.key, "up"), Found::Bad { .. }));
        // Saving again writes it whole.
        store.put(&entry, &tmp.path().join("node")).unwrap();
        hit(store.lookup(&entry.key, "up"));
        // A link in a blob's place is not followed.
        fs::remove_file(&blob).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("node/judgment.json"), &blob).unwrap();
        assert!(matches!(store.lookup(&entry.key, "up"), Found::Bad { .. }));
    }

    #[test]
    fn saving_again_replaces_a_damaged_blob_of_the_right_size() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, entry) = kept(tmp.path());
        let blobs: Vec<PathBuf> = entry
            .outputs
            .iter()
            .map(|o| Layout::new(&store.root).blob_path(&o.blake3))
            .collect();
        for blob in &blobs {
            let len = fs::metadata(blob).unwrap().len() as usize;
            fs::write(blob, vec![b'x'; len]).unwrap();
        }
        store.put(&entry, &tmp.path().join("node")).unwrap();
        hit(store.lookup(&entry.key, "up"));
    }

    #[test]
    fn an_entry_that_is_not_pipes_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, entry) = kept(tmp.path());
        let path = Layout::new(&store.root).entry_path(&entry.key);
        let cases: Vec<(&str, Box<dyn Fn(&mut Entry)>)> = vec![
            (
                "climbs out",
                Box::new(|e| e.outputs[0].path = "../x".into()),
            ),
            (
                "absolute",
                Box::new(|e| e.outputs[0].path = "/etc/passwd".into()),
            ),
            (
                "listed twice",
                Box::new(|e| e.outputs[1].path = e.outputs[0].path.clone()),
            ),
            (
                "file and dir",
                Box::new(|e| e.outputs[0].path = "files".into()),
            ),
            ("other key", Box::new(|e| e.key = "cd".repeat(32))),
            (
                "bad digest",
                Box::new(|e| e.outputs[0].blake3 = "../../x".into()),
            ),
            ("format", Box::new(|e| e.format = 99)),
        ];
        for (what, edit) in cases {
            let mut bad = entry.clone();
            edit(&mut bad);
            fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
            assert!(
                matches!(store.lookup(&entry.key, "up"), Found::Bad { .. }),
                "{what}"
            );
        }
        fs::write(&path, b"{not json").unwrap();
        assert!(matches!(store.lookup(&entry.key, "up"), Found::Bad { .. }));
    }

    #[test]
    fn concurrent_writers_of_one_result_leave_one_whole_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, entry) = kept(tmp.path());
        drop(store);
        // Writers of other processes are other stores; each writes under its own temp name.
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let root = tmp.path().join("store");
                let node = tmp.path().join("node");
                let entry = entry.clone();
                std::thread::spawn(move || {
                    let store = ResultStore::open(&root).unwrap();
                    for _ in 0..20 {
                        let layout = Layout::new(&root);
                        let _ = fs::remove_file(layout.blob_path(&entry.outputs[0].blake3));
                        store.put(&entry, &node).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let store = ResultStore::open(&tmp.path().join("store")).unwrap();
        hit(store.lookup(&entry.key, "up"));
    }

    #[test]
    fn a_changed_output_is_not_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, mut entry) = kept(tmp.path());
        entry.key = "cd".repeat(32);
        fs::write(tmp.path().join("node/files/a.py"), b"a = 2\n").unwrap();
        fs::remove_file(Layout::new(&store.root).blob_path(&entry.outputs[1].blake3)).unwrap();
        assert!(store.put(&entry, &tmp.path().join("node")).is_err());
        assert!(matches!(store.lookup(&entry.key, "up"), Found::Miss));
    }

    #[test]
    fn gc_is_refused_while_a_run_uses_the_store_and_keeps_what_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, entry) = kept(tmp.path());
        let root = store.root.clone();
        assert!(matches!(
            gc(&root, GcOptions::default()),
            Err(ResultsError::BusyRun { .. })
        ));
        drop(store);
        let stray = Layout::new(&root).blob_path(&"ef".repeat(32));
        fs::create_dir_all(stray.parent().unwrap()).unwrap();
        fs::write(&stray, b"nobody's").unwrap();
        let r = gc(&root, GcOptions::default()).unwrap();
        assert_eq!(
            (r.entries_removed, r.blobs_removed, r.blobs_kept),
            (0, 1, 2)
        );
        assert!(!stray.exists());
        // A run cannot open the store while gc holds it.
        let held = Layout::new(&root).lock_exclusive().unwrap();
        assert!(matches!(
            ResultStore::open(&root),
            Err(ResultsError::BusyGc { .. })
        ));
        drop(held);
        // Past the size: the least recently used go first, and their blobs with them.
        let dry = gc(
            &root,
            GcOptions {
                max_bytes: Some(0),
                dry_run: true,
                ..GcOptions::default()
            },
        )
        .unwrap();
        assert_eq!((dry.entries_removed, dry.blobs_removed), (1, 2));
        let store = ResultStore::open(&root).unwrap();
        hit(store.lookup(&entry.key, "up"));
        drop(store);
        gc(
            &root,
            GcOptions {
                max_bytes: Some(0),
                ..GcOptions::default()
            },
        )
        .unwrap();
        let s = stats(&root).unwrap();
        assert_eq!((s.entries, s.blobs, s.blob_bytes), (0, 0, 0));
    }

    #[test]
    fn gc_by_age_removes_what_was_not_used_since() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, entry) = kept(tmp.path());
        let root = store.root.clone();
        drop(store);
        let path = Layout::new(&root).entry_path(&entry.key);
        let old = SystemTime::now() - Duration::from_secs(40 * 86_400);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let s = stats(&root).unwrap();
        assert_eq!((s.entries, s.blobs, s.unreferenced_blobs), (1, 2, 0));
        assert_eq!(s.stages.get("judge"), Some(&1));
        let age = Some(parse_age("30d").unwrap());
        let r = gc(
            &root,
            GcOptions {
                older_than: age,
                ..GcOptions::default()
            },
        )
        .unwrap();
        assert_eq!(
            (r.entries_removed, r.blobs_removed, r.entries_kept),
            (1, 2, 0)
        );
        assert!(!path.exists());
    }

    #[test]
    fn a_restore_marks_the_entry_used() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, entry) = kept(tmp.path());
        let path = Layout::new(&store.root).entry_path(&entry.key);
        let old = SystemTime::now() - Duration::from_secs(86_400);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        hit(store.lookup(&entry.key, "up"));
        let used = fs::metadata(&path).unwrap().modified().unwrap();
        assert!(used > old + Duration::from_secs(3600));
    }

    #[test]
    fn sizes_and_ages_parse() {
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(parse_age("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_age("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_age("90m"), Ok(Duration::from_secs(5400)));
        assert!(parse_age("30").is_err());
        assert!(parse_age("d").is_err());
    }

    #[test]
    fn digests_of_results_are_order_free_and_of_upstream_ordered() {
        let a = record(&[("x", b"1"), ("y", b"2")]);
        let mut b = a.clone();
        b.outputs.reverse();
        assert_eq!(result_digest(&a.outputs), result_digest(&b.outputs));
        assert_ne!(
            upstream_digest([("a", "1"), ("b", "2")]),
            upstream_digest([("a", "2"), ("b", "1")])
        );
    }
}
