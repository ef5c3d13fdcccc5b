//! What a build leaves for everything after it: `build.json` ([`BuildReport`], with the agent
//! harness's account [`AgentReport`]), its outcome, and the build's files under `files/`. Every
//! harness writes them; the gate, the judge and the aggregate read them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::base::fsutil;
use crate::config::Harness;
use crate::config::task::Task;
use crate::stages::builds::answer::Rejection;
use crate::stages::outputs::FILES_DIR;
use crate::stages::{NodeError, io};
use crate::vocab::{Price, Usage};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BuildOutcome {
    /// Files were produced.
    Completed,
    /// The answer was refused: a path outside the workspace, a protected file, or no files.
    Rejected,
    /// Command harness: the agent command exited non-zero or was killed.
    Failed,
    /// Command harness: the agent command ran past its timeout.
    TimedOut,
    /// Agent: the workspace stopped changing for `stagnation_steps` steps.
    Stagnated,
    /// Agent: steps, wall time or context (in the last pass) ran out before a verified `done`.
    Budget,
    /// Agent: the endpoint failed after its retries; nothing was built.
    Fault,
}

impl BuildOutcome {
    /// The build left an implementation to test and judge: completed, or an agent build that
    /// stagnated or ran out of budget (what it built is tested as it is). Rejected and faulted
    /// builds leave none.
    pub fn has_implementation(self) -> bool {
        matches!(self, Self::Completed | Self::Stagnated | Self::Budget)
    }
}

/// `build.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildReport {
    pub harness: Harness,
    pub outcome: BuildOutcome,
    pub model: String,
    pub model_slug: String,
    pub sample: u32,
    pub usage: Usage,
    pub cost_usd: f64,
    pub wall_ms: u64,
    pub latency_ms: u64,
    pub attempts: u32,
    /// Time the model calls spent throttled (after 429s, or queued behind a lowered limit).
    #[serde(default, skip_serializing_if = "crate::vocab::is_zero")]
    pub throttled_ms: u64,
    pub loc: usize,
    pub files: Vec<String>,
    pub rejected: Vec<Rejection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Command harness: the agent command's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Command harness: where `usage` came from (`file`, `stdout`), or `none`: the CLI reported
    /// no tokens, and `usage` (zeros) means unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_source: Option<String>,
    /// Command harness: the cost the CLI itself reported, in USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_cost_usd: Option<f64>,
    /// Command harness through the gateway: the tokens the CLI itself reported, kept beside the
    /// gateway's exact count for comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_usage: Option<Usage>,
    /// Command harness: the model gateway's account (requests, refusals, the limit reached);
    /// none for a command with network, whose calls pipe never sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<crate::gateway::Report>,
    /// Command harness: which sandbox ran the agent (`local+bwrap`, `docker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// The agent harness's account: steps, `done` rejections, passes, tool calls, refusals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentReport>,
}

impl BuildReport {
    /// There are files to test and judge.
    pub fn has_implementation(&self) -> bool {
        self.outcome.has_implementation() && !self.files.is_empty()
    }
}

impl BuildReport {
    /// The build's cost at `price`: tokens times price when the tokens are known and priced,
    /// else what the CLI reported, else zero.
    pub fn cost_at(&self, price: Price) -> f64 {
        let tokens_known = self.usage_source.as_deref() != Some(NO_USAGE);
        let priced = price.cost(self.usage);
        if self.usage_source.as_deref() == Some(GATEWAY_USAGE) {
            return priced;
        }
        match self.reported_cost_usd {
            Some(reported) if !tokens_known || priced == 0.0 => reported,
            _ => priced,
        }
    }
}

/// [`BuildReport::usage_source`] when the CLI reported no tokens.
pub const NO_USAGE: &str = "none";
/// [`BuildReport::usage_source`] when the model gateway counted every call: exact.
pub const GATEWAY_USAGE: &str = "gateway";

/// The agent's part of `build.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AgentReport {
    /// Model calls made, over every pass.
    pub steps: u32,
    /// `done` calls refused because the visible verification did not pass.
    pub done_rejections: u32,
    /// Passes started (fresh contexts).
    pub passes: u32,
    /// How each pass ended: `done`, `context`, `stagnated`, `steps`, `wall`, `fault`; `context,
    /// then probe` or `steps, then probe` when the end-of-pass verification passed.
    pub pass_ends: Vec<String>,
    /// What ran out, for outcome `budget`: `steps`, `wall` or `context`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<String>,
    /// What completed the build: `done`, or `probe` (the end-of-pass verification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_by: Option<String>,
    /// Calls per tool name (unknown names included).
    pub tool_calls: BTreeMap<String, u32>,
    /// Tool calls refused: outside the workspace, a symlink, a protected file, a command not
    /// allowed, over a size cap.
    pub refusals: u32,
    /// The largest context of a step, in tokens (reported input + output, or an estimate).
    pub context_peak: u64,
    pub wall_secs: f64,
    /// The last visible verification (by `done` or the probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verify: Option<Verification>,
}

/// One run of the task's visible verification.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verification {
    pub passed: bool,
    pub tests_passed: usize,
    pub tests_total: usize,
    pub exit_code: Option<i32>,
    /// Why it did not pass, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A write that failed because of the path the build chose, not because of the host: a name the
/// file system refuses, a file where a directory must go or the reverse.
fn the_builds_fault(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::InvalidFilename
            | K::NotADirectory
            | K::IsADirectory
            | K::DirectoryNotEmpty
            | K::AlreadyExists
            | K::InvalidInput
    )
}

/// Writes a build's files into `dir/files/` and returns them as outputs. A file the file system
/// cannot take for its path (see [`the_builds_fault`]) is the build's doing: what was written is
/// removed and the refusal returned, for a rejected build, the same on every run. Any other
/// failure (a full disk, permissions) is the host's: a node failure, retried next run.
pub fn write_files<'a>(
    dir: &Path,
    files: impl IntoIterator<Item = (&'a Path, &'a [u8])>,
) -> Result<Result<Vec<PathBuf>, Rejection>, NodeError> {
    let root = dir.join(FILES_DIR);
    let mut outputs = Vec::new();
    for (rel, bytes) in files {
        let path = root.join(rel);
        match fsutil::write_replace(&path, bytes) {
            Ok(()) => outputs.push(Path::new(FILES_DIR).join(rel)),
            Err(e) if the_builds_fault(&e) => {
                match std::fs::remove_dir_all(&root) {
                    Err(r) if r.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io(&root)(r));
                    }
                    _ => {}
                }
                return Ok(Err(Rejection {
                    path: rel.display().to_string(),
                    reason: format!("cannot be written: {e}"),
                }));
            }
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Ok(Ok(outputs))
}

/// A build's implementation as written into `dir/files/`.
#[derive(Debug, Default)]
pub struct Written {
    /// The files as node outputs (`files/...`).
    pub outputs: Vec<PathBuf>,
    /// Their names, for `build.json`.
    pub files: Vec<String>,
    /// The lines of code of the task's source files among them.
    pub loc: usize,
}

/// Writes the files kept as a build's implementation, counting its lines of code. `Ok(Err(_))`:
/// a file the build named cannot be written (see [`write_files`]) and the build is rejected,
/// with this reason.
pub fn write_implementation(
    dir: &Path,
    task: &Task,
    kept: &[(PathBuf, Vec<u8>)],
) -> Result<Result<Written, (Rejection, String)>, NodeError> {
    let written = write_files(
        dir,
        kept.iter()
            .map(|(rel, bytes)| (rel.as_path(), bytes.as_slice())),
    )?;
    let outputs = match written {
        Ok(outputs) => outputs,
        Err(r) => {
            let reason = format!(
                "the workspace holds a file that cannot be written: {} ({})",
                r.path, r.reason
            );
            return Ok(Err((r, reason)));
        }
    };
    let mut out = Written {
        outputs,
        ..Written::default()
    };
    for (rel, bytes) in kept {
        if task.is_source(rel) {
            out.loc += crate::stages::builds::answer::loc(&String::from_utf8_lossy(bytes));
        }
        out.files.push(rel.display().to_string());
    }
    Ok(Ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(
        dir: &Path,
        files: &[(&str, &str)],
    ) -> Result<Result<Vec<PathBuf>, Rejection>, NodeError> {
        write_files(
            dir,
            files.iter().map(|(p, c)| (Path::new(*p), c.as_bytes())),
        )
    }

    #[test]
    fn a_file_the_file_system_cannot_take_is_a_refusal_and_leaves_no_files() {
        let long = format!("{}.py", "n".repeat(297));
        let deep = format!("{}/x.py", vec!["d".repeat(99); 50].join("/"));
        let cases: [&[(&str, &str)]; 4] = [
            &[("a.py", "1"), ("a.py/b.py", "2")],
            &[("a.py/b.py", "2"), ("a.py", "1")],
            &[("ok.py", "1"), (&long, "2")],
            &[("ok.py", "1"), (&deep, "2")],
        ];
        for files in cases {
            let dir = tempfile::tempdir().unwrap();
            let refused = write(dir.path(), files)
                .expect("not a node failure")
                .expect_err("a refusal");
            assert_eq!(refused.path, files[1].0);
            assert!(
                refused.reason.starts_with("cannot be written: "),
                "{refused:?}"
            );
            assert!(!dir.path().join(FILES_DIR).exists());
        }
        let dir = tempfile::tempdir().unwrap();
        let written = write(dir.path(), &[("a.py", "1"), ("pkg/b.py", "2")])
            .unwrap()
            .unwrap();
        assert_eq!(
            written,
            [PathBuf::from("files/a.py"), PathBuf::from("files/pkg/b.py")]
        );
    }

    #[test]
    fn only_a_failure_of_the_path_is_the_builds_fault() {
        use std::io::{Error, ErrorKind};
        for errno in [
            libc::ENAMETOOLONG,
            libc::ENOTDIR,
            libc::EISDIR,
            libc::EEXIST,
        ] {
            assert!(
                the_builds_fault(&Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        for errno in [
            libc::ENOSPC,
            libc::EACCES,
            libc::EROFS,
            libc::EIO,
            libc::EDQUOT,
        ] {
            assert!(
                !the_builds_fault(&Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        assert!(!the_builds_fault(&Error::from(ErrorKind::Other)));
    }
}
