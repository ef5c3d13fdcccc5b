//! What an import can fail with, and reading its JSON input.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::base::fsutil;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input is unreadable or wrong (exit 2).
    #[error("{0}")]
    Input(String),
    /// Writing failed (exit 1).
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A directory to write into is not plainly inside `--out` (a planted link; exit 1).
    #[error("{0}")]
    Outside(#[from] fsutil::Outside),
}

pub(super) fn input(msg: impl Into<String>) -> ImportError {
    ImportError::Input(msg.into())
}

pub(super) fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |source| ImportError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads and parses a JSON file of at most [`MAX_IMPORT_BYTES`](crate::base::limits::MAX_IMPORT_BYTES);
/// an error names the file, line:column and the key path.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, ImportError> {
    let text =
        crate::base::limits::read_text(path, crate::base::limits::MAX_IMPORT_BYTES, "a JSON file")
            .map_err(|e| input(e.to_string()))?;
    let mut de = serde_json::Deserializer::from_str(&text);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner();
        let suffix = format!(" at line {} column {}", inner.line(), inner.column());
        let full = inner.to_string();
        let message = full.strip_suffix(&suffix).unwrap_or(&full);
        let place = if at == "." {
            String::new()
        } else {
            format!(" (at `{at}`)")
        };
        input(format!(
            "{}:{}:{}: {message}{place}",
            path.display(),
            inner.line(),
            inner.column()
        ))
    })?;
    de.end().map_err(|e| {
        input(format!(
            "{}:{}:{}: trailing characters after the JSON value",
            path.display(),
            e.line(),
            e.column()
        ))
    })?;
    Ok(value)
}
