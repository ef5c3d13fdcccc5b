//! Recordings: exchanges laid out by stage, model and subject, one YAML file each, readable and
//! hand-editable:
//!
//! ```text
//! <recordings>/<stage>/<model>/<subject>.yaml
//! stage: judge
//! model: alpha
//! subject: bravo-1
//! turns:
//!   - request_digest: 3f9a...        # optional: what the recorded request was
//!     usage: { input_tokens: 2150, output_tokens: 410, cache_read_tokens: 0 }
//!     latency_ms: 9000
//!     answer: |
//!       ...
//! ```
//!
//! An agent build's exchange has one turn per step; a turn that calls tools lists them, each with
//! its arguments as a YAML mapping (the wire format's JSON text, parsed, so it reads and edits by
//! hand):
//!
//! ```text
//!   - usage: { input_tokens: 900, output_tokens: 60 }
//!     tool_calls:
//!       - id: call_2
//!         name: write_file
//!         arguments: { path: atomic_write.py, content: "..." }
//! ```
//!
//! The replay provider answers from these files; `pipe run --record DIR` writes them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{CallSite, ChatRequest, ChatResponse, ProviderError, ToolCall};
use crate::base::fsutil;
use crate::vocab::Usage;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exchange {
    pub stage: String,
    pub model: String,
    pub subject: String,
    pub turns: Vec<Turn>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_digest: Option<String>,
    #[serde(default)]
    pub usage: Usage,
    #[serde(default)]
    pub latency_ms: u64,
    /// The answer's text; a turn that only calls tools may have none.
    #[serde(default)]
    pub answer: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<RecordedCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Time the live call spent throttled (replayed as it was, so the report reads the same).
    #[serde(default, skip_serializing_if = "crate::vocab::is_zero")]
    pub throttled_ms: u64,
}

/// A tool call as a recording keeps it: the arguments as data rather than a JSON text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedCall {
    pub id: String,
    pub name: String,
    /// The arguments object; a string holds arguments that were not valid JSON, verbatim.
    #[serde(default)]
    pub arguments: serde_json::Value,
}

impl RecordedCall {
    fn from_call(call: &ToolCall) -> Self {
        let arguments = serde_json::from_str(&call.function.arguments)
            .unwrap_or_else(|_| serde_json::Value::String(call.function.arguments.clone()));
        Self {
            id: call.id.clone(),
            name: call.function.name.clone(),
            arguments,
        }
    }

    fn to_call(&self) -> ToolCall {
        let arguments = match &self.arguments {
            serde_json::Value::String(raw) => raw.clone(),
            serde_json::Value::Null => "{}".to_string(),
            other => other.to_string(),
        };
        ToolCall::new(self.id.clone(), self.name.clone(), arguments)
    }
}

/// `<dir>/<stage>/<model>/<subject>.yaml`. The stage and the model are proven names; the
/// subject (`1`, `bravo-1`, `<task>/1` in a suite) is checked here part by part, so no call site
/// can name a file outside `dir`.
pub fn exchange_path(dir: &Path, site: &CallSite) -> Result<PathBuf, String> {
    let mut path = dir.join(&site.stage).join(&site.model);
    let mut parts = site.subject.split('/').peekable();
    while let Some(part) = parts.next() {
        crate::base::names::check(part).map_err(|e| {
            format!(
                "the recording subject `{}` is not a path of safe names: {e}",
                crate::base::names::shown(&site.subject)
            )
        })?;
        if parts.peek().is_some() {
            path.push(part);
        } else {
            path.push(format!("{part}.yaml"));
        }
    }
    Ok(path)
}

#[derive(Debug, Clone)]
pub struct ReplayProvider {
    pub dir: PathBuf,
    /// A request that differs from the recorded one is an error instead of a warning.
    pub strict: bool,
    /// Simulated latency (ms, jitter ms); (0, 0) answers at once.
    pub delay: (u64, u64),
}

impl ReplayProvider {
    /// How long this call waits before answering: `delay +- jitter`, the same for the same call
    /// site on every run, so a benchmark is reproducible.
    pub fn latency(&self, site: &CallSite) -> std::time::Duration {
        let (delay, jitter) = self.delay;
        if jitter == 0 {
            return std::time::Duration::from_millis(delay);
        }
        let h = blake3::hash(
            format!(
                "{}\0{}\0{}\0{}",
                site.stage, site.model, site.subject, site.turn
            )
            .as_bytes(),
        );
        let r = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
        let offset = r % (2 * jitter + 1);
        std::time::Duration::from_millis(delay - jitter + offset)
    }

    pub fn chat(
        &self,
        site: &CallSite,
        request: &ChatRequest,
        notify: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<ChatResponse, ProviderError> {
        let path = exchange_path(&self.dir, site).map_err(ProviderError::Replay)?;
        let bytes = crate::base::limits::read(&path, crate::base::limits::MAX_RECORDING_BYTES, "a recording")
            .map_err(|e| match e {
                crate::base::limits::ReadError::Io { source, .. } => ProviderError::Replay(format!(
                    "{}: no recording for stage `{}`, model `{}`, subject `{}`: cannot read it: {source}",
                    path.display(),
                    site.stage,
                    site.model,
                    site.subject
                )),
                other => ProviderError::Replay(other.to_string()),
            })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let offset = e.utf8_error().valid_up_to();
            let (line, col) = line_col(&String::from_utf8_lossy(&e.as_bytes()[..offset]));
            ProviderError::Replay(format!(
                "{}:{line}:{col}: the recording is not valid UTF-8 (byte 0x{:02X}): save it as UTF-8",
                path.display(),
                e.as_bytes()[offset]
            ))
        })?;
        // The syntax first: a typed read stops at its first missing field, before the parser
        // reaches the misindented line that is the real problem.
        let parsed = serde_yaml::from_str::<serde::de::IgnoredAny>(&text)
            .and_then(|_| serde_yaml::from_str::<Exchange>(&text));
        let ex = parsed.map_err(|e| {
            let mut message = e.to_string();
            let mut at = String::new();
            if let Some(l) = e.location() {
                at = format!(":{}:{}", l.line(), l.column());
                // The location leads the message already: drop serde_yaml's copy of it.
                message = message.replacen(
                    &format!(" at line {} column {}", l.line(), l.column()),
                    "",
                    1,
                );
            }
            ProviderError::Replay(format!(
                "{}{at}: malformed recording: {message}",
                path.display()
            ))
        })?;
        if ex.turns.is_empty() {
            let at = text
                .lines()
                .position(|l| l.starts_with("turns:"))
                .map(|i| format!(":{}:1", i + 1))
                .unwrap_or_default();
            return Err(ProviderError::Replay(format!(
                "{}{at}: the recording has no turns: add at least one `- answer: ...` under `turns`",
                path.display()
            )));
        }
        let turn = ex.turns.get(site.turn).ok_or_else(|| {
            ProviderError::Replay(format!(
                "{}: the recording has {} turn(s); turn {} was asked for",
                path.display(),
                ex.turns.len(),
                site.turn + 1
            ))
        })?;
        if let Some(recorded) = &turn.request_digest {
            let now = request.digest();
            if recorded != &now {
                let msg = format!(
                    "{}: turn {}: the request differs from the recorded one (recorded {recorded}, now {now}): the prompt, model or sampling changed since recording",
                    path.display(),
                    site.turn + 1
                );
                if self.strict {
                    return Err(ProviderError::Replay(msg));
                }
                notify(&msg);
            }
        }
        Ok(ChatResponse {
            content: turn.answer.clone(),
            usage: turn.usage,
            latency_ms: turn.latency_ms,
            attempts: 1,
            tool_calls: turn.tool_calls.iter().map(RecordedCall::to_call).collect(),
            finish_reason: turn.finish_reason.clone(),
            throttled_ms: turn.throttled_ms,
        })
    }
}

/// 1-based line and column just past `prefix`.
fn line_col(prefix: &str) -> (usize, usize) {
    let line = prefix.matches('\n').count() + 1;
    let col = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The file beside a recording's exchanges that pins what a strict replay needs to redo the live
/// round exactly: `pipe run --record DIR` writes it, `pipe run --replay DIR` reads it.
pub const ROUND_FILE: &str = "round.json";
pub const ROUND_FORMAT: u32 = 1;
/// A round pin larger than this is not pipe's.
const MAX_ROUND_BYTES: u64 = 1 << 20;

/// What a recording pins of the live round it was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundPin {
    pub format: u32,
    /// `<name>-<date>`, the round's directory.
    pub round: String,
    pub name: String,
    /// The date the round used (the pipeline's, or the day it ran when the pipeline has none).
    pub date: String,
    /// The pipeline file as given to `pipe run`, and its content's blake3 digest.
    pub pipeline: String,
    pub pipeline_blake3: String,
    /// Each model's provider in the live round.
    pub models: std::collections::BTreeMap<String, String>,
}

impl RoundPin {
    /// The pin of the round `p`, loaded from `pipeline`.
    pub fn of(p: &crate::config::Pipeline, pipeline: &Path) -> std::io::Result<Self> {
        Ok(Self {
            format: ROUND_FORMAT,
            round: p.round.id.to_string(),
            name: p.round.name.to_string(),
            date: p.round.date.to_string(),
            pipeline: pipeline.display().to_string(),
            pipeline_blake3: fsutil::hash_file(pipeline)?,
            models: p
                .models
                .iter()
                .map(|m| (m.id.to_string(), m.provider.clone()))
                .collect(),
        })
    }

    /// Writes `DIR/round.json` atomically (the directory created).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        fsutil::write_json(&dir.join(ROUND_FILE), self)
    }

    /// Reads `DIR/round.json`: it parses, is of this format, and its name and date are what a
    /// round's are (a safe name, a `YYYY-MM-DD` date) with the round `<name>-<date>`.
    pub fn read(dir: &Path) -> Result<Self, String> {
        let path = dir.join(ROUND_FILE);
        let bytes = crate::base::limits::read(&path, MAX_ROUND_BYTES, "a round pin")
            .map_err(|e| format!("{e}; a recording made with `pipe run --record DIR` has one"))?;
        let pin: Self =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let bad = |what: String| format!("{}: {what}", path.display());
        if pin.format != ROUND_FORMAT {
            return Err(bad(format!(
                "format {} is not {ROUND_FORMAT}: record the round again",
                pin.format
            )));
        }
        let name = crate::base::names::SafeName::new(pin.name.clone())
            .map_err(|e| bad(format!("`name` is not a round name: {e}")))?;
        let date = crate::base::names::date(&pin.date)
            .ok_or_else(|| bad(format!("`date` {:?} is not a YYYY-MM-DD date", pin.date)))?;
        let id = crate::base::names::SafeName::joined(&name, &date)
            .map_err(|e| bad(format!("`{name}-{date}` is not a round id: {e}")))?;
        if id.as_str() != pin.round {
            return Err(bad(format!(
                "`round` {:?} is not `<name>-<date>` ({id})",
                pin.round
            )));
        }
        Ok(pin)
    }
}

/// Writes every exchange of a live run into a recordings directory.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub dir: PathBuf,
}

impl Recorder {
    pub fn record(
        &self,
        site: &CallSite,
        request: &ChatRequest,
        response: &ChatResponse,
    ) -> std::io::Result<()> {
        // The directories under `--record DIR` are proven plain (no planted link) before writing.
        let rel = exchange_path(Path::new(""), site).map_err(std::io::Error::other)?;
        if let Some(parent) = rel.parent() {
            fsutil::inside(&self.dir, parent).map_err(std::io::Error::other)?;
        }
        let path = self.dir.join(rel);
        let mut ex = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_yaml::from_str::<Exchange>(&t).ok())
            .unwrap_or_else(|| Exchange {
                stage: site.stage.to_string(),
                model: site.model.to_string(),
                subject: site.subject.clone(),
                turns: Vec::new(),
            });
        // A node re-run starts its exchange over.
        ex.turns.truncate(site.turn);
        ex.turns.push(Turn {
            request_digest: Some(request.digest()),
            usage: response.usage,
            latency_ms: response.latency_ms,
            answer: response.content.clone(),
            tool_calls: response
                .tool_calls
                .iter()
                .map(RecordedCall::from_call)
                .collect(),
            finish_reason: response.finish_reason.clone(),
            throttled_ms: response.throttled_ms,
        });
        let text = serde_yaml::to_string(&ex).map_err(std::io::Error::other)?;
        fsutil::write_atomic(&path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::names::SafeName;
    use crate::provider::Message;
    use crate::vocab::Sampling;

    fn req(text: &str) -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages: vec![Message::user(text)],
            sampling: Sampling::default(),
            json_schema: None,
            tools: Vec::new(),
            tool_choice: None,
        }
    }

    fn site(turn: usize) -> CallSite {
        CallSite {
            stage: SafeName::new("judge").unwrap(),
            model: SafeName::new("alpha").unwrap(),
            subject: "bravo-1".into(),
            turn,
        }
    }

    #[test]
    fn a_recording_path_never_leaves_its_directory() {
        let dir = Path::new("rec");
        let mut s = site(0);
        s.subject = "add/1".into();
        assert_eq!(
            exchange_path(dir, &s).unwrap(),
            Path::new("rec/judge/alpha/add/1.yaml")
        );
        for bad in [
            "../../x",
            "/etc/passwd",
            "",
            "a//b",
            "add/..",
            "a\0b",
            ".hidden",
        ] {
            s.subject = bad.into();
            let err = exchange_path(dir, &s).expect_err(bad);
            assert!(err.contains("is not a path of safe names"), "{err}");
        }
    }

    #[test]
    fn recording_never_writes_through_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(outside.path().join("alpha")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("judge")).unwrap();
        let rec = Recorder {
            dir: dir.path().into(),
        };
        let resp = ChatResponse {
            content: "x".into(),
            usage: Usage::default(),
            latency_ms: 0,
            attempts: 1,
            tool_calls: Vec::new(),
            finish_reason: None,
            throttled_ms: 0,
        };
        let err = rec.record(&site(0), &req("hello"), &resp).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(
            fsutil::list_files(outside.path()).unwrap(),
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn records_then_replays_and_flags_changed_requests() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder {
            dir: dir.path().into(),
        };
        let resp = ChatResponse {
            content: "line one\nline two\n".into(),
            usage: Usage {
                input_tokens: 10,
                output_tokens: 5,
                cache_read_tokens: 0,
            },
            latency_ms: 7,
            attempts: 1,
            tool_calls: Vec::new(),
            finish_reason: None,
            throttled_ms: 1200,
        };
        rec.record(&site(0), &req("hello"), &resp).unwrap();
        let text = std::fs::read_to_string(dir.path().join("judge/alpha/bravo-1.yaml")).unwrap();
        assert!(text.contains("answer: |"), "readable block scalar: {text}");
        assert!(text.contains("throttled_ms: 1200"), "{text}");

        let notes = std::sync::Mutex::new(Vec::new());
        let notify = |m: &str| notes.lock().unwrap().push(m.to_string());
        let replay = ReplayProvider {
            delay: (0, 0),
            dir: dir.path().into(),
            strict: false,
        };
        let got = replay.chat(&site(0), &req("hello"), &notify).unwrap();
        assert_eq!(got.content, resp.content);
        assert!(notes.lock().unwrap().is_empty());
        replay.chat(&site(0), &req("changed"), &notify).unwrap();
        assert_eq!(notes.lock().unwrap().len(), 1);
        let strict = ReplayProvider {
            delay: (0, 0),
            dir: dir.path().into(),
            strict: true,
        };
        assert!(strict.chat(&site(0), &req("changed"), &notify).is_err());
        assert!(replay.chat(&site(1), &req("hello"), &notify).is_err());
    }

    #[test]
    fn tool_calls_record_as_data_and_replay_as_wire_calls() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder {
            dir: dir.path().into(),
        };
        let calls = vec![
            ToolCall::new("c1", "write_file", r#"{"path":"a.py","content":"x = 1\n"}"#),
            ToolCall::new("c2", "run", "not json"),
        ];
        let resp = ChatResponse {
            content: String::new(),
            usage: Usage::default(),
            latency_ms: 1,
            attempts: 1,
            tool_calls: calls.clone(),
            finish_reason: Some("tool_calls".into()),
            throttled_ms: 0,
        };
        rec.record(&site(0), &req("go"), &resp).unwrap();
        let text = std::fs::read_to_string(dir.path().join("judge/alpha/bravo-1.yaml")).unwrap();
        assert!(
            text.contains("path: a.py"),
            "arguments kept as data: {text}"
        );
        let replay = ReplayProvider {
            dir: dir.path().into(),
            strict: true,
            delay: (0, 0),
        };
        let got = replay.chat(&site(0), &req("go"), &|_: &str| {}).unwrap();
        assert_eq!(got.tool_calls[1], calls[1]);
        assert_eq!(got.tool_calls[0].function.name, "write_file");
        let args: serde_json::Value =
            serde_json::from_str(&got.tool_calls[0].function.arguments).unwrap();
        assert_eq!(args["content"], "x = 1\n");
        assert_eq!(got.finish_reason.as_deref(), Some("tool_calls"));
    }

    #[test]
    fn the_digest_ignores_tool_output_but_not_tool_calls() {
        let with = |output: &str, args: &str| ChatRequest {
            messages: vec![
                Message::user("go"),
                Message::assistant_calls("", vec![ToolCall::new("c1", "run", args)]),
                Message::tool("c1", output),
            ],
            ..req("go")
        };
        assert_eq!(
            with("1 passed in 0.01s", "{}").digest(),
            with("1 passed in 0.02s", "{}").digest()
        );
        assert_ne!(with("x", "{}").digest(), with("x", r#"{"a":1}"#).digest());
        assert_eq!(
            with("x", r#"{"a": 1}"#).digest(),
            with("x", r#"{"a":1}"#).digest(),
            "one spelling of the arguments"
        );
        // A request without tool messages digests as it always did.
        assert_eq!(req("go").digest(), {
            let bytes = serde_json::to_vec(&req("go")).unwrap();
            blake3::hash(&bytes).to_hex()[..16].to_string()
        });
    }
}
