//! The agent's file tools and their confinement. The workspace is a directory pipe holds; a tool
//! call names paths relative to it. A path is refused when it is absolute, climbs out (`..`),
//! passes through a symlink, or (for writes) is protected: a task's protected glob or the visible
//! tests. Reads and writes are size-capped. A refusal is an answer to the model, not an error of
//! the build.

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use crate::base::fsutil;
use crate::config::task::Task;

/// Bytes of a file `read_file` returns; the rest is cut with a note.
pub const MAX_READ: usize = 64 * 1024;
/// Bytes one `write_file` or `edit_file` may leave in a file.
pub const MAX_WRITE: usize = 256 * 1024;
/// Files the workspace may hold.
pub const MAX_FILES: usize = 500;
/// Bytes the workspace's files may hold together.
pub const MAX_BYTES: u64 = 32 << 20;
/// Entries `list_dir` shows.
pub const MAX_LIST: usize = 500;

/// Why a tool call did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolError {
    /// The call broke a rule: outside the workspace, a symlink, a protected file, over a cap.
    Refused(String),
    /// The call was allowed but could not be done (a missing file, a bad argument).
    Failed(String),
}

impl ToolError {
    pub fn text(&self) -> String {
        match self {
            Self::Refused(m) => format!("refused: {m}"),
            Self::Failed(m) => format!("error: {m}"),
        }
    }
}

/// The build's workspace on the host.
pub struct Workspace<'a> {
    pub root: PathBuf,
    pub task: &'a Task,
    /// The agent's notes (written freely, left out of the fingerprint and of `files/`).
    pub notes_file: String,
}

impl Workspace<'_> {
    /// A model-given path, checked: relative, inside, no symlink on the way. Returns the clean
    /// relative path (empty for the root).
    pub fn resolve(&self, raw: &str) -> Result<PathBuf, ToolError> {
        if raw.contains('\0') {
            return Err(ToolError::Refused("the path holds a NUL byte".into()));
        }
        let path = Path::new(raw.trim());
        let mut clean = PathBuf::new();
        for c in path.components() {
            match c {
                Component::Normal(part) => clean.push(part),
                Component::CurDir => {}
                Component::ParentDir => {
                    return Err(ToolError::Refused(format!(
                        "`{raw}` climbs out with `..`: paths stay inside the workspace"
                    )));
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(ToolError::Refused(format!(
                        "`{raw}` is absolute: give a path relative to the workspace root"
                    )));
                }
            }
        }
        let mut at = self.root.clone();
        for part in clean.components() {
            at.push(part);
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(ToolError::Refused(format!(
                        "`{raw}` passes through a symlink; the tools do not follow links"
                    )));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        Ok(clean)
    }

    /// A path the model may write: resolved, not the root, not too long, not protected.
    fn writable(&self, raw: &str) -> Result<PathBuf, ToolError> {
        let rel = self.resolve(raw)?;
        if rel.as_os_str().is_empty() {
            return Err(ToolError::Failed(
                "name a file, not the workspace root".into(),
            ));
        }
        crate::stages::builds::answer::check_length(&rel).map_err(ToolError::Refused)?;
        if self.task.is_protected_for_agent(&rel) {
            return Err(ToolError::Refused(format!(
                "`{}` is protected (tests and files the test runner loads cannot be written): change the implementation instead",
                rel.display()
            )));
        }
        Ok(rel)
    }

    pub fn list_dir(&self, raw: &str) -> Result<String, ToolError> {
        let rel = self.resolve(raw)?;
        let dir = self.root.join(&rel);
        if !dir.is_dir() {
            return Err(ToolError::Failed(format!(
                "`{}` is not a directory",
                rel.display()
            )));
        }
        let files = fsutil::list_files(&dir).map_err(|e| ToolError::Failed(e.to_string()))?;
        if files.is_empty() {
            return Ok("(no files)".into());
        }
        let mut out = String::new();
        for f in files.iter().take(MAX_LIST) {
            let size = std::fs::metadata(dir.join(f)).map_or(0, |m| m.len());
            let _ = writeln!(out, "{} ({size} bytes)", rel.join(f).display());
        }
        if files.len() > MAX_LIST {
            let _ = writeln!(out, "... and {} more", files.len() - MAX_LIST);
        }
        Ok(out)
    }

    pub fn read_file(&self, raw: &str) -> Result<String, ToolError> {
        let rel = self.resolve(raw)?;
        let path = self.root.join(&rel);
        if !path.is_file() {
            return Err(ToolError::Failed(format!(
                "`{}` is not a file in the workspace",
                rel.display()
            )));
        }
        let bytes = std::fs::read(&path).map_err(|e| ToolError::Failed(e.to_string()))?;
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_READ)]).into_owned();
        if bytes.len() > MAX_READ {
            return Ok(format!(
                "{text}\n[cut: the file has {} bytes; {MAX_READ} shown]",
                bytes.len()
            ));
        }
        Ok(text)
    }

    pub fn write_file(&self, raw: &str, content: &str) -> Result<String, ToolError> {
        let rel = self.writable(raw)?;
        if content.len() > MAX_WRITE {
            return Err(ToolError::Refused(format!(
                "{} bytes is over the {MAX_WRITE}-byte limit of one file",
                content.len()
            )));
        }
        let path = self.root.join(&rel);
        if path.is_dir() {
            return Err(ToolError::Failed(format!(
                "`{}` is a directory",
                rel.display()
            )));
        }
        self.room_for(&rel, content.len())?;
        fsutil::write_atomic(&path, content.as_bytes())
            .map_err(|e| ToolError::Failed(e.to_string()))?;
        Ok(format!("wrote {} ({} bytes)", rel.display(), content.len()))
    }

    /// Refuses a write of `len` bytes to `rel` that would take the workspace past
    /// [`MAX_FILES`] files or [`MAX_BYTES`] bytes.
    fn room_for(&self, rel: &Path, len: usize) -> Result<(), ToolError> {
        let files = fsutil::list_files(&self.root).unwrap_or_default();
        let new = !files.iter().any(|f| f == rel);
        if new && files.len() >= MAX_FILES {
            return Err(ToolError::Refused(format!(
                "the workspace already holds {MAX_FILES} files"
            )));
        }
        let others: u64 = files
            .iter()
            .filter(|f| *f != rel)
            .map(|f| std::fs::metadata(self.root.join(f)).map_or(0, |m| m.len()))
            .sum();
        if others + len as u64 > MAX_BYTES {
            return Err(ToolError::Refused(format!(
                "the workspace's files would hold {} bytes together, over the limit of {MAX_BYTES}",
                others + len as u64
            )));
        }
        Ok(())
    }

    /// Replaces the one occurrence of `old` in a file with `new`.
    pub fn edit_file(&self, raw: &str, old: &str, new: &str) -> Result<String, ToolError> {
        let rel = self.writable(raw)?;
        let path = self.root.join(&rel);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ToolError::Failed(format!("cannot read `{}`: {e}", rel.display())))?;
        if old.is_empty() {
            return Err(ToolError::Failed(
                "`old` is empty: quote the text to replace".into(),
            ));
        }
        match text.matches(old).count() {
            1 => {}
            0 => {
                return Err(ToolError::Failed(format!(
                    "`old` does not occur in `{}`: read the file and quote it exactly",
                    rel.display()
                )));
            }
            n => {
                return Err(ToolError::Failed(format!(
                    "`old` occurs {n} times in `{}`: quote more context so it occurs once",
                    rel.display()
                )));
            }
        }
        let edited = text.replacen(old, new, 1);
        if edited.len() > MAX_WRITE {
            return Err(ToolError::Refused(format!(
                "the edited file would be {} bytes, over the {MAX_WRITE}-byte limit",
                edited.len()
            )));
        }
        self.room_for(&rel, edited.len())?;
        fsutil::write_atomic(&path, edited.as_bytes())
            .map_err(|e| ToolError::Failed(e.to_string()))?;
        Ok(format!("edited {}", rel.display()))
    }

    /// The workspace's state: blake3 over every file's path and content, the notes file left
    /// out (the agent rewrites it as it goes; stagnation is about the work).
    pub fn fingerprint(&self) -> String {
        let mut h = blake3::Hasher::new();
        for rel in fsutil::list_files(&self.root).unwrap_or_default() {
            if rel == Path::new(&self.notes_file) {
                continue;
            }
            let bytes = std::fs::read(self.root.join(&rel)).unwrap_or_default();
            h.update(rel.to_string_lossy().as_bytes());
            h.update(&[0]);
            h.update(blake3::hash(&bytes).as_bytes());
        }
        h.finalize().to_hex().to_string()
    }

    /// The files of the implementation: every workspace file but the visible tests and the
    /// notes.
    pub fn implementation(&self) -> Vec<PathBuf> {
        let visible = self
            .task
            .agent
            .as_ref()
            .and_then(|a| a.visible_name.clone());
        fsutil::list_files(&self.root)
            .unwrap_or_default()
            .into_iter()
            .filter(|rel| rel != Path::new(&self.notes_file))
            .filter(|rel| visible.as_ref().is_none_or(|v| !rel.starts_with(v)))
            .collect()
    }
}

/// Splits a command string into words, honouring single and double quotes (no expansion).
pub fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for ch in text.chars() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(ch);
                started = true;
            }
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            (None, c) => {
                cur.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(cur);
    }
    words
}

/// Quotes one word for `sh`, with no expansion.
pub fn quote_strict(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tasks/atomic-write")
    }

    fn with_ws(f: impl FnOnce(&Workspace<'_>)) {
        let task = Task::load(&task_dir()).expect("the shipped task loads");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("visible")).unwrap();
        std::fs::write(
            dir.path().join("visible/test_visible.py"),
            "def test_x(): pass\n",
        )
        .unwrap();
        let ws = Workspace {
            root: dir.path().to_path_buf(),
            task: &task,
            notes_file: "NOTES.md".into(),
        };
        f(&ws);
    }

    fn refused(r: Result<String, ToolError>) -> String {
        match r {
            Err(ToolError::Refused(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn paths_outside_the_workspace_are_refused() {
        with_ws(|ws| {
            assert!(refused(ws.write_file("../x.py", "x")).contains("`..`"));
            assert!(refused(ws.write_file("a/../../x.py", "x")).contains("`..`"));
            assert!(refused(ws.write_file("/tmp/x.py", "x")).contains("absolute"));
            assert!(refused(ws.read_file("../../etc/passwd")).contains("`..`"));
            assert!(refused(ws.list_dir("/")).contains("absolute"));
            assert!(!ws.root.parent().unwrap().join("x.py").exists());
        });
    }

    #[test]
    fn symlinks_are_not_followed() {
        with_ws(|ws| {
            let outside = tempfile::tempdir().unwrap();
            std::fs::write(outside.path().join("secret"), "s").unwrap();
            std::os::unix::fs::symlink(outside.path(), ws.root.join("link")).unwrap();
            assert!(refused(ws.read_file("link/secret")).contains("symlink"));
            assert!(refused(ws.write_file("link/new.py", "x")).contains("symlink"));
            assert!(!outside.path().join("new.py").exists());
        });
    }

    #[test]
    fn protected_files_and_visible_tests_cannot_be_written() {
        with_ws(|ws| {
            assert!(refused(ws.write_file("test_mine.py", "x")).contains("protected"));
            assert!(refused(ws.write_file("conftest.py", "x")).contains("protected"));
            assert!(refused(ws.write_file("visible/test_visible.py", "")).contains("protected"));
            assert!(
                refused(ws.edit_file("visible/test_visible.py", "pass", "1/0"))
                    .contains("protected")
            );
            assert_eq!(
                std::fs::read_to_string(ws.root.join("visible/test_visible.py")).unwrap(),
                "def test_x(): pass\n"
            );
            // Reading them is fine.
            assert!(
                ws.read_file("visible/test_visible.py")
                    .unwrap()
                    .contains("test_x")
            );
        });
    }

    #[test]
    fn sizes_are_capped() {
        with_ws(|ws| {
            let big = "x".repeat(MAX_WRITE + 1);
            assert!(refused(ws.write_file("a.py", &big)).contains("limit"));
            std::fs::write(ws.root.join("big.txt"), "y".repeat(MAX_READ + 10)).unwrap();
            let read = ws.read_file("big.txt").unwrap();
            assert!(
                read.contains("[cut: the file has"),
                "{}",
                &read[read.len() - 80..]
            );
        });
    }

    #[test]
    fn writes_that_cannot_land_are_answers_not_failures() {
        with_ws(|ws| {
            ws.write_file("a.py", "x = 1\n").unwrap();
            // A file where a directory must go, and the reverse: the tool says why.
            assert!(matches!(
                ws.write_file("a.py/b.py", "y"),
                Err(ToolError::Failed(_))
            ));
            ws.write_file("pkg/m.py", "z").unwrap();
            assert!(matches!(
                ws.write_file("pkg", "z"),
                Err(ToolError::Failed(_))
            ));
            // Names and paths too long to write into the round's directory later.
            let long = format!("{}.py", "n".repeat(297));
            assert!(refused(ws.write_file(&long, "x")).contains("300 bytes long"));
            let name = "n".repeat(230);
            assert!(refused(ws.write_file(&name, "x")).contains("over the limit of 200"));
            let deep = format!("{}/x.py", vec!["d".repeat(99); 30].join("/"));
            assert!(refused(ws.write_file(&deep, "x")).contains("over the limit of 1024"));
            assert!(refused(ws.edit_file(&deep, "x", "y")).contains("over the limit of 1024"));
            assert_eq!(
                ws.implementation(),
                [PathBuf::from("a.py"), PathBuf::from("pkg/m.py")]
            );
        });
    }

    #[test]
    fn the_workspace_is_capped_in_bytes() {
        with_ws(|ws| {
            let chunk = "x".repeat(MAX_WRITE);
            let fit = (MAX_BYTES / MAX_WRITE as u64) as usize;
            // The visible test already takes a few bytes: the last chunk does not fit.
            for i in 0..fit - 1 {
                ws.write_file(&format!("d/{i}.txt"), &chunk).unwrap();
            }
            let why = refused(ws.write_file("d/last.txt", &chunk));
            assert!(
                why.contains(&format!("over the limit of {MAX_BYTES}")),
                "{why}"
            );
            // Rewriting a file counts its new size, not both.
            ws.write_file("d/0.txt", &chunk).unwrap();
            ws.write_file("d/0.txt", "small").unwrap();
            ws.write_file("d/last.txt", &chunk).unwrap();
        });
    }

    #[test]
    fn edits_need_exactly_one_occurrence() {
        with_ws(|ws| {
            ws.write_file("pkg/a.py", "x = 1\ny = 1\n").unwrap();
            assert!(
                matches!(ws.edit_file("pkg/a.py", "= 1", "= 2"), Err(ToolError::Failed(m)) if m.contains("2 times"))
            );
            assert!(matches!(
                ws.edit_file("pkg/a.py", "z", "w"),
                Err(ToolError::Failed(_))
            ));
            ws.edit_file("pkg/a.py", "y = 1", "y = 2").unwrap();
            assert_eq!(ws.read_file("pkg/a.py").unwrap(), "x = 1\ny = 2\n");
            assert!(ws.list_dir(".").unwrap().contains("pkg/a.py"));
        });
    }

    #[test]
    fn the_fingerprint_follows_the_work_not_the_notes() {
        with_ws(|ws| {
            let start = ws.fingerprint();
            ws.write_file("NOTES.md", "plan").unwrap();
            assert_eq!(ws.fingerprint(), start);
            ws.write_file("a.py", "x = 1\n").unwrap();
            let one = ws.fingerprint();
            assert_ne!(one, start);
            ws.write_file("a.py", "x = 1\n").unwrap();
            assert_eq!(ws.fingerprint(), one);
            assert_eq!(ws.implementation(), vec![PathBuf::from("a.py")]);
        });
    }

    #[test]
    fn commands_split_into_words() {
        assert_eq!(
            split_words(r#"python3 -m pytest -q "visible/test a.py" -k 'x y'"#),
            [
                "python3",
                "-m",
                "pytest",
                "-q",
                "visible/test a.py",
                "-k",
                "x y"
            ]
        );
        assert_eq!(split_words("a ''"), ["a", ""]);
        assert_eq!(quote_strict("it's $(x)"), r"'it'\''s $(x)'");
    }
}
