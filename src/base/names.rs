//! Names that become path components: round names and dates, stage names, model ids (which are
//! also judge ids), task names, and every name an import reads. Each is proven safe once, where it
//! is read, and carried as a [`SafeName`] from there on; code that builds a path from a name takes
//! a `SafeName`, so a name from a file can never walk out of the directory it is joined to.
//!
//! A safe name is 1 to [`MAX_NAME_BYTES`] bytes of ASCII letters, digits, `-`, `_` and `.`, whose
//! first character is a letter, a digit or `_`. So it is never `.` or `..`, never holds a
//! separator, a NUL or any other control character, never hides (`.x`) and never reads as a
//! command-line option (`-x`). `.` inside is allowed: model ids like `gpt-4.1` and dates like
//! `2026-05-08` need it. An endpoint's model name (`openai/gpt-4`, a model's `model` key) is not
//! a name in this sense: it is sent to the endpoint and never joined into a path.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::path::Path;

/// The longest safe name, in bytes. Every path pipe builds from names stays far below the 255
/// bytes a file name may have (`<model>-<sample>.yaml` is at most 80).
pub const MAX_NAME_BYTES: usize = 64;

/// What makes a name unsafe; the message completes "`x` is not a safe name: ...".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("it is empty")]
    Empty,
    #[error("it is {len} bytes long; a name has at most {MAX_NAME_BYTES}")]
    TooLong { len: usize },
    #[error("it is `{0}`, which names a directory itself")]
    DotName(&'static str),
    #[error("it starts with `{0}`")]
    BadStart(char),
    #[error("it contains {0}")]
    BadChar(String),
}

impl NameError {
    /// The rule, as a fix to show next to any unsafe name.
    pub const RULE: &'static str = "use ASCII letters, digits, `-`, `_` and `.` (a letter, digit or `_` first), at most 64 bytes";
}

/// A name proven safe to use as one path component (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct SafeName(String);

impl SafeName {
    /// Proves `name` safe.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        check(&name)?;
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<first>-<second>`, itself proven: a round id from its name and date.
    pub fn joined(first: &SafeName, second: &SafeName) -> Result<Self, NameError> {
        Self::new(format!("{first}-{second}"))
    }
}

/// Checks a name against the rule of the module.
pub fn check(name: &str) -> Result<(), NameError> {
    match name {
        "" => return Err(NameError::Empty),
        "." => return Err(NameError::DotName(".")),
        ".." => return Err(NameError::DotName("..")),
        _ => {}
    }
    if let Some(c) = name.chars().find(|c| !allowed(*c)) {
        return Err(NameError::BadChar(describe(c)));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong { len: name.len() });
    }
    match name.chars().next() {
        Some(c @ ('.' | '-')) => Err(NameError::BadStart(c)),
        _ => Ok(()),
    }
}

/// A `YYYY-MM-DD` date as a name; `None` for anything else (jiff alone would also read
/// `20260508` or `+002026-05-08`).
pub fn date(text: &str) -> Option<SafeName> {
    let date = text.parse::<jiff::civil::Date>().ok()?;
    (date.to_string() == text)
        .then(|| SafeName::new(text).ok())
        .flatten()
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// A character as a message names it: `` `/` ``, `a space`, `a NUL byte`, `` `é` (U+00E9) ``.
fn describe(c: char) -> String {
    match c {
        '/' | '\\' => format!("`{c}`, a path separator"),
        ' ' => "a space".into(),
        '\0' => "a NUL byte".into(),
        c if c.is_control() => format!("the control character U+{:04X}", u32::from(c)),
        c if c.is_ascii() => format!("`{c}`"),
        c => format!("`{c}` (U+{:04X})", u32::from(c)),
    }
}

/// A name as messages quote it: control characters escaped, and a long name cut, so a hostile
/// name can neither break a line of output nor flood it.
pub fn shown(name: &str) -> String {
    const KEEP: usize = 40;
    let escaped: String = name.chars().flat_map(char::escape_debug).collect();
    if escaped.chars().count() <= KEEP + 8 {
        return escaped;
    }
    let head: String = escaped.chars().take(KEEP).collect();
    format!("{head}... ({} bytes)", name.len())
}

impl Deref for SafeName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for SafeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<Path> for SafeName {
    fn as_ref(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl Borrow<str> for SafeName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SafeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for SafeName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for SafeName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for SafeName {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<SafeName> for String {
    fn eq(&self, other: &SafeName) -> bool {
        *self == other.0
    }
}

impl PartialEq<SafeName> for str {
    fn eq(&self, other: &SafeName) -> bool {
        self == other.0
    }
}

impl From<SafeName> for String {
    fn from(n: SafeName) -> Self {
        n.0
    }
}

impl TryFrom<String> for SafeName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::new(s)
    }
}

impl std::str::FromStr for SafeName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::new(s)
    }
}

impl<'de> serde::Deserialize<'de> for SafeName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s.clone()).map_err(|e| {
            serde::de::Error::custom(format!("`{}` is not a safe name: {e}", shown(&s)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_names_are_safe() {
        for name in [
            "alpha",
            "gpt-4.1",
            "claude-3-5-sonnet-20241022",
            "Qwen3.6-35B-A3B-oQ6-mtp",
            "deepseek-flash",
            // The reference rounds' model ids and model names (shared/reference).
            "deepseek",
            "glm",
            "kimi",
            "mimo",
            "minimax",
            "qwen",
            "mimo-v2.5-pro",
            "kimi-k2.6",
            "minimax-m2.5",
            "qwen3.6-plus",
            "deepseek-v4-pro",
            "deepseek-v4-flash",
            "glm-5.1",
            "gemma-4-26B-A4B-it",
            "atomic-write",
            "2026-05-08",
            "atomic-write-offline-2026-05-08",
            "humaneval-163",
            "CODE-015",
            "model_a",
            "_private",
            "judge-multivac",
            "a..b",
            "trailing.",
            &"x".repeat(MAX_NAME_BYTES),
        ] {
            assert_eq!(check(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn hostile_names_are_refused_with_the_reason() {
        let cases: [(&str, NameError); 13] = [
            ("", NameError::Empty),
            (".", NameError::DotName(".")),
            ("..", NameError::DotName("..")),
            (
                "../../etc",
                NameError::BadChar("`/`, a path separator".into()),
            ),
            (
                "openai/gpt-4",
                NameError::BadChar("`/`, a path separator".into()),
            ),
            ("a\\b", NameError::BadChar("`\\`, a path separator".into())),
            ("/etc", NameError::BadChar("`/`, a path separator".into())),
            ("a\0b", NameError::BadChar("a NUL byte".into())),
            (
                "a\nb",
                NameError::BadChar("the control character U+000A".into()),
            ),
            ("my model", NameError::BadChar("a space".into())),
            ("modèle", NameError::BadChar("`è` (U+00E8)".into())),
            (".hidden", NameError::BadStart('.')),
            ("-rf", NameError::BadStart('-')),
        ];
        for (name, want) in cases {
            assert_eq!(check(name), Err(want), "{name:?}");
        }
        assert_eq!(
            check(&"x".repeat(300)),
            Err(NameError::TooLong { len: 300 })
        );
        assert_eq!(check("a$(id)"), Err(NameError::BadChar("`$`".into())));
    }

    #[test]
    fn a_round_id_is_proven_too() {
        let name = SafeName::new("atomic-write").unwrap();
        let date = SafeName::new("2026-05-08").unwrap();
        assert_eq!(
            SafeName::joined(&name, &date).unwrap(),
            "atomic-write-2026-05-08"
        );
        let long = SafeName::new("x".repeat(60)).unwrap();
        assert_eq!(
            SafeName::joined(&long, &date),
            Err(NameError::TooLong { len: 71 })
        );
    }

    #[test]
    fn dates_are_plain_days() {
        assert_eq!(date("2026-05-08").unwrap(), "2026-05-08");
        for bad in [
            "2026/05/08",
            "20260508",
            "+002026-05-08",
            "2026-02-30",
            "2026-05-08/..",
        ] {
            assert_eq!(date(bad), None, "{bad}");
        }
    }

    #[test]
    fn deserialising_proves_the_name() {
        let ok: SafeName = serde_json::from_str("\"alpha\"").unwrap();
        assert_eq!(ok, "alpha");
        let err = serde_json::from_str::<SafeName>("\"../x\"").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("`../x` is not a safe name: it contains `/`"),
            "{err}"
        );
    }

    #[test]
    fn hostile_names_are_shown_escaped_and_cut() {
        assert_eq!(shown("a\0b\nc"), "a\\0b\\nc");
        let long = "y".repeat(300);
        assert_eq!(shown(&long), format!("{}... (300 bytes)", "y".repeat(40)));
    }
}
