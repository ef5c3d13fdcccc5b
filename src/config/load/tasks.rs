//! The round's tasks: entries and globs expanded, each task loaded, a suite's checks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::ctx::{Loader, root};
use crate::config::task::Task;
use crate::config::{PublishFormat, PublishStage, Stage, StageKind};
use crate::source::KeyPath;

impl Loader<'_> {
    /// Every task the round names, globs expanded, in a stable order.
    pub(super) fn tasks(&mut self, entries: &[(KeyPath, String)]) -> Option<Vec<Task>> {
        let mut tasks: Vec<Task> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut ok = true;
        for (at, entry) in entries {
            let dirs = match expand_task_glob(&self.dir, entry) {
                Ok(d) => d,
                Err(message) => {
                    self.err(at, message).help = Some(
                        "a glob may use `*`, `?`, `[...]` and `**`, relative to the pipeline file"
                            .into(),
                    );
                    ok = false;
                    continue;
                }
            };
            if dirs.is_empty() {
                self.err(
                    at,
                    format!("`{entry}` matches no task directory (one holding task.toml)"),
                )
                .help = Some("paths are relative to the pipeline file".into());
                ok = false;
            }
            for dir in dirs {
                match self.task(at, entry, &dir) {
                    Some(t) => {
                        if let Some(prev) = by_name.get(t.name.as_str()).map(|&i| &tasks[i]) {
                            let msg = format!(
                                "task name `{}` is used by both {} and {}",
                                t.name,
                                prev.dir.display(),
                                t.dir.display()
                            );
                            self.err(at, msg).help =
                                Some("task names identify results: give each task its own `name` in task.toml".into());
                            ok = false;
                        } else {
                            by_name.insert(t.name.to_string(), tasks.len());
                            tasks.push(t);
                        }
                    }
                    None => ok = false,
                }
            }
        }
        if tasks.len() > 1 {
            let first = &tasks[0];
            if let Some(other) = tasks.iter().find(|t| t.image != first.image) {
                let msg = format!(
                    "tasks `{}` and `{}` ask for different sandbox images (`{}`, `{}`)",
                    first.name, other.name, first.image, other.image
                );
                self.err(&root().key("round").key("tasks"), msg).help =
                    Some("a round runs in one sandbox image: split the suite by image".into());
                ok = false;
            }
        }
        ok.then_some(tasks)
    }

    pub(super) fn task(&mut self, at: &KeyPath, entry: &str, dir: &Path) -> Option<Task> {
        match Task::load(dir) {
            Ok(t) => Some(t),
            Err(ds) => {
                if dir.is_dir() {
                    self.diags.extend(ds);
                } else {
                    let key = if at.to_string() == "round.task" {
                        "`round.task`"
                    } else {
                        "each entry of `round.tasks`"
                    };
                    self.err(at, format!("task directory `{entry}` not found"))
                        .help = Some(format!(
                        "{key} is relative to the pipeline file and names a directory with task.toml"
                    ));
                }
                None
            }
        }
    }

    /// What a round of several tasks cannot have (yet): report formats built around one task. A
    /// publish stage that names no formats gets a suite's.
    pub(super) fn suite_checks(&mut self, stages: &mut [Stage]) {
        let at = root().key("stages");
        for s in stages {
            if let StageKind::Publish(PublishStage { formats }) = &mut s.kind
                && self.doc.get(&at.key(&s.name).key("formats")).is_none()
            {
                *formats = vec![PublishFormat::Markdown, PublishFormat::Json];
            }
            if let StageKind::Publish(PublishStage { formats }) = &s.kind
                && let Some(f) = formats
                    .iter()
                    .find(|f| matches!(f, PublishFormat::Dataset | PublishFormat::Html))
            {
                let name = serde_json::to_value(f)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                self.err(
                    &at.key(&s.name).key("formats"),
                    format!("format `{name}` describes a round of one task"),
                )
                .help = Some(
                    "a suite publishes `markdown` and `json` (per-task results, pass rates, pass@k, peer scores)".into(),
                );
            }
        }
    }
}

/// The task directories an entry of `round.task(s)` names: the directory itself, or every
/// directory holding a task.toml that the glob matches, in natural order (`x-2` before `x-10`).
fn expand_task_glob(base: &Path, entry: &str) -> Result<Vec<PathBuf>, String> {
    let is_glob = |s: &str| s.contains(['*', '?', '[', '{']);
    if !is_glob(entry) {
        return Ok(vec![base.join(entry)]);
    }
    let parts: Vec<&str> = entry.split('/').collect();
    let fixed = parts.iter().take_while(|p| !is_glob(p)).count();
    let root = parts[..fixed]
        .iter()
        .fold(base.to_path_buf(), |acc, p| acc.join(p));
    let pattern = parts[fixed..].join("/");
    let matcher = globset::GlobBuilder::new(&pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("`{entry}` is not a valid glob: {e}"))?
        .compile_matcher();
    let depth = if pattern.contains("**") {
        usize::MAX
    } else {
        parts.len() - fixed
    };
    let mut found: Vec<PathBuf> = walkdir::WalkDir::new(&root)
        .min_depth(1)
        .max_depth(depth)
        .follow_links(true)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_dir())
        .filter(|e| {
            e.path()
                .strip_prefix(&root)
                .is_ok_and(|rel| matcher.is_match(rel))
        })
        .filter(|e| e.path().join("task.toml").is_file())
        .map(walkdir::DirEntry::into_path)
        .collect();
    found.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    Ok(found)
}

/// Compares strings with runs of digits compared as numbers.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let chunks = |s: &str| -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let d = c.is_ascii_digit();
            match out.last_mut() {
                Some((ld, run)) if *ld == d => run.push(c),
                _ => out.push((d, c.to_string())),
            }
        }
        out
    };
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(&cb) {
        let o = match (x.0, y.0) {
            (true, true) => {
                let (tx, ty) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty))
            }
            _ => x.1.cmp(&y.1),
        };
        if o.is_ne() {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}
