//! The stage kinds: what one node of each kind does with its inputs, and the files it leaves in
//! its node directory.
//!
//! | kind      | reads                                   | writes                                  |
//! |-----------|-----------------------------------------|-----------------------------------------|
//! | build     | task spec, prompt template, the model   | `files/`, `answer.md`, `build.json`     |
//! | build (command harness) | the same, an agent CLI in the sandbox | `files/`, `agent-output.txt`, `build.json` |
//! |           | (agent: visible tests, `[agent]`, sandbox) | (agent: `transcript.jsonl`, no answer) |
//! | gate      | build `files/`, hidden tests            | `gate.json`, `junit-N.xml`, `output.txt`|
//! | command   | build `files/`                          | `command.json`                          |
//! | judge     | build `files/`, gate, rubric, template  | `judgment.json`, `prompt.md`, `answer.md`|
//! | aggregate | every build, gate and judgment          | `aggregate.json`                        |
//! | publish   | the aggregate                           | `report.md`, `dataset.json`, ...        |

pub mod aggregate;
pub mod builds;
pub mod command;
pub mod gate;
pub mod json_schema;
pub mod judge;
pub mod outputs;
pub mod publish;
pub mod spent;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::config::{Pipeline, StageKind};
use crate::plan::{Node, NodeKind, Plan, Subject};
use crate::provider::Providers;
use crate::sandbox::Sandbox;
use crate::store::{RoundStore, StoreError};

/// What every node can use.
#[derive(Clone)]
pub struct Services {
    pub pipeline: Arc<Pipeline>,
    pub providers: Arc<Providers>,
    pub sandbox: Arc<Sandbox>,
    /// Where a node's notes go (retries, backoff, replay mismatches): the run's progress display.
    pub progress: Option<Arc<dyn Notes>>,
    pub quiet: bool,
}

/// What a node may tell the person watching the run, besides its result.
pub trait Notes: Send + Sync {
    fn note(&self, text: &str);
}

impl Services {
    pub fn note(&self, text: &str) {
        if let Some(p) = &self.progress {
            p.note(text);
        }
    }
}

/// One node's run.
pub struct NodeCtx {
    pub plan: Arc<Plan>,
    pub node: Node,
    pub store: Arc<RoundStore>,
    pub services: Arc<Services>,
    pub cancel: CancellationToken,
}

/// Why a node did not finish. A model's bad answer is not among these: it is a result.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The endpoint, the sandbox or the disk failed; running again may succeed.
    #[error("infrastructure: {0}")]
    Infrastructure(String),
    /// The endpoint failed after its retries; the usage the failed attempts reported is kept so
    /// their cost is still counted.
    #[error("infrastructure: {message}")]
    Endpoint {
        message: String,
        usage: crate::vocab::Usage,
    },
    /// The operator's setup is wrong (an unknown model name, a missing key, a broken recording).
    #[error("configuration: {0}")]
    Configuration(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A spending cap is reached: the node's model call did not start. Not a failure: raising
    /// the cap resumes the node.
    #[error("skipped (budget): {0}")]
    Budget(String),
    #[error("interrupted")]
    Cancelled,
    #[error(transparent)]
    Store(StoreError),
}

impl From<crate::sandbox::SandboxError> for NodeError {
    fn from(e: crate::sandbox::SandboxError) -> Self {
        match e {
            crate::sandbox::SandboxError::Cancelled => Self::Cancelled,
            crate::sandbox::SandboxError::Setup(m) => Self::Infrastructure(m),
        }
    }
}

impl From<crate::provider::ProviderError> for NodeError {
    fn from(e: crate::provider::ProviderError) -> Self {
        use crate::provider::ProviderError;
        match e {
            ProviderError::Infrastructure { usage, .. } => Self::Endpoint {
                message: e.to_string(),
                usage,
            },
            ProviderError::Rejected { .. } | ProviderError::Replay(_) => {
                Self::Configuration(e.to_string())
            }
            ProviderError::Budget(why) => Self::Budget(why),
        }
    }
}

pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |e| NodeError::Infrastructure(format!("{}: {e}", path.display()))
}

impl NodeCtx {
    pub fn pipeline(&self) -> &Pipeline {
        &self.services.pipeline
    }

    /// The task this node works on.
    pub fn task(&self) -> &crate::config::task::Task {
        self.pipeline().task(self.node.subject.task())
    }

    pub fn stage_kind(&self) -> &StageKind {
        &self
            .pipeline()
            .stage(&self.node.stage)
            .expect("plan nodes come from pipeline stages")
            .kind
    }

    /// The upstream node of `kind` about the same implementation as this node.
    pub fn upstream_of_kind(&self, kind: NodeKind) -> Option<&Node> {
        let imp = self.node.subject.implementation();
        self.plan
            .deps(&self.node.id)
            .into_iter()
            .find(|d| d.kind == kind && (imp.is_none() || d.subject.implementation() == imp))
    }

    pub fn dir_of(&self, node: &Node) -> PathBuf {
        self.store.node_dir(node)
    }

    /// Reads a JSON output of an upstream node.
    pub fn read_output<T: DeserializeOwned>(
        &self,
        node: &Node,
        file: &str,
    ) -> Result<T, NodeError> {
        let path = self.dir_of(node).join(file);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| NodeError::Internal(format!("{}: {e}", path.display())))
    }

    pub fn notify(&self) -> impl Fn(&str) + Send + Sync + use<> {
        let services = self.services.clone();
        move |m: &str| services.note(m)
    }
}

/// Writes a JSON output into a node directory and returns its relative path. Node outputs are
/// atomic on write and durable once the store commits the node.
pub fn write_output<T: serde::Serialize>(
    dir: &Path,
    name: &str,
    value: &T,
) -> Result<PathBuf, NodeError> {
    let path = dir.join(name);
    let bytes = crate::base::fsutil::json_bytes(value).map_err(io(&path))?;
    crate::base::fsutil::write_replace(&path, &bytes).map_err(io(&path))?;
    Ok(PathBuf::from(name))
}

pub fn write_text(dir: &Path, name: &str, text: &str) -> Result<PathBuf, NodeError> {
    let path = dir.join(name);
    crate::base::fsutil::write_replace(&path, text.as_bytes()).map_err(io(&path))?;
    Ok(PathBuf::from(name))
}

/// Runs a node; returns its output files (relative to its directory).
pub async fn run(ctx: &NodeCtx, dir: &Path) -> Result<Vec<PathBuf>, NodeError> {
    match (ctx.stage_kind(), &ctx.node.subject) {
        (StageKind::Build(s), Subject::Impl { .. }) => builds::run(ctx, s, dir).await,
        (StageKind::Gate(s), Subject::Impl { .. }) => gate::run(ctx, s, dir).await,
        (StageKind::Command(s), Subject::Impl { .. }) => command::run(ctx, s, dir).await,
        (StageKind::Judge(s), Subject::Judgment { .. }) => judge::run(ctx, s, dir).await,
        (StageKind::Aggregate, Subject::Round) => aggregate::run(ctx, dir),
        (StageKind::Publish(s), Subject::Round) => publish::run(ctx, s, dir),
        (kind, subject) => Err(NodeError::Internal(format!(
            "no runner for a {} node about {subject:?}",
            kind.name()
        ))),
    }
}
