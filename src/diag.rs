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
    pub snippet: Option<(String, usize)>,
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

    #[must_use]
    pub fn at(mut self, source: &str, offset: usize) -> Self {
        let (line, col, text, width) = line_col(source, offset);
        self.line = line;
        self.col = col;
        self.snippet = Some((text, width));
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
        if let Some((text, width)) = &self.snippet {
            let gutter = self.line.to_string();
            let pad = " ".repeat(gutter.len());
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{gutter} | {text}");
            let _ = writeln!(
                out,
                "{pad} | {}{}",
                " ".repeat(self.col.saturating_sub(1)),
                "^".repeat((*width).max(1))
            );
        }
        if let Some(help) = &self.help {
            let _ = writeln!(out, "  = help: {help}");
        }
        out
    }
}

/// Renders all diagnostics, errors first (in file order), then a count line.
pub fn render_all(diags: &[Diag], base: &Path) -> String {
    let mut sorted: Vec<&Diag> = diags.iter().collect();
    sorted.sort_by(|a, b| {
        (a.severity, &a.file, a.line, a.col, &a.message)
            .cmp(&(b.severity, &b.file, b.line, b.col, &b.message))
    });
    let mut out = String::new();
    for d in &sorted {
        out.push_str(&d.render(base));
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    if errors > 0 {
        let _ = writeln!(out, "{errors} error(s), {warnings} warning(s)");
    }
    out
}

/// 1-based line and column of a byte offset, the line's text and the width of the token there.
fn line_col(source: &str, offset: usize) -> (usize, usize, String, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let end = source[start..]
        .find('\n')
        .map_or(source.len(), |i| start + i);
    let text = source[start..end].trim_end_matches('\r').to_string();
    let col = source[start..offset].chars().count() + 1;
    let rest = &source[offset..end];
    (line, col, text, token_width(rest))
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

/// The closest of `candidates` to `name`, when it is close enough to be a likely typo.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// "did you mean `x`?" for the closest candidate, or the list of valid names when none is close.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str> + Clone,
) -> Option<String> {
    if let Some(best) = suggest(name, candidates.clone()) {
        return Some(format!("did you mean `{best}`?"));
    }
    let all: Vec<String> = candidates.into_iter().map(|c| format!("`{c}`")).collect();
    (!all.is_empty()).then(|| format!("expected one of {}", all.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_of_offset() {
        let src = "a = 1\nbee = 2\n";
        let (line, col, text, width) = line_col(src, 6);
        assert_eq!((line, col, text.as_str(), width), (2, 1, "bee = 2", 3));
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
