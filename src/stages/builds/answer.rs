//! Files out of a model's answer. The convention (also in the build prompt and the README): each
//! file is a fenced code block whose info string carries `path=RELATIVE/PATH`:
//!
//! ````text
//! ```python path=atomic_write.py
//! ...
//! ```
//! ````
//!
//! A fence is three or more backticks or tildes; it closes on a line of the same character at
//! least as long, so a file that itself holds ``` is fenced with ````. Blocks without `path=` are
//! prose examples and are ignored.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerFile {
    pub path: PathBuf,
    pub content: String,
}

/// Why an answer's files were refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rejection {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub files: Vec<AnswerFile>,
    pub rejected: Vec<Rejection>,
    /// Set when the answer as a whole is over a limit (too many files, too many bytes).
    pub over: Option<String>,
}

/// Largest file accepted from an answer.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Most files one answer may hold.
pub const MAX_FILES: usize = 500;
/// Most bytes the files of one answer may hold together.
pub const MAX_TOTAL_BYTES: usize = 8 << 20;
/// Longest name (path component) of a file or directory a build may write, in bytes. File systems
/// allow 255, and pipe writes each file under a temporary name 20-odd bytes longer first.
pub const MAX_NAME_BYTES: usize = 200;
/// Longest relative path a build may write, in bytes (the system's limit, 4096, is for the
/// whole path, the round's directory included).
pub const MAX_PATH_BYTES: usize = 1024;

/// Extracts the files of an answer. `protected` says which relative paths a build may not write.
pub fn parse(answer: &str, protected: &dyn Fn(&Path) -> bool) -> Parsed {
    let mut files: Vec<AnswerFile> = Vec::new();
    let mut rejected = Vec::new();
    let mut lines = answer.split_inclusive('\n');
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let Some((fence_char, fence_len)) = fence(trimmed) else {
            continue;
        };
        let info = trimmed[fence_len..].trim();
        let mut body = String::new();
        let mut closed = false;
        for l in lines.by_ref() {
            let t = l.trim();
            if t.len() >= fence_len && t.chars().all(|c| c == fence_char) {
                closed = true;
                break;
            }
            body.push_str(l);
        }
        let Some(raw_path) = path_of(info) else {
            continue;
        };
        if !closed {
            rejected.push(Rejection {
                path: raw_path,
                reason: "the fenced block is never closed: the answer may have been cut off".into(),
            });
            continue;
        }
        match check_path(&raw_path, protected) {
            Err(reason) => rejected.push(Rejection {
                path: raw_path,
                reason,
            }),
            Ok(_) if body.len() > MAX_FILE_BYTES => {
                rejected.push(Rejection {
                    path: raw_path,
                    reason: format!(
                        "file is {} bytes, over the limit of {MAX_FILE_BYTES} bytes",
                        body.len()
                    ),
                });
            }
            Ok(path) => {
                files.retain(|f| f.path != path);
                files.push(AnswerFile {
                    path,
                    content: body,
                });
            }
        }
    }
    rejected.extend(conflicts(&mut files));
    let over = over_limits(&files);
    Parsed {
        files,
        rejected,
        over,
    }
}

/// Files whose path runs through another file of the answer (`a.py` and `a.py/b.py`): one path
/// cannot be both a file and a directory. They are taken out of `files` and returned refused.
fn conflicts(files: &mut Vec<AnswerFile>) -> Vec<Rejection> {
    let paths: BTreeSet<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    let mut refused = Vec::new();
    files.retain(|f| {
        let Some(file) = f.path.ancestors().skip(1).find(|a| paths.contains(*a)) else {
            return true;
        };
        refused.push(Rejection {
            path: f.path.display().to_string(),
            reason: format!(
                "`{}` is a file of this answer too: a path cannot name both a file and a directory",
                file.display()
            ),
        });
        false
    });
    refused
}

/// Why the answer as a whole is refused: more files or more bytes than one answer may hold.
fn over_limits(files: &[AnswerFile]) -> Option<String> {
    let bytes: usize = files.iter().map(|f| f.content.len()).sum();
    if files.len() > MAX_FILES {
        Some(format!(
            "the answer holds {} files, over the limit of {MAX_FILES}",
            files.len()
        ))
    } else if bytes > MAX_TOTAL_BYTES {
        Some(format!(
            "the answer's files hold {bytes} bytes together, over the limit of {MAX_TOTAL_BYTES}"
        ))
    } else {
        None
    }
}

/// Why a clean relative path is too long to write, if it is: a name over [`MAX_NAME_BYTES`] or
/// the whole over [`MAX_PATH_BYTES`].
pub fn check_length(path: &Path) -> Result<(), String> {
    let total = path.as_os_str().len();
    if total > MAX_PATH_BYTES {
        return Err(format!(
            "the path is {total} bytes long, over the limit of {MAX_PATH_BYTES}"
        ));
    }
    match path
        .components()
        .map(|c| c.as_os_str().len())
        .find(|n| *n > MAX_NAME_BYTES)
    {
        Some(n) => Err(format!(
            "a name in the path is {n} bytes long, over the limit of {MAX_NAME_BYTES}"
        )),
        None => Ok(()),
    }
}

fn fence(line: &str) -> Option<(char, usize)> {
    let c = line.chars().next()?;
    if c != '`' && c != '~' {
        return None;
    }
    let n = line.chars().take_while(|x| *x == c).count();
    (n >= 3).then_some((c, n))
}

/// `path=foo.py`, `path="foo bar.py"`, or `title=...`-free: the `path=` word of an info string.
fn path_of(info: &str) -> Option<String> {
    let at = info.find("path=")?;
    let rest = &info[at + 5..];
    let value = if let Some(q) = rest.strip_prefix('"') {
        q.split('"').next().unwrap_or("")
    } else {
        rest.split_whitespace().next().unwrap_or("")
    };
    Some(value.to_string())
}

/// A relative path inside the workspace, or why not.
pub fn check_path(raw: &str, protected: &dyn Fn(&Path) -> bool) -> Result<PathBuf, String> {
    if raw.is_empty() {
        return Err("empty path".into());
    }
    if raw.contains('\0') || raw.contains('\\') || raw.chars().any(char::is_control) {
        return Err("path holds a control character or backslash".into());
    }
    let p = Path::new(raw);
    if p.is_absolute() {
        return Err("absolute path: files must stay inside the workspace".into());
    }
    let mut clean = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("path leaves the workspace (`..`)".into()),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path".into()),
        }
    }
    if clean.as_os_str().is_empty() {
        return Err("path names no file".into());
    }
    check_length(&clean)?;
    if protected(&clean) {
        return Err("protected file: a build may not write the tests it is graded by".into());
    }
    Ok(clean)
}

/// Non-blank, non-comment lines (comments: `#`, `//`, and docstring-only lines are counted).
pub fn loc(content: &str) -> usize {
    content
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("//"))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &Path) -> bool {
        false
    }

    #[test]
    fn extracts_files_and_ignores_examples() {
        let a = "Intro\n```python path=a.py\nprint(1)\n```\n```bash\npython a.py\n```\n````md path=docs/R.md\n```x```\n```\n````\n";
        let p = parse(a, &none);
        assert_eq!(p.files.len(), 2);
        assert_eq!(p.files[0].content, "print(1)\n");
        assert_eq!(p.files[1].path, PathBuf::from("docs/R.md"));
        assert_eq!(p.files[1].content, "```x```\n```\n");
    }

    #[test]
    fn refuses_escapes_and_protected_files() {
        let protected = |p: &Path| p.file_name().is_some_and(|n| n == "conftest.py");
        let a = "```py path=../x.py\n1\n```\n```py path=/etc/x\n1\n```\n```py path=sub/conftest.py\n1\n```\n```py path=ok.py\n1\n```\n";
        let p = parse(a, &protected);
        assert_eq!(p.files.len(), 1);
        let reasons: Vec<_> = p.rejected.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(reasons, vec!["../x.py", "/etc/x", "sub/conftest.py"]);
    }

    #[test]
    fn unclosed_block_is_rejected() {
        let p = parse("```py path=a.py\nprint(1)\n", &none);
        assert!(p.files.is_empty());
        assert_eq!(p.rejected.len(), 1);
    }

    #[test]
    fn a_file_and_a_directory_of_one_name_are_refused() {
        let p = parse(
            "```py path=a.py\n1\n```\n```py path=a.py/b.py\n2\n```\n```py path=c/d.py\n3\n```\n```py path=c\n4\n```\n",
            &none,
        );
        let paths: Vec<_> = p.files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(paths, [PathBuf::from("a.py"), PathBuf::from("c")]);
        let refused: Vec<_> = p.rejected.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(refused, ["a.py/b.py", "c/d.py"]);
        assert!(
            p.rejected[0]
                .reason
                .contains("`a.py` is a file of this answer too")
        );
    }

    #[test]
    fn names_and_paths_too_long_to_write_are_refused() {
        let long_name = format!("{}.py", "n".repeat(297));
        let deep = format!("{}/x.py", vec!["d".repeat(99); 50].join("/"));
        let at_limit = format!(
            "{}/{}",
            "a".repeat(MAX_NAME_BYTES),
            "b".repeat(MAX_NAME_BYTES)
        );
        assert!(
            check_path(&long_name, &none)
                .unwrap_err()
                .contains("300 bytes long")
        );
        let why = check_path(&deep, &none).unwrap_err();
        assert!(why.contains(&format!("{} bytes long", deep.len())), "{why}");
        assert!(check_path(&format!("{}x", "a".repeat(MAX_NAME_BYTES)), &none).is_err());
        assert_eq!(check_path(&at_limit, &none), Ok(PathBuf::from(&at_limit)));
        let answer = format!("```py path={long_name}\n1\n```\n```py path={deep}\n1\n```\n");
        assert_eq!(parse(&answer, &none).rejected.len(), 2);
    }

    #[test]
    fn too_many_files_or_bytes_refuse_the_answer() {
        let block = |i: usize, body: &str| format!("```py path=m{i}.py\n{body}\n```\n");
        let at_cap: String = (0..MAX_FILES).map(|i| block(i, "x")).collect();
        assert_eq!(parse(&at_cap, &none).over, None);
        let over = at_cap + &block(MAX_FILES, "x");
        let why = parse(&over, &none).over.expect("over the file limit");
        assert!(why.contains("501 files, over the limit of 500"), "{why}");
        // Nine files of a megabyte each: every one under the file limit, too many together.
        let mb = "x".repeat(MAX_FILE_BYTES - 1);
        let heavy: String = (0..9).map(|i| block(i, &mb)).collect();
        let p = parse(&heavy, &none);
        assert!(p.rejected.is_empty());
        let why = p.over.expect("over the byte limit");
        assert!(why.contains("over the limit of 8388608"), "{why}");
    }

    #[test]
    fn counts_loc() {
        assert_eq!(loc("# c\n\nx = 1\n  // y\ny = 2\n"), 2);
    }
}
