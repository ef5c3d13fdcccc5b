//! Operator-written files (pipelines, rubrics, tasks) as parsed documents that remember where
//! every key is, so any later check can point at the line and column it is about.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::base::diag::{Diag, LineIndex};
use crate::base::limits::{self, ReadError};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A key path inside a document, displayed as `stages.judge.needs[0]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
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
    /// The data; a number that is not finite (TOML's `nan`, `inf`; YAML's `.nan`, `.inf`) is
    /// `null` here and listed in `non_finite`.
    pub value: serde_json::Value,
    toml: Option<toml_edit::Document<String>>,
    yaml: Option<YamlIndex>,
    lines: LineIndex,
    /// Where the document holds a number that is not finite, and the number.
    non_finite: Vec<(KeyPath, f64)>,
    non_finite_at: std::collections::HashSet<KeyPath>,
}

impl fmt::Debug for SourceDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceDoc")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl SourceDoc {
    /// Reads and parses a TOML or YAML file (by extension), of at most
    /// [`MAX_CONFIG_BYTES`](limits::MAX_CONFIG_BYTES). Errors are located diagnostics.
    pub fn load(file: &Path) -> Result<Self, Diag> {
        let bytes = limits::read(file, limits::MAX_CONFIG_BYTES, "a pipeline, rubric or task file")
            .map_err(|e| {
                let help = match e {
                    ReadError::Io { .. } => {
                        "check the path; paths are relative to the file that names them"
                    }
                    _ => "check that this is the file you meant; a round this large belongs in several pipelines",
                };
                Diag::error(file, e.detail()).help(help)
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
                let mut non_finite = Vec::new();
                let value = toml_to_json(value, &mut Vec::new(), &mut non_finite);
                Ok(Self {
                    file: file.to_path_buf(),
                    value,
                    lines: LineIndex::new(&text),
                    text,
                    format,
                    toml: Some(doc),
                    yaml: None,
                    non_finite_at: non_finite.iter().map(|(p, _)| p.clone()).collect(),
                    non_finite,
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
                let mut non_finite = Vec::new();
                let value = yaml_to_json(value, &mut Vec::new(), &mut non_finite)
                    .map_err(|m| Diag::error(file, m))?;
                Ok(Self {
                    file: file.to_path_buf(),
                    value,
                    lines: LineIndex::new(&text),
                    yaml: Some(YamlIndex::new(&text)),
                    text,
                    format,
                    toml: None,
                    non_finite_at: non_finite.iter().map(|(p, _)| p.clone()).collect(),
                    non_finite,
                })
            }
        }
    }

    /// A located error for every number of the document that is not finite: no setting of pipe
    /// (a price, a weight, a scale, a temperature) means anything as `nan` or `inf`.
    pub fn non_finite_errors(&self) -> Vec<Diag> {
        self.non_finite
            .iter()
            .map(|(path, n)| {
                let name = match path.0.last() {
                    Some(Seg::Key(k)) => format!("`{k}`"),
                    _ => "this value".to_string(),
                };
                self.error_at(
                    path,
                    format!("{name} must be a finite number, found {}", number_text(*n)),
                    false,
                )
                .help("`nan` and `inf` are not usable values here: write a number")
            })
            .collect()
    }

    /// True when the value at `path` is a number that is not finite (reported by
    /// [`Self::non_finite_errors`]).
    pub fn is_non_finite(&self, path: &KeyPath) -> bool {
        self.non_finite_at.contains(path)
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
            Some(offset) => diag.at_indexed(&self.lines, &self.text, offset),
            None => diag,
        }
    }

    /// Byte offset of a key path's value (or key) in the text.
    pub fn offset_of(&self, path: &KeyPath, on_key: bool) -> Option<usize> {
        // Walk up to the longest prefix that can be found, so a missing key points at its table.
        let mut path = path.clone();
        loop {
            let found = match (&self.toml, &self.yaml) {
                (Some(doc), _) => toml_offset(doc, &path.0, on_key),
                (None, Some(index)) => index.offset(&self.text, &path.0, on_key),
                (None, None) => Some(0),
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
    let Some((Seg::Key(first), rest)) = path.split_first() else {
        return None;
    };
    let (key, mut item) = table.get_key_value(first)?;
    let mut key_span = key.span();
    for seg in rest {
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

/// A YAML document's lines, indexed once so each key path is found in logarithmic time: a file of
/// 50,000 unknown keys is located in linear time, not by rescanning the file per key.
///
/// Finds key paths by indentation: good for block-style documents, which is what operators
/// write; flow-style collections resolve to their key. Without `on_key`, a key whose value is on
/// its own line resolves to that value.
struct YamlIndex {
    /// Byte offset where each line starts, and its length without the line ending.
    lines: Vec<(usize, usize)>,
    /// Indentation of each meaningful line; `usize::MAX` for blank lines, comments and `---`.
    indent: Vec<usize>,
    /// Minimum of `indent` over ranges of lines: where a block ends.
    ends: MinTree,
    /// Meaningful lines by the key they start with (after any `- `), in line order: (line,
    /// column of the key, whether it is quoted).
    keys: HashMap<String, Vec<(usize, usize, bool)>>,
    /// Meaningful lines that start a sequence item (`- `), in order.
    items: Vec<usize>,
}

impl YamlIndex {
    fn new(text: &str) -> Self {
        let mut index = Self {
            lines: Vec::new(),
            indent: Vec::new(),
            ends: MinTree::new(&[]),
            keys: HashMap::new(),
            items: Vec::new(),
        };
        let mut offset = 0;
        for (i, raw) in text.split_inclusive('\n').enumerate() {
            let l = raw.trim_end_matches(['\n', '\r']);
            index.lines.push((offset, l.len()));
            offset += raw.len();
            let trimmed = l.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "---" {
                index.indent.push(usize::MAX);
                continue;
            }
            index.indent.push(l.len() - trimmed.len());
            if trimmed.starts_with("- ") {
                index.items.push(i);
            }
            let t = trimmed.trim_start_matches("- ");
            let col = l.len() - t.len();
            for (key, quoted) in key_candidates(t) {
                index.keys.entry(key).or_default().push((i, col, quoted));
            }
        }
        index.ends = MinTree::new(&index.indent);
        index
    }

    fn line<'t>(&self, text: &'t str, i: usize) -> &'t str {
        let (start, len) = self.lines[i];
        &text[start..start + len]
    }

    fn offset(&self, text: &str, path: &[Seg], on_key: bool) -> Option<usize> {
        let n = self.lines.len();
        // The region is [lo, hi) over lines, with children indented more than `parent`. Every
        // meaningful line of a region is, but a flow-style one (a single line), which is checked.
        let (mut lo, mut hi, mut parent): (usize, usize, isize) = (0, n, -1);
        let mut found = Some(0);
        // Where the value of the last key found starts, when it is on the key's line.
        let mut value_at = None;
        let deeper = |line: usize, parent: isize| self.indent[line] as isize > parent;
        for seg in path {
            value_at = None;
            let (i, col) = match seg {
                Seg::Key(k) => {
                    let hits = self.keys.get(k.as_str())?;
                    let first = hits.partition_point(|h| h.0 < lo);
                    let &(i, col, quoted) = hits[first..]
                        .iter()
                        .take_while(|h| h.0 < hi)
                        .find(|h| deeper(h.0, parent))?;
                    let l = self.line(text, i);
                    let after = col + k.len() + if quoted { 3 } else { 1 };
                    let rest = &l[after..];
                    let value = rest.trim_start();
                    if !value.is_empty() && !value.starts_with('#') {
                        value_at = Some(self.lines[i].0 + after + (rest.len() - value.len()));
                    }
                    (i, col)
                }
                Seg::Index(item) => {
                    let first = self.items.partition_point(|&j| j < lo);
                    let i = *self.items.get(first.checked_add(*item)?)?;
                    if i >= hi || !deeper(i, parent) {
                        return None;
                    }
                    (i, self.indent[i] + 2)
                }
            };
            found = Some(self.lines[i].0 + col);
            parent = col as isize - 1;
            lo = i + 1;
            let bound = parent.max(self.indent[i] as isize - 1);
            hi = usize::try_from(bound)
                .ok()
                .and_then(|b| self.ends.first_at_most(lo, b))
                .unwrap_or(n);
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
}

/// The keys a YAML line (after its indentation and any `- `) may start with: up to the first
/// `:`, up to the first `: ` (keys like `a:b`), and a double-quoted key. At most three per line,
/// so the index stays linear in the file's size however many colons a line holds.
fn key_candidates(t: &str) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = Vec::new();
    if let Some(j) = t.find(':') {
        out.push((t[..j].to_string(), false));
    }
    let separator = t
        .char_indices()
        .find(|&(j, c)| c == ':' && t[j + 1..].chars().next().is_none_or(char::is_whitespace));
    if let Some((j, _)) = separator
        && out.first().is_none_or(|(k, _)| k.len() != j)
    {
        out.push((t[..j].to_string(), false));
    }
    if let Some(quoted) = t.strip_prefix('"')
        && let Some(j) = quoted.find("\":")
    {
        out.push((quoted[..j].to_string(), true));
    }
    out
}

/// A segment tree of minimums: the first position at or after `lo` whose value is at most a
/// bound, in logarithmic time.
struct MinTree {
    size: usize,
    tree: Vec<usize>,
}

impl MinTree {
    fn new(values: &[usize]) -> Self {
        let size = values.len().next_power_of_two();
        let mut tree = vec![usize::MAX; 2 * size];
        tree[size..size + values.len()].copy_from_slice(values);
        for i in (1..size).rev() {
            tree[i] = tree[2 * i].min(tree[2 * i + 1]);
        }
        Self { size, tree }
    }

    fn first_at_most(&self, lo: usize, bound: usize) -> Option<usize> {
        self.find(1, 0, self.size, lo, bound)
    }

    fn find(&self, node: usize, l: usize, r: usize, lo: usize, bound: usize) -> Option<usize> {
        if r <= lo || self.tree[node] > bound {
            return None;
        }
        if r - l == 1 {
            return Some(l);
        }
        let m = l.midpoint(r);
        self.find(2 * node, l, m, lo, bound)
            .or_else(|| self.find(2 * node + 1, m, r, lo, bound))
    }
}

/// `number` as the file would write it: `nan`, `inf`, `-inf`.
fn number_text(n: f64) -> String {
    if n.is_nan() {
        "nan".into()
    } else if n > 0.0 {
        "inf".into()
    } else {
        "-inf".into()
    }
}

/// A float as JSON; one that is not finite becomes `null` and is recorded at `at`.
fn float_to_json(f: f64, at: &[Seg], non_finite: &mut Vec<(KeyPath, f64)>) -> serde_json::Value {
    serde_json::Number::from_f64(f).map_or_else(
        || {
            non_finite.push((KeyPath(at.to_vec()), f));
            serde_json::Value::Null
        },
        serde_json::Value::Number,
    )
}

fn toml_to_json(
    v: toml::Value,
    at: &mut Vec<Seg>,
    non_finite: &mut Vec<(KeyPath, f64)>,
) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(i) => J::from(i),
        toml::Value::Float(f) => float_to_json(f, at, non_finite),
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(
            a.into_iter()
                .enumerate()
                .map(|(i, v)| {
                    at.push(Seg::Index(i));
                    let v = toml_to_json(v, at, non_finite);
                    at.pop();
                    v
                })
                .collect(),
        ),
        toml::Value::Table(t) => J::Object(
            t.into_iter()
                .map(|(k, v)| {
                    at.push(Seg::Key(k.clone()));
                    let v = toml_to_json(v, at, non_finite);
                    at.pop();
                    (k, v)
                })
                .collect(),
        ),
    }
}

fn yaml_to_json(
    v: serde_yaml::Value,
    at: &mut Vec<Seg>,
    non_finite: &mut Vec<(KeyPath, f64)>,
) -> Result<serde_json::Value, String> {
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
                    .map_or(J::Null, |f| float_to_json(f, at, non_finite))
            }
        }
        serde_yaml::Value::String(s) => J::String(s),
        serde_yaml::Value::Sequence(s) => {
            let mut out = Vec::with_capacity(s.len());
            for (i, v) in s.into_iter().enumerate() {
                at.push(Seg::Index(i));
                out.push(yaml_to_json(v, at, non_finite)?);
                at.pop();
            }
            J::Array(out)
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
                at.push(Seg::Key(key.clone()));
                let v = yaml_to_json(v, at, non_finite)?;
                at.pop();
                out.insert(key, v);
            }
            J::Object(out)
        }
        serde_yaml::Value::Tagged(t) => yaml_to_json(t.value, at, non_finite)?,
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
