//! Operator-written files (pipelines, rubrics, tasks) as parsed documents that remember where
//! every key is, so any later check can point at the line and column it is about.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::diag::Diag;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A key path inside a document, displayed as `stages.judge.needs[0]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn root() -> Self {
        Self(Vec::new())
    }
    #[must_use]
    pub fn key(&self, k: &str) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.to_string()));
        Self(v)
    }
    #[must_use]
    pub fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        Self(v)
    }
    /// Appends the path of a `serde_path_to_error` error.
    #[must_use]
    pub fn join_serde(&self, path: &serde_path_to_error::Path) -> Self {
        let mut out = self.clone();
        for seg in path {
            match seg {
                serde_path_to_error::Segment::Seq { index } => out = out.index(*index),
                serde_path_to_error::Segment::Map { key }
                | serde_path_to_error::Segment::Enum { variant: key } => {
                    out = out.key(key);
                }
                serde_path_to_error::Segment::Unknown => {}
            }
        }
        out
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    // A key that is not a bare word is quoted as TOML quotes it:
                    // `stages."../../etc"`, so the path reads unambiguously.
                    let bare = !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                    if bare {
                        f.write_str(k)?;
                    } else {
                        write!(f, "\"{}\"", k.escape_debug())?;
                    }
                }
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Yaml,
}

impl Format {
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => Self::Yaml,
            _ => Self::Toml,
        }
    }
}

/// A parsed document: its text, its data as JSON, and a locator for key paths.
pub struct SourceDoc {
    pub file: PathBuf,
    pub text: String,
    pub format: Format,
    pub value: serde_json::Value,
    toml: Option<toml_edit::Document<String>>,
}

impl fmt::Debug for SourceDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceDoc")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl SourceDoc {
    /// Reads and parses a TOML or YAML file (by extension). Errors are located diagnostics.
    pub fn load(file: &Path) -> Result<Self, Diag> {
        let bytes = std::fs::read(file).map_err(|e| {
            Diag::error(file, format!("cannot read file: {e}"))
                .help("check the path; paths are relative to the file that names them")
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let offset = e.utf8_error().valid_up_to();
            // Shown lossily, so the caret lands on a `�` in the whole line; the valid prefix keeps
            // `offset` right.
            let shown = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let byte = e.as_bytes()[offset];
            Diag::error(file, format!("file is not valid UTF-8 (byte 0x{byte:02X})"))
                .at(&shown, offset)
                .help("save the file as UTF-8")
        })?;
        Self::parse(file, text)
    }

    pub fn parse(file: &Path, text: String) -> Result<Self, Diag> {
        let format = Format::of(file);
        match format {
            Format::Toml => {
                let doc = toml_edit::Document::parse(text.clone()).map_err(|e| {
                    let offset = e.span().map_or(0, |s| s.start);
                    Diag::error(file, format!("invalid TOML: {}", e.message().trim()))
                        .at(&text, offset)
                })?;
                let value: toml::Value = toml::from_str(&text).map_err(|e| {
                    let offset = e.span().map_or(0, |s| s.start);
                    Diag::error(file, format!("invalid TOML: {}", e.message().trim()))
                        .at(&text, offset)
                })?;
                Ok(Self {
                    file: file.to_path_buf(),
                    value: toml_to_json(value),
                    text,
                    format,
                    toml: Some(doc),
                })
            }
            Format::Yaml => {
                let value: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| {
                    let d = Diag::error(file, format!("invalid YAML: {e}"));
                    match e.location() {
                        Some(loc) => d.at(&text, loc.index()),
                        None => d,
                    }
                })?;
                let value = yaml_to_json(value).map_err(|m| Diag::error(file, m))?;
                Ok(Self {
                    file: file.to_path_buf(),
                    value,
                    text,
                    format,
                    toml: None,
                })
            }
        }
    }

    /// The value at a key path.
    pub fn get(&self, path: &KeyPath) -> Option<&serde_json::Value> {
        let mut cur = &self.value;
        for seg in &path.0 {
            cur = match seg {
                Seg::Key(k) => cur.get(k)?,
                Seg::Index(i) => cur.get(i)?,
            };
        }
        Some(cur)
    }

    /// A located error about the value at `path` (or about its key, with `on_key`).
    pub fn error_at(&self, path: &KeyPath, message: impl Into<String>, on_key: bool) -> Diag {
        self.located(Diag::error(&self.file, message), path, on_key)
    }

    pub fn warning_at(&self, path: &KeyPath, message: impl Into<String>, on_key: bool) -> Diag {
        self.located(Diag::warning(&self.file, message), path, on_key)
    }

    fn located(&self, diag: Diag, path: &KeyPath, on_key: bool) -> Diag {
        let diag = diag.path(path.to_string());
        match self.offset_of(path, on_key) {
            Some(offset) => diag.at(&self.text, offset),
            None => diag,
        }
    }

    /// Byte offset of a key path's value (or key) in the text.
    pub fn offset_of(&self, path: &KeyPath, on_key: bool) -> Option<usize> {
        // Walk up to the longest prefix that can be found, so a missing key points at its table.
        let mut path = path.clone();
        loop {
            let found = match &self.toml {
                Some(doc) => toml_offset(doc, &path.0, on_key),
                None => yaml_offset(&self.text, &path.0, on_key),
            };
            if found.is_some() || path.0.is_empty() {
                return found;
            }
            path.0.pop();
        }
    }
}

fn toml_offset(doc: &toml_edit::Document<String>, path: &[Seg], on_key: bool) -> Option<usize> {
    use toml_edit::{Item, Value};
    if path.is_empty() {
        return Some(0);
    }
    let mut item: &Item = doc.as_item();
    let mut key_span = None;
    for seg in path {
        match seg {
            Seg::Key(k) => {
                let (key, next) = match item {
                    Item::Table(t) => t.get_key_value(k)?,
                    Item::Value(Value::InlineTable(t)) => t.get_key_value(k)?,
                    _ => return None,
                };
                key_span = key.span();
                item = next;
            }
            Seg::Index(i) => match item {
                Item::ArrayOfTables(a) => {
                    let t = a.get(*i)?;
                    return match path.iter().position(|s| s == seg) {
                        Some(pos) if pos + 1 < path.len() => {
                            toml_offset_in_table(t, &path[pos + 1..], on_key)
                                .or_else(|| t.span().map(|s| s.start))
                        }
                        _ => t.span().map(|s| s.start),
                    };
                }
                Item::Value(Value::Array(a)) => {
                    let v = a.get(*i)?;
                    return v.span().map(|s| s.start);
                }
                _ => return None,
            },
        }
    }
    if on_key && let Some(span) = key_span {
        return Some(span.start);
    }
    item.span().or(key_span).map(|s| s.start)
}

fn toml_offset_in_table(table: &toml_edit::Table, path: &[Seg], on_key: bool) -> Option<usize> {
    // Spans survive a clone, so the walk below reads the original positions.
    let owned = toml_edit::Item::Table(table.clone());
    let mut item = &owned;
    let mut key_span = None;
    for seg in path {
        match (seg, item) {
            (Seg::Key(k), toml_edit::Item::Table(t)) => {
                let (key, next) = t.get_key_value(k)?;
                key_span = key.span();
                item = next;
            }
            (Seg::Key(k), toml_edit::Item::Value(toml_edit::Value::InlineTable(t))) => {
                let (key, next) = t.get_key_value(k)?;
                key_span = key.span();
                item = next;
            }
            (Seg::Index(i), toml_edit::Item::Value(toml_edit::Value::Array(a))) => {
                return a.get(*i)?.span().map(|s| s.start);
            }
            _ => return None,
        }
    }
    if on_key && let Some(span) = key_span {
        return Some(span.start);
    }
    item.span().or(key_span).map(|s| s.start)
}

/// Finds a key path in YAML text by indentation: good for block-style documents, which is what
/// operators write; flow-style collections resolve to their key. Without `on_key`, a key whose
/// value is on its own line resolves to that value.
fn yaml_offset(text: &str, path: &[Seg], on_key: bool) -> Option<usize> {
    let lines: Vec<(usize, &str)> = {
        let mut offset = 0;
        text.split_inclusive('\n')
            .map(|l| {
                let start = offset;
                offset += l.len();
                (start, l.trim_end_matches(['\n', '\r']))
            })
            .collect()
    };
    let indent = |l: &str| l.len() - l.trim_start().len();
    let meaningful = |l: &str| {
        let t = l.trim_start();
        !t.is_empty() && !t.starts_with('#') && t != "---"
    };
    // The region is [lo, hi) over lines, with children indented more than `parent`.
    let (mut lo, mut hi, mut parent): (usize, usize, isize) = (0, lines.len(), -1);
    let mut found = Some(0);
    // Where the value of the last key found starts, when it is on the key's line.
    let mut value_at = None;
    for seg in path {
        let mut hit = None;
        value_at = None;
        match seg {
            Seg::Key(k) => {
                for (i, (_, l)) in lines.iter().enumerate().take(hi).skip(lo) {
                    if !meaningful(l) || (indent(l) as isize) <= parent {
                        continue;
                    }
                    let t = l.trim_start().trim_start_matches("- ");
                    let bare = t
                        .strip_prefix(k.as_str())
                        .is_some_and(|r| r.starts_with(':'));
                    let quoted = t
                        .strip_prefix(&format!("\"{k}\""))
                        .is_some_and(|r| r.starts_with(':'));
                    if bare || quoted {
                        let col = l.len() - t.len();
                        hit = Some((i, col));
                        let after = col + k.len() + if quoted { 3 } else { 1 };
                        let rest = &l[after..];
                        let value = rest.trim_start();
                        if !value.is_empty() && !value.starts_with('#') {
                            value_at = Some(lines[i].0 + after + (rest.len() - value.len()));
                        }
                        break;
                    }
                }
            }
            Seg::Index(n) => {
                let mut count = 0;
                for (i, (_, l)) in lines.iter().enumerate().take(hi).skip(lo) {
                    if meaningful(l)
                        && (indent(l) as isize) > parent
                        && l.trim_start().starts_with("- ")
                    {
                        if count == *n {
                            hit = Some((i, indent(l) + 2));
                            break;
                        }
                        count += 1;
                    }
                }
            }
        }
        let (i, col) = hit?;
        found = Some(lines[i].0 + col);
        parent = col as isize - 1;
        lo = i + 1;
        hi = (lo..lines.len())
            .find(|&j| {
                meaningful(lines[j].1)
                    && (indent(lines[j].1) as isize) <= parent.max(indent(lines[i].1) as isize - 1)
            })
            .unwrap_or(lines.len());
        // A key whose value is on the same line (flow style) keeps its own line as the region.
        if lo == hi {
            lo = i;
            hi = i + 1;
        }
    }
    if !on_key && let Some(at) = value_at {
        return Some(at);
    }
    found
}

fn toml_to_json(v: toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(i) => J::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            J::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

fn yaml_to_json(v: serde_yaml::Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match v {
        serde_yaml::Value::Null => J::Null,
        serde_yaml::Value::Bool(b) => J::Bool(b),
        serde_yaml::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                J::from(i)
            } else if let Some(u) = n.as_u64() {
                J::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(J::Null, J::Number)
            }
        }
        serde_yaml::Value::String(s) => J::String(s),
        serde_yaml::Value::Sequence(s) => {
            J::Array(s.into_iter().map(yaml_to_json).collect::<Result<_, _>>()?)
        }
        serde_yaml::Value::Mapping(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                let key = match k {
                    serde_yaml::Value::String(s) => s,
                    serde_yaml::Value::Number(n) => n.to_string(),
                    serde_yaml::Value::Bool(b) => b.to_string(),
                    other => {
                        return Err(format!(
                            "unsupported mapping key {other:?}: keys must be strings"
                        ));
                    }
                };
                out.insert(key, yaml_to_json(v)?);
            }
            J::Object(out)
        }
        serde_yaml::Value::Tagged(t) => yaml_to_json(t.value)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(segs: &[&str]) -> KeyPath {
        let mut k = KeyPath::root();
        for s in segs {
            k = match s.parse::<usize>() {
                Ok(i) => k.index(i),
                Err(_) => k.key(s),
            };
        }
        k
    }

    #[test]
    fn toml_locates_keys_values_and_array_items() {
        let text = "[round]\nname = \"x\"\n\n[[models]]\nid = \"a\"\n\n[[models]]\nid = \"b\"\n\n[stages.judge]\nneeds = [\"gate\", \"bild\"]\n";
        let doc = SourceDoc::parse(Path::new("p.toml"), text.to_string()).unwrap();
        let d = doc.error_at(&p(&["models", "1", "id"]), "m", false);
        assert_eq!((d.line, d.col), (8, 6));
        let d = doc.error_at(&p(&["stages", "judge", "needs", "1"]), "m", false);
        assert_eq!((d.line, d.col), (11, 18));
        let d = doc.error_at(&p(&["round", "name"]), "m", true);
        assert_eq!((d.line, d.col), (2, 1));
        // A missing key points at its table.
        let d = doc.error_at(&p(&["round", "task"]), "m", true);
        assert_eq!(d.line, 1);
    }

    #[test]
    fn yaml_locates_nested_keys_and_items() {
        let text = "round:\n  name: x\nmodels:\n  - id: a\n    provider: p\n  - id: b\n    provider: q\nstages:\n  judge:\n    needs: [gate]\n";
        let doc = SourceDoc::parse(Path::new("p.yaml"), text.to_string()).unwrap();
        let d = doc.error_at(&p(&["models", "1", "provider"]), "m", true);
        assert_eq!((d.line, d.col), (7, 5));
        let d = doc.error_at(&p(&["stages", "judge", "needs"]), "m", true);
        assert_eq!((d.line, d.col), (10, 5));
        // About the value rather than the key: the caret moves to the value.
        let d = doc.error_at(&p(&["models", "1", "provider"]), "m", false);
        assert_eq!((d.line, d.col), (7, 15));
        let d = doc.error_at(&p(&["round", "name"]), "m", false);
        assert_eq!((d.line, d.col), (2, 9));
        // A value on the lines below (a block) keeps the key.
        let d = doc.error_at(&p(&["models"]), "m", false);
        assert_eq!((d.line, d.col), (3, 1));
    }

    #[test]
    fn displays_key_paths() {
        assert_eq!(
            p(&["stages", "judge", "needs", "0"]).to_string(),
            "stages.judge.needs[0]"
        );
    }
}
