//! How much of anything pipe takes from its input: file sizes read before parsing, a template's
//! rendering budget, the size of a plan, how many problems one report lists. Every limit is here,
//! so an operator (and docs/SECURITY.md) can read them in one place; a file past its limit is
//! refused with its name, its size and the limit, before any parser sees it.

use std::io::Read;
use std::path::{Path, PathBuf};

/// A pipeline, a rubric or a task.toml. A round of 20,000 models is about 2 MiB.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// A task's spec (it is pasted into every build and judge prompt).
pub const MAX_SPEC_BYTES: u64 = 1 << 20;
/// A prompt template.
pub const MAX_TEMPLATE_BYTES: u64 = 1 << 20;
/// A JSON or JSON-lines file `pipe import` reads, and a round's `round-data.json` read back.
pub const MAX_IMPORT_BYTES: u64 = 64 << 20;
/// What a gzip-compressed import may decompress to (a gzip bomb stops here).
pub const MAX_DECOMPRESSED_BYTES: u64 = 64 << 20;
/// One recording the replay provider reads.
pub const MAX_RECORDING_BYTES: u64 = 64 << 20;

/// Instructions one template rendering may execute (minijinja fuel): real prompt templates use a
/// few thousand; a loop that would run for hours stops here, well under a second.
pub const TEMPLATE_FUEL: u64 = 5_000_000;
/// Nested macro calls (and includes) in one rendering; a macro that calls itself stops here.
pub const TEMPLATE_RECURSION: usize = 64;
/// Bytes one rendering may produce.
pub const MAX_RENDERED_BYTES: usize = 16 << 20;

/// Nodes a plan may expand to; a round of 100 models judging each other with 3 samples of 30
/// tasks is 900,000.
pub const MAX_PLAN_NODES: u64 = 1_000_000;
/// Dependency edges a plan may have.
pub const MAX_PLAN_EDGES: u64 = 10_000_000;

/// The longest any timeout may be, in seconds (a day).
pub const MAX_TIMEOUT_SECS: u64 = 86_400;

/// Problems one report shows; the rest are counted.
pub const MAX_SHOWN_DIAGNOSTICS: usize = 50;
/// Past this many candidates, an unknown name gets no "did you mean" (each guess compares the name
/// with every candidate).
pub const MAX_SUGGESTION_CANDIDATES: usize = 500;
/// Names listed in one "expected one of ..." help.
pub const MAX_LISTED_NAMES: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `size` is `None` when the file gives no size (a pipe, a device) and holds more than the
    /// limit.
    #[error("{}: {}", path.display(), self.detail())]
    TooLarge {
        path: PathBuf,
        size: Option<u64>,
        limit: u64,
        what: &'static str,
    },
    #[error("{}: {}", path.display(), self.detail())]
    Inflates {
        path: PathBuf,
        limit: u64,
        what: &'static str,
    },
}

impl ReadError {
    /// The problem without the file's name, for a diagnostic that names the file itself.
    pub fn detail(&self) -> String {
        match self {
            Self::Io { source, .. } => format!("cannot read file: {source}"),
            Self::TooLarge {
                size: Some(size),
                limit,
                what,
                ..
            } => format!(
                "the file is {}; pipe reads at most {} of {what}",
                bytes(*size),
                bytes(*limit)
            ),
            Self::TooLarge {
                size: None,
                limit,
                what,
                ..
            } => format!(
                "the file holds more than {}, the most pipe reads of {what}",
                bytes(*limit)
            ),
            Self::Inflates { limit, what, .. } => format!(
                "the file decompresses to more than {}, the most pipe reads of {what}",
                bytes(*limit)
            ),
        }
    }
}

/// `1234 bytes`, or `4 MiB (4194304 bytes)` when it is a whole number of KiB or MiB.
pub fn bytes(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB ({n} bytes)", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB ({n} bytes)", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// Reads a whole file of at most `limit` bytes; `what` names the kind of file in the error
/// ("a pipeline file"). A file that says it is larger is refused unread; one that gives no size
/// (a FIFO, `/dev/zero`) is read up to the limit and refused past it.
pub fn read(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > limit {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            size: Some(size),
            limit,
            what,
        });
    }
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limit + 1).read_to_end(&mut out).map_err(io)?;
    if out.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            size: None,
            limit,
            what,
        });
    }
    Ok(out)
}

/// [`read`], as UTF-8 text.
pub fn read_text(path: &Path, limit: u64, what: &'static str) -> Result<String, ReadError> {
    let bytes = read(path, limit, what)?;
    String::from_utf8(bytes).map_err(|e| ReadError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// Decompresses gzip `bytes` (of the file `path`) up to [`MAX_DECOMPRESSED_BYTES`].
pub fn gunzip(path: &Path, bytes: &[u8], what: &'static str) -> Result<Vec<u8>, ReadError> {
    let limit = MAX_DECOMPRESSED_BYTES;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|source| ReadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if out.len() as u64 > limit {
        return Err(ReadError::Inflates {
            path: path.to_path_buf(),
            limit,
            what,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_past_its_limit_is_refused_with_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big.toml");
        std::fs::write(&f, vec![b'#'; 2049]).unwrap();
        let e = read(&f, 2048, "a pipeline file").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: the file is 2049 bytes; pipe reads at most 2 KiB (2048 bytes) of a pipeline file",
                f.display()
            )
        );
        assert_eq!(read(&f, 2049, "x").unwrap().len(), 2049);
    }

    #[test]
    fn a_file_without_a_size_is_read_up_to_the_limit_only() {
        let e = read(Path::new("/dev/zero"), 1 << 20, "an import").unwrap_err();
        assert!(
            e.to_string().ends_with(
                "/dev/zero: the file holds more than 1 MiB (1048576 bytes), the most pipe reads of an import"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_decompressed_limit() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..=(MAX_DECOMPRESSED_BYTES >> 20) {
            enc.write_all(&zeros).unwrap();
        }
        let gz = enc.finish().unwrap();
        assert!(gz.len() < 1 << 20, "the bomb is small: {}", gz.len());
        let e = gunzip(Path::new("bomb.jsonl.gz"), &gz, "a HumanEval file").unwrap_err();
        assert_eq!(
            e.to_string(),
            "bomb.jsonl.gz: the file decompresses to more than 64 MiB (67108864 bytes), the most pipe reads of a HumanEval file"
        );
    }
}
