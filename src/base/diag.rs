//! Diagnostics: every problem with the operator's input, with file, line, column, key path and a
//! fix. Checks collect all of them and report them together.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// The source line a diagnostic shows, with its caret: a long line (minified, or a flow
/// collection of thousands of keys) is cut to a window around the caret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snippet {
    pub text: String,
    /// 1-based column of the caret in `text` (the line's own column unless the line was cut).
    pub caret: usize,
    /// Width of the caret in characters.
    pub width: usize,
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diag {
    pub severity: Severity,
    pub file: PathBuf,
    /// 1-based line and column; 0 when the problem is about the file as a whole.
    pub line: usize,
    pub col: usize,
    /// The key path inside the file (`stages.judge.needs[0]`), empty when none applies.
    pub path: String,
    pub message: String,
    /// The offending source line, for the caret display.
    #[serde(skip)]
    pub snippet: Option<Snippet>,
    pub help: Option<String>,
}

impl Diag {
    pub fn error(file: &Path, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            file: file.to_path_buf(),
            line: 0,
            col: 0,
            path: String::new(),
            message: message.into(),
            snippet: None,
            help: None,
        }
    }

    pub fn warning(file: &Path, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(file, message)
        }
    }

    /// Locates the diagnostic at a byte offset of `source` (scanning it: for one diagnostic; a
    /// document reporting many uses [`Self::at_indexed`]).
    #[must_use]
    pub fn at(self, source: &str, offset: usize) -> Self {
        self.at_indexed(&LineIndex::new(source), source, offset)
    }

    /// Locates the diagnostic at a byte offset of `source`, whose [`LineIndex`] is `index`: in
    /// time independent of the file's size, however many problems a file has.
    #[must_use]
    pub fn at_indexed(mut self, index: &LineIndex, source: &str, offset: usize) -> Self {
        let (line, col, snippet) = index.locate(source, offset);
        self.line = line;
        self.col = col;
        self.snippet = Some(snippet);
        self
    }

    #[must_use]
    pub fn at_line(mut self, line: usize, col: usize) -> Self {
        self.line = line;
        self.col = col;
        self
    }

    #[must_use]
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    #[must_use]
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    #[must_use]
    pub fn help_opt(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:col: error: message (at `key.path`)`, then the source line with a caret and the
    /// help. Paths are shown relative to `base` when they lie under it.
    pub fn render(&self, base: &Path) -> String {
        let file = self
            .file
            .strip_prefix(base)
            .unwrap_or(&self.file)
            .display()
            .to_string();
        let mut out = String::new();
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.line > 0 {
            let _ = write!(
                out,
                "{file}:{}:{}: {severity}: {}",
                self.line, self.col, self.message
            );
        } else {
            let _ = write!(out, "{file}: {severity}: {}", self.message);
        }
        if !self.path.is_empty() {
            let _ = write!(out, " (at `{}`)", self.path);
        }
        out.push('\n');
        if let Some(snippet) = &self.snippet {
            let gutter = self.line.to_string();
            let pad = " ".repeat(gutter.len());
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{gutter} | {}", snippet.text);
            let _ = writeln!(
                out,
                "{pad} | {}{}",
                " ".repeat(snippet.caret.saturating_sub(1)),
                "^".repeat(snippet.width.max(1))
            );
        }
        if let Some(help) = &self.help {
            let _ = writeln!(out, "  = help: {help}");
        }
        out
    }
}

/// The diagnostics a report shows, errors first in file order, at most
/// [`MAX_SHOWN_DIAGNOSTICS`](crate::base::limits::MAX_SHOWN_DIAGNOSTICS) of them; and how many more
/// there are.
pub fn shown(diags: &[Diag]) -> (Vec<&Diag>, usize) {
    let mut sorted: Vec<&Diag> = diags.iter().collect();
    sorted.sort_by(|a, b| {
        (a.severity, &a.file, a.line, a.col, &a.message)
            .cmp(&(b.severity, &b.file, b.line, b.col, &b.message))
    });
    let more = sorted
        .len()
        .saturating_sub(crate::base::limits::MAX_SHOWN_DIAGNOSTICS);
    sorted.truncate(crate::base::limits::MAX_SHOWN_DIAGNOSTICS);
    (sorted, more)
}

/// Renders the diagnostics [`shown`] picks, then a count line.
pub fn render_all(diags: &[Diag], base: &Path) -> String {
    let (shown, more) = shown(diags);
    let mut out = String::new();
    for d in &shown {
        out.push_str(&d.render(base));
    }
    if more > 0 {
        let _ = writeln!(
            out,
            "... and {more} more not shown (the first {} are above)",
            shown.len()
        );
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    if errors > 0 {
        let _ = writeln!(out, "{errors} error(s), {warnings} warning(s)");
    }
    out
}

/// Where each line of a text starts, and how many characters precede each 64-byte block: a
/// byte offset becomes a line and column in logarithmic time, so a file with thousands of
/// problems is located in time linear in its size.
#[derive(Debug, Clone)]
pub struct LineIndex {
    starts: Vec<usize>,
    blocks: Vec<usize>,
}

const BLOCK: usize = 64;
/// Lines longer than this (in bytes) are shown as a window around the caret.
const MAX_SNIPPET_BYTES: usize = 400;
/// How much of a long line the window shows before the caret, in bytes.
const SNIPPET_BEFORE: usize = 120;

fn is_char_start(b: u8) -> bool {
    // Every byte of UTF-8 but a continuation byte (0b10xx_xxxx) starts a character.
    (b as i8) >= -0x40
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let bytes = text.as_bytes();
        let mut starts = vec![0];
        starts.extend(
            bytes
                .iter()
                .enumerate()
                .filter(|&(_, &b)| b == b'\n')
                .map(|(i, _)| i + 1),
        );
        let mut blocks = Vec::with_capacity(bytes.len() / BLOCK + 2);
        let mut count = 0;
        blocks.push(0);
        for chunk in bytes.chunks(BLOCK) {
            count += chunk.iter().filter(|&&b| is_char_start(b)).count();
            blocks.push(count);
        }
        Self { starts, blocks }
    }

    /// Characters in `text[..offset]`.
    fn chars_before(&self, text: &str, offset: usize) -> usize {
        let block = offset / BLOCK;
        self.blocks[block]
            + text.as_bytes()[block * BLOCK..offset]
                .iter()
                .filter(|&&b| is_char_start(b))
                .count()
    }

    /// 1-based line and column of a byte offset, and the snippet showing it.
    fn locate(&self, source: &str, offset: usize) -> (usize, usize, Snippet) {
        let offset = floor_char_boundary(source, offset.min(source.len()));
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        let end = self.starts.get(line).map_or(source.len(), |next| next - 1);
        let col = self.chars_before(source, offset) - self.chars_before(source, start) + 1;
        (line, col, snippet(source, start, end, offset, col))
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// The line `source[start..end]` with the caret at `offset` (column `col`); a long line is cut
/// to a window around the caret, marked with `...` where it was cut.
fn snippet(source: &str, start: usize, end: usize, offset: usize, col: usize) -> Snippet {
    let line = source[start..end].trim_end_matches('\r');
    let end = start + line.len();
    let rest = &source[offset.min(end)..end];
    if line.len() <= MAX_SNIPPET_BYTES {
        return Snippet {
            text: line.to_string(),
            caret: col,
            width: token_width(rest),
        };
    }
    let from = ceil_char_boundary(source, offset.saturating_sub(SNIPPET_BEFORE).max(start));
    let to = floor_char_boundary(source, (from + MAX_SNIPPET_BYTES).min(end));
    let mut text = String::new();
    let mut caret = source[from..offset].chars().count() + 1;
    if from > start {
        text.push_str("...");
        caret += 3;
    }
    text.push_str(&source[from..to]);
    if to < end {
        text.push_str("...");
    }
    Snippet {
        text,
        caret,
        width: token_width(&source[offset.min(to)..to]),
    }
}

/// Width in characters of the token `rest` starts with: a whole quoted string, or up to the
/// first space, `=`, `,`, `]`, `}` or YAML `key:` colon.
fn token_width(rest: &str) -> usize {
    let mut chars = rest.char_indices().peekable();
    let end = match chars.next() {
        Some((_, q @ ('"' | '\''))) => {
            let mut escaped = false;
            chars
                .find(|&(_, c)| {
                    let close = c == q && !escaped;
                    escaped = q == '"' && c == '\\' && !escaped;
                    close
                })
                .map(|(i, c)| i + c.len_utf8())
        }
        _ => rest
            .char_indices()
            .find(|&(i, c)| {
                c.is_whitespace()
                    || matches!(c, '=' | ',' | ']' | '}')
                    || (c == ':' && rest[i + 1..].chars().next().is_none_or(char::is_whitespace))
            })
            .map(|(i, _)| i),
    };
    let end = end.unwrap_or(rest.len());
    rest[..end].chars().count()
}

/// The closest of `candidates` to `name`, when it is close enough to be a likely typo. Past
/// [`MAX_SUGGESTION_CANDIDATES`](crate::base::limits::MAX_SUGGESTION_CANDIDATES) candidates there is
/// no guess: each error would otherwise cost a comparison with every name of the file.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = crate::base::limits::MAX_SUGGESTION_CANDIDATES;
    let candidates: Vec<&str> = candidates.into_iter().take(limit + 1).collect();
    if candidates.len() > limit {
        return None;
    }
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// "did you mean `x`?" for the closest candidate, or a list of the valid names when none is close
/// (the first [`MAX_LISTED_NAMES`](crate::base::limits::MAX_LISTED_NAMES), and how many more).
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str> + Clone,
) -> Option<String> {
    if let Some(best) = suggest(name, candidates.clone()) {
        return Some(format!("did you mean `{best}`?"));
    }
    let listed = crate::base::limits::MAX_LISTED_NAMES;
    let counted = crate::base::limits::MAX_SUGGESTION_CANDIDATES;
    let mut names = candidates.into_iter();
    let all: Vec<String> = names
        .by_ref()
        .take(listed)
        .map(|c| format!("`{c}`"))
        .collect();
    let more = match names.take(counted).count() {
        0 => String::new(),
        n if n < counted => format!(" and {n} more"),
        _ => format!(" and more than {counted} others"),
    };
    (!all.is_empty()).then(|| format!("expected one of {}{more}", all.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locate(src: &str, offset: usize) -> (usize, usize, String, usize, usize) {
        let (line, col, s) = LineIndex::new(src).locate(src, offset);
        (line, col, s.text, s.caret, s.width)
    }

    #[test]
    fn line_and_column_of_offset() {
        let src = "a = 1\nbee = 2\n";
        assert_eq!(locate(src, 6), (2, 1, "bee = 2".into(), 1, 3));
        assert_eq!(locate(src, 0), (1, 1, "a = 1".into(), 1, 1));
        assert_eq!(locate(src, src.len()), (3, 1, String::new(), 1, 0));
        // Columns count characters, across 64-byte blocks too.
        let src = format!("{}\nx = \"{}\" # é\ny = 1", "é".repeat(40), "ü".repeat(50));
        let at = src.find("y =").unwrap();
        assert_eq!(locate(&src, at).0, 3);
        assert_eq!(locate(&src, at).1, 1);
        let at = src.find('#').unwrap();
        assert_eq!(locate(&src, at).1, 58);
        assert_eq!(Diag::error(Path::new("p"), "m").at(&src, at).col, 58);
    }

    #[test]
    fn a_long_line_is_shown_as_a_window_around_the_caret() {
        let mut line = String::new();
        for i in 0..5000 {
            let _ = write!(line, "k{i} = {i}, ");
        }
        let src = format!("a = 1\nt = {{ {line}}}\n");
        let at = src.find("k2500 =").unwrap();
        let (line_no, col, text, caret, width) = locate(&src, at);
        assert_eq!((line_no, col), (2, at - 6 + 1));
        assert!(text.len() < 420, "{}", text.len());
        assert!(text.starts_with("...") && text.ends_with("..."), "{text}");
        assert_eq!(&text[caret - 1..caret - 1 + width], "k2500");
    }

    #[test]
    fn a_report_shows_the_first_problems_and_counts_the_rest() {
        let diags: Vec<Diag> = (0..120)
            .map(|i| Diag::error(Path::new("p.toml"), format!("e{i:03}")).at_line(i + 1, 1))
            .collect();
        let out = render_all(&diags, Path::new("."));
        assert_eq!(
            out.lines().count(),
            crate::base::limits::MAX_SHOWN_DIAGNOSTICS + 2
        );
        assert!(out.contains("p.toml:50:1: error: e049\n"), "{out}");
        assert!(!out.contains("e050"), "{out}");
        assert!(
            out.ends_with(
                "... and 70 more not shown (the first 50 are above)\n120 error(s), 0 warning(s)\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn guesses_and_lists_are_bounded() {
        let many: Vec<String> = (0..10_000).map(|i| format!("model-{i}")).collect();
        let names = || many.iter().map(String::as_str);
        assert_eq!(suggest("model-1", names()), None);
        assert_eq!(
            did_you_mean("zzz", names().take(20)).unwrap(),
            "expected one of `model-0`, `model-1`, `model-2`, `model-3`, `model-4`, `model-5`, \
             `model-6`, `model-7`, `model-8`, `model-9`, `model-10`, `model-11` and 8 more"
        );
        assert!(
            did_you_mean("zzz", names())
                .unwrap()
                .ends_with(" and more than 500 others")
        );
    }

    #[test]
    fn token_widths() {
        assert_eq!(token_width(r#""a b" # x"#), 5);
        assert_eq!(token_width(r#""a \" b", 1"#), 8);
        assert_eq!(token_width("'it''s'"), 4);
        assert_eq!(token_width("temprature: 0.2"), 10);
        assert_eq!(token_width("http://x:8080/v1"), 16);
        assert_eq!(token_width("[\"a\", \"b\"]"), 4);
        assert_eq!(token_width("\"unterminated"), 13);
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(suggest("promt", ["prompt", "rubric"]), Some("prompt"));
        assert_eq!(suggest("zzz", ["prompt", "rubric"]), None);
    }
}
