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
}

/// Largest file accepted from an answer.
pub const MAX_FILE_BYTES: usize = 1 << 20;

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
    Parsed { files, rejected }
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
    fn counts_loc() {
        assert_eq!(loc("# c\n\nx = 1\n  // y\ny = 2\n"), 2);
    }
}
