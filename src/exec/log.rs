//! The run log: every `pipe run` appends JSON lines to `out/<round>/log.jsonl` through `tracing`,
//! besides (never instead of) the terminal output. `PIPE_LOG` sets the filter (`info` when unset;
//! `debug` adds a line per cached node).
//!
//! The executor ([`super::run`]) logs the run and its nodes, each node inside a `node` span; the
//! OpenAI-compatible provider logs retries, 429s and changes of its concurrency limit from inside
//! the span of the node that called it. docs/ARCHITECTURE.md ("The run log") lists the events.
//!
//! The file is opened with `O_APPEND | O_NOFOLLOW` (a symbolic link planted in its place is
//! refused with a warning, and the run goes on without a log) and each line is one `write`, so
//! lines never interleave.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

/// The log's file name in the round directory.
pub const LOG_FILE: &str = "log.jsonl";
/// The environment variable holding the filter (`tracing_subscriber::EnvFilter` syntax).
pub const FILTER_VAR: &str = "PIPE_LOG";

/// Where log lines go: the open log file, if any. Each line is written whole, with one `write`.
#[derive(Debug, Clone, Default)]
pub struct Appender {
    file: Arc<Mutex<Option<File>>>,
}

impl Appender {
    fn set(&self, file: Option<File>) {
        *self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = file;
    }

    fn append(&self, line: &[u8]) {
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(f) = file.as_mut() {
            // A full disk or a failing device loses log lines, never the run.
            let _ = f.write_all(line);
        }
    }
}

/// One event's line, gathered until the formatter is done with it, then appended in one write.
pub struct Line<'a> {
    to: &'a Appender,
    buf: Vec<u8>,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.to.append(&self.buf);
        }
    }
}

impl<'a> MakeWriter<'a> for Appender {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            to: self,
            buf: Vec::with_capacity(256),
        }
    }
}

/// The JSON-lines layer writing to `to`: one object per event, its fields at the top level
/// beside `timestamp`, `level`, `target` and `span` (the innermost span and its fields).
pub fn layer<S>(to: Appender) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(to)
}

/// The filter from `PIPE_LOG`, `info` when it is unset or empty. An invalid filter is reported
/// once and replaced by the default.
fn filter() -> EnvFilter {
    let builder = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .with_env_var(FILTER_VAR);
    builder.from_env().unwrap_or_else(|e| {
        eprintln!("warning: {FILTER_VAR}: {e}; logging at info");
        builder.parse_lossy("")
    })
}

/// The process's appender, behind the global subscriber (installed on first use).
fn global() -> &'static Appender {
    static GLOBAL: OnceLock<Appender> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let appender = Appender::default();
        let subscriber = tracing_subscriber::registry()
            .with(layer(appender.clone()))
            .with(filter());
        // Another subscriber already set (an embedding program's) keeps its place.
        let _ = tracing::subscriber::set_global_default(subscriber);
        appender
    })
}

/// Opens `path` for appending, never through a symbolic link, and only if it is a regular file
/// (a FIFO planted there neither blocks nor receives the log).
pub fn open_append(path: &Path) -> io::Result<File> {
    let file = File::options()
        .append(true)
        .create(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(io::ErrorKind::InvalidInput, "it is a symbolic link")
            } else {
                e
            }
        })?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is not a regular file",
        ));
    }
    Ok(file)
}

/// The log of one run, open while this lives; dropping it closes the file.
#[derive(Debug)]
pub struct RunLog {
    pub path: PathBuf,
}

impl Drop for RunLog {
    fn drop(&mut self) {
        global().set(None);
    }
}

/// Starts logging to `log.jsonl` in `round_dir` (call with the round's lock held). When the file
/// cannot be opened (a planted link, a full disk) a warning says so and `None` lets the run go on
/// without a log.
pub fn open(round_dir: &Path) -> Option<RunLog> {
    let path = round_dir.join(LOG_FILE);
    match open_append(&path) {
        Ok(file) => {
            global().set(Some(file));
            Some(RunLog { path })
        }
        Err(e) => {
            eprintln!(
                "warning: not writing the run log to {}: {e}",
                path.display()
            );
            None
        }
    }
}

/// An identifier for one run, unique within its round (runs of a round never overlap): the time
/// it started, which also orders runs in the appended log.
pub fn run_id() -> String {
    jiff::Timestamp::now().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn events_are_json_lines_with_their_span_and_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
        let appender = Appender::default();
        appender.set(Some(open_append(&path).unwrap()));
        let subscriber = tracing_subscriber::registry()
            .with(layer(appender.clone()))
            .with(EnvFilter::new("info"));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("node", run = "r1", id = "build:a#1", stage = "build");
            span.in_scope(|| {
                tracing::info!(wall_ms = 12u64, outcome = "executed", "node finished");
            });
            tracing::debug!("filtered out");
            tracing::warn!(note = "with \"quotes\"\nand a newline", "run finished");
        });
        appender.set(None);
        let got = lines(&path);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0]["earlier"], true, "appended, not truncated");
        assert_eq!(got[1]["message"], "node finished");
        assert_eq!(got[1]["level"], "INFO");
        assert_eq!(got[1]["wall_ms"], 12);
        assert_eq!(got[1]["span"]["name"], "node");
        assert_eq!(got[1]["span"]["id"], "build:a#1");
        assert_eq!(got[1]["span"]["run"], "r1");
        assert!(got[1]["timestamp"].is_string());
        assert_eq!(got[2]["note"], "with \"quotes\"\nand a newline");
    }

    #[test]
    fn a_symbolic_link_or_a_fifo_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "").unwrap();
        let link = dir.path().join(LOG_FILE);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = open_append(&link).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = open_append(&fifo).unwrap_err();
        assert!(!err.to_string().is_empty());
        assert_eq!(std::fs::read(&target).unwrap(), b"");
    }

    #[test]
    fn without_a_file_lines_go_nowhere() {
        let appender = Appender::default();
        let mut line = appender.make_writer();
        line.write_all(b"{}\n").unwrap();
        drop(line);
    }
}
