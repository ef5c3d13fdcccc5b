//! Atomic file writes: every file pipe writes goes through [`write_atomic`] (atomic and durable
//! on return) or, for a node's outputs, [`write_replace`] (atomic now, durable at the store's
//! next group commit, which [`sync_filesystem`]s before any record names them); the result
//! store's files through [`write_replace_shared`] (the same, under a temp name of their own).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Suffix of the temporary files [`write_atomic`] creates; a startup sweep removes any left by a
/// killed run.
pub const TMP_MARKER: &str = ".pipe-tmp.";

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsync, rename over the
/// target, fsync the directory. A reader sees the old content or the new, never a mix, and a crash
/// at any point leaves at worst a temp file that [`sweep_temp_files`] removes.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_via_temp(path, bytes, true, false)
}

/// Writes `bytes` to `path` atomically but without waiting for the disk: a temp file in the same
/// directory renamed over the target. A reader sees the old content or the new, never a mix; a
/// crash may lose the write (or leave a temp file that [`sweep_temp_files`] removes). Node outputs
/// are written this way: the store's commit makes them durable, in one [`sync_filesystem`] for
/// many nodes, before their record is written.
pub fn write_replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_via_temp(path, bytes, false, false)
}

/// [`write_replace`] for a file that several writers of one process may write at once (the
/// result store's blobs and entries): each write has a temp name of its own, so two writers of
/// the same content never share a temp file, and the last rename leaves one whole copy.
pub fn write_replace_shared(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_via_temp(path, bytes, false, true)
}

/// A temp file beside `path` (parents created), renamed over it; with `durable`, the file is
/// fsynced before the rename and its directory after; with `unique`, the temp name carries a
/// count of this process's writes besides its id.
fn write_via_temp(path: &Path, bytes: &[u8], durable: bool, unique: bool) -> io::Result<()> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("no file name"))?;
    let count = if unique {
        format!(
            ".{}",
            WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )
    } else {
        String::new()
    };
    let tmp = dir.join(format!(
        "{}{}{}{count}",
        name.to_string_lossy(),
        TMP_MARKER,
        std::process::id()
    ));
    // A fresh file, never an existing one: a link planted under the temp name is removed (not
    // followed) and the file created with O_EXCL, so the write cannot land anywhere else.
    let create_new = |tmp: &Path| File::options().write(true).create_new(true).open(tmp);
    let create = |tmp: &Path| -> io::Result<File> {
        match create_new(tmp) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir)?;
                create_new(tmp)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(tmp)?;
                create_new(tmp)
            }
            other => other,
        }
    };
    let result = (|| {
        let mut file = create(&tmp)?;
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
        drop(file);
        fs::rename(&tmp, path)?;
        if durable {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes every write so far to the filesystem holding `path` durable: one `syncfs(2)` on Linux
/// (`sync(2)` elsewhere), which costs about what one `fsync` does however many files are dirty.
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let dir = File::open(path)?;
        // SAFETY: `dir` is an open descriptor for the duration of the call.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };
        Ok(())
    }
}

/// Pretty JSON with a final newline.
pub fn json_bytes<T: serde::Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Serialises `value` as pretty JSON (with a final newline) and writes it atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    write_atomic(path, &json_bytes(value)?)
}

/// Fsyncs a directory so a rename or removal in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes a file durably; a missing file is not an error.
pub fn remove_durably(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Why a path was refused by [`inside`].
#[derive(Debug, thiserror::Error)]
pub enum Outside {
    /// The path is not plainly inside the directory: pipe writes and removes nothing there.
    #[error("refusing to use {path}: {reason}")]
    Refused { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// `base/rel`, proven inside `base` before anything there is written or removed: `rel` is plain
/// components (no `..`, no root, not empty), no directory from `base` down is a symbolic link
/// (each is looked at, not followed), and what exists of the path, canonicalised, lies under the
/// canonical `base`. `base` itself is the directory the operator gave and may be a link; what
/// does not exist yet is fine (the caller creates it).
pub fn inside(base: &Path, rel: &Path) -> Result<PathBuf, Outside> {
    let path = base.join(rel);
    let refused = |path: &Path, reason: &str| Outside::Refused {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if rel.as_os_str().is_empty()
        || !rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        return Err(refused(&path, "not a plain relative path"));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Outside::Io { path, source }
    };
    let mut cur = base.to_path_buf();
    let mut existing = None;
    for part in rel.components() {
        cur.push(part);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refused(
                    &cur,
                    "a symbolic link where pipe writes; pipe follows none: remove it",
                ));
            }
            Ok(m) if !m.is_dir() => {
                return Err(refused(&cur, "expected a directory, found a file"));
            }
            Ok(_) => existing = Some(cur.clone()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(io(&cur)(e)),
        }
    }
    if let Some(existing) = existing {
        let root = fs::canonicalize(base).map_err(io(base))?;
        let real = fs::canonicalize(&existing).map_err(io(&existing))?;
        if !real.starts_with(&root) {
            let reason = format!(
                "it resolves to {}, outside {}",
                real.display(),
                base.display()
            );
            return Err(refused(&existing, &reason));
        }
    }
    Ok(path)
}

/// Removes temp files left by a killed writer anywhere under `root`. Returns how many it removed.
pub fn sweep_temp_files(root: &Path) -> io::Result<usize> {
    let mut removed = 0;
    if !root.exists() {
        return Ok(0);
    }
    for entry in walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
    {
        if entry.file_name().to_string_lossy().contains(TMP_MARKER) {
            let path = entry.path();
            if entry.file_type().is_dir() {
                fs::remove_dir_all(path)?;
            } else {
                fs::remove_file(path)?;
            }
            removed += 1;
        }
    }
    Ok(removed)
}

/// All regular files under `root`, as sorted paths relative to it.
pub fn list_files(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !root.exists() {
        return Ok(out);
    }
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.map_err(io::Error::other)?;
        if entry.file_type().is_file() {
            out.push(
                entry
                    .path()
                    .strip_prefix(root)
                    .map_err(io::Error::other)?
                    .to_path_buf(),
            );
        }
    }
    Ok(out)
}

/// Copies the regular files of `from` into `to` (created), never following symlinks.
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for rel in list_files(from)? {
        let dest = to.join(&rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(from.join(&rel), &dest)?;
    }
    Ok(())
}

/// The blake3 digest of a file's content, hex.
pub fn hash_file(path: &Path) -> io::Result<String> {
    Ok(blake3::hash(&fs::read(path)?).to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            list_files(dir.path()).unwrap(),
            vec![PathBuf::from("a/b.json")]
        );
    }

    #[test]
    fn replace_creates_parents_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x/y/z.txt");
        write_replace(&path, b"one").unwrap();
        write_replace(&path, b"two").unwrap();
        sync_filesystem(dir.path()).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            list_files(dir.path()).unwrap(),
            vec![PathBuf::from("x/y/z.txt")]
        );
    }

    #[test]
    fn a_link_planted_at_the_temp_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let path = dir.path().join("report.md");
        let tmp = dir
            .path()
            .join(format!("report.md{TMP_MARKER}{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert!(
            !fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn sweep_removes_only_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(format!("x.json{TMP_MARKER}42")), b"partial").unwrap();
        fs::write(dir.path().join("keep.json"), b"{}").unwrap();
        assert_eq!(sweep_temp_files(dir.path()).unwrap(), 1);
        assert_eq!(
            list_files(dir.path()).unwrap(),
            vec![PathBuf::from("keep.json")]
        );
    }
}
