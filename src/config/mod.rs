//! The validated pipeline: what a round is, after every check has passed. Built by [`load`] from
//! the raw serde structs of [`raw`]; nothing downstream reads the raw form.

pub mod check;
pub mod fields;
pub mod harness;
pub mod load;
pub mod raw;
pub mod rubric;
pub mod size;
pub mod task;
pub mod templates;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use serde::Serialize;

use crate::base::diag::Diag;
use crate::base::names::SafeName;
use crate::config::rubric::Rubric;
use crate::config::task::Task;
use crate::sandbox::SandboxChoice;
use crate::vocab::{Price, Sampling};

pub use load::load;

/// A validated round definition.
#[derive(Debug)]
pub struct Pipeline {
    pub file: PathBuf,
    pub round: Round,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub models: Vec<ModelConfig>,
    /// In dependency order: a stage comes after everything it needs.
    pub stages: Vec<Stage>,
    /// The round's tasks: one, or a suite (`tasks = [...]`) whose nodes expand per task.
    pub tasks: Vec<Task>,
    pub warnings: Vec<Diag>,
    /// Positions of models, stages and tasks by name: a lookup per node costs the same with ten
    /// models or ten thousand.
    index: Index,
}

#[derive(Debug, Default)]
struct Index {
    models: HashMap<String, usize>,
    stages: HashMap<String, usize>,
    tasks: HashMap<String, usize>,
}

/// Name -> position of the first item with that name.
fn positions<'a>(names: impl Iterator<Item = &'a str>) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for (i, name) in names.enumerate() {
        out.entry(name.to_string()).or_insert(i);
    }
    out
}

impl Pipeline {
    pub fn new(
        file: PathBuf,
        round: Round,
        providers: BTreeMap<String, ProviderConfig>,
        models: Vec<ModelConfig>,
        stages: Vec<Stage>,
        tasks: Vec<Task>,
    ) -> Self {
        let index = Index {
            models: positions(models.iter().map(|m| m.id.as_str())),
            stages: positions(stages.iter().map(|s| s.name.as_str())),
            tasks: positions(tasks.iter().map(|t| t.name.as_str())),
        };
        Self {
            file,
            round,
            providers,
            models,
            stages,
            tasks,
            warnings: Vec::new(),
            index,
        }
    }

    /// The task named `name`, or the round's only task when `name` is none.
    pub fn task(&self, name: Option<&SafeName>) -> &Task {
        match name {
            Some(n) => self
                .index
                .tasks
                .get(n.as_str())
                .map(|&i| &self.tasks[i])
                .expect("plan tasks come from the pipeline"),
            None => &self.tasks[0],
        }
    }

    /// True when the round runs several tasks.
    pub fn is_suite(&self) -> bool {
        self.tasks.len() > 1
    }

    pub fn model(&self, id: &str) -> Option<&ModelConfig> {
        self.index.models.get(id).map(|&i| &self.models[i])
    }
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.index.stages.get(name).map(|&i| &self.stages[i])
    }

    /// The agent-CLI images the round's command builds run in (`with = [...]`), one per build
    /// stage that has one and in which some model builds with the command harness.
    pub fn cli_images(&self) -> Vec<CliImage<'_>> {
        self.stages
            .iter()
            .filter_map(|stage| {
                let StageKind::Build(b) = &stage.kind else {
                    return None;
                };
                let command = b.command.as_deref()?;
                let image = command.image.as_deref()?;
                self.models
                    .iter()
                    .any(|m| b.harness_for(m) == Harness::Command)
                    .then_some(CliImage {
                        stage: stage.name.as_str(),
                        with: &command.with,
                        image,
                    })
            })
            .collect()
    }
}

/// An image of agent CLIs a build stage runs its command in ([`Pipeline::cli_images`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CliImage<'a> {
    pub stage: &'a str,
    /// The CLIs, as the stage's `with` names them.
    pub with: &'a [String],
    pub image: &'a str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub name: SafeName,
    /// `YYYY-MM-DD`.
    pub date: SafeName,
    /// `<name>-<date>`: the round's directory under `out/`.
    pub id: SafeName,
    pub samples: u32,
    pub sandbox: SandboxChoice,
    /// `sandbox = "auto"` may run model code without isolation when this machine has neither
    /// Docker nor a working bubblewrap (the shipped offline rounds opt in: they replay the
    /// project's own recordings). Where code runs is not what it computes: no cache key sees it.
    #[serde(skip)]
    pub unisolated_fallback: bool,
    pub representative_sample: Option<u32>,
    pub description: Option<String>,
    /// The round's spending cap in USD. A cap is not what a node computes: no cache key sees
    /// it, so raising it resumes the round where it stopped.
    #[serde(skip)]
    pub max_cost_usd: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    pub max_concurrency: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProviderKind {
    #[serde(rename = "openai")]
    OpenAi {
        base_url: String,
        /// The NAME of the variable holding the key; the key itself is read at call time only.
        api_key_env: Option<String>,
        timeout_secs: u64,
        max_retries: u32,
        /// Backoff before retry `n` is drawn uniformly from `0..=min(retry_max_ms,
        /// retry_base_ms * 2^(n-1))` (full jitter); a `Retry-After` header overrides it.
        retry_base_ms: u64,
        retry_max_ms: u64,
        /// How long calls wait out an endpoint that refuses connections (one probe at a time,
        /// no retry spent) before giving up; 0 treats a refused connection as any failure.
        outage_secs: u64,
        /// Fixed headers sent with every request (attribution headers some routers ask for);
        /// never a secret: those come from the environment.
        headers: std::collections::BTreeMap<String, String>,
    },
    Replay {
        recordings: PathBuf,
        /// Simulated latency: `delay_ms` +- `jitter_ms`, drawn per call site (reproducible).
        delay_ms: u64,
        jitter_ms: u64,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelConfig {
    /// Names the model's node directories and recordings; also its id as a judge.
    pub id: SafeName,
    pub provider: String,
    pub model: String,
    pub price: Price,
    pub sampling: Sampling,
    /// Builds with this harness instead of the build stage's.
    pub harness: Option<Harness>,
    /// This model's spending cap in USD (no cache key sees it).
    #[serde(skip)]
    pub max_cost_usd: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Stage {
    /// Names the stage's directory under `nodes/`.
    pub name: SafeName,
    pub needs: Vec<String>,
    pub kind: StageKind,
}

impl Stage {
    pub fn kind_name(&self) -> &'static str {
        self.kind.name()
    }
}

/// A template file, read and checked.
#[derive(Debug, Clone)]
pub struct Template {
    pub path: PathBuf,
    pub text: String,
}

/// What a stage does, with the settings of its kind. Each kind's settings are its own struct,
/// handed to that kind's runner as they are.
#[derive(Debug, Clone)]
pub enum StageKind {
    Build(BuildStage),
    Gate(GateStage),
    Judge(JudgeStage),
    Aggregate,
    Publish(PublishStage),
    Command(CommandStage),
}

/// A build stage: every model implements the task.
#[derive(Debug, Clone)]
pub struct BuildStage {
    pub prompt: Template,
    pub harness: Harness,
    /// The settings of `harness = "command"`; `None` for the other harnesses.
    pub command: Option<Box<CommandHarness>>,
    /// Settings of the `agent` harness (defaults when the stage has no `[agent]` table).
    pub agent: AgentSettings,
    /// The agent's first user message; the stage's `prompt` when not set.
    pub agent_prompt: Option<Template>,
}

/// A gate: the hidden tests run against each build.
#[derive(Debug, Clone)]
pub struct GateStage {
    pub timeout_secs: Option<u64>,
    pub repeat: Option<u32>,
}

/// A judge stage: every model scores every implementation under a rubric.
#[derive(Debug, Clone)]
pub struct JudgeStage {
    pub prompt: Template,
    pub rubric: Box<Rubric>,
    pub max_impl_bytes: usize,
}

/// A publish stage: the formats it writes.
#[derive(Debug, Clone)]
pub struct PublishStage {
    pub formats: Vec<PublishFormat>,
}

/// A command stage: a shell command per implementation.
#[derive(Debug, Clone)]
pub struct CommandStage {
    pub command: String,
    pub timeout_secs: u64,
}

impl StageKind {
    pub const NAMES: [&'static str; 6] =
        ["build", "gate", "judge", "aggregate", "publish", "command"];

    pub fn name(&self) -> &'static str {
        match self {
            Self::Build(_) => "build",
            Self::Gate(_) => "gate",
            Self::Judge(_) => "judge",
            Self::Aggregate => "aggregate",
            Self::Publish(_) => "publish",
            Self::Command(_) => "command",
        }
    }

    /// Stages that run once per implementation (build sample).
    pub fn per_impl(&self) -> bool {
        matches!(self, Self::Build(_) | Self::Gate(_) | Self::Command(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Harness {
    /// One prompt, one answer, files parsed out of it.
    SingleShot,
    /// An external agent CLI run in the sandbox ([`CommandHarness`]).
    Command,
    /// A tool-calling loop in the sandbox, ended by a verified `done` (`stages/agent/`).
    Agent,
}

impl Harness {
    pub const NAMES: [&'static str; 3] = ["single-shot", "agent", "command"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "single-shot" => Some(Self::SingleShot),
            "agent" => Some(Self::Agent),
            "command" => Some(Self::Command),
            _ => None,
        }
    }
}

/// Budgets and memory of the `agent` harness (`[stages.build.agent]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentSettings {
    /// Model calls in the whole build, over every pass.
    pub max_steps: u32,
    /// Context tokens of one pass (the last call's input plus output); past it the pass ends.
    pub max_context_tokens: u64,
    /// Wall time of the whole build.
    pub wall_secs: u64,
    /// Steps in a row that leave the workspace unchanged before the build ends as stagnated.
    pub stagnation_steps: u32,
    /// Fresh-context passes: a pass that runs out of context starts again on the same workspace.
    pub passes: u32,
    /// The agent's notes, kept across passes and left out of the stagnation fingerprint.
    pub notes_file: String,
    /// Timeout of one `run` or `done` command in the sandbox.
    pub run_timeout_secs: u64,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            max_steps: 40,
            max_context_tokens: 60_000,
            wall_secs: 1800,
            stagnation_steps: 8,
            passes: 1,
            notes_file: "NOTES.md".into(),
            run_timeout_secs: 120,
        }
    }
}

impl StageKind {
    /// The harness a model builds with under this build stage (its own, else the stage's).
    pub fn harness_for(&self, model: &ModelConfig) -> Option<Harness> {
        match self {
            Self::Build(b) => Some(b.harness_for(model)),
            _ => None,
        }
    }
}

impl BuildStage {
    /// The harness a model builds with under this stage (its own, else the stage's).
    pub fn harness_for(&self, model: &ModelConfig) -> Harness {
        model.harness.unwrap_or(self.harness)
    }
}

/// `harness = "command"`: an agent CLI (opencode, aider, ...) run in the build's sandbox with the
/// rendered build prompt in `$PIPE_PROMPT`, its cwd the workspace, which is collected afterwards.
#[derive(Debug, Clone)]
pub struct CommandHarness {
    /// The command line: a minijinja template over [`crate::config::templates::CommandCtx`], run with
    /// `sh -c` (the path is the pipeline file's, for messages).
    pub run: Template,
    /// The sandbox gives the command network (the gate never has any).
    pub network: bool,
    pub timeout_secs: u64,
    /// Names of host variables whose values are passed into the sandbox; the values are read at
    /// run time and never written anywhere.
    pub env: Vec<String>,
    /// A workspace-relative file the CLI writes its usage figures to (not collected).
    pub usage: Option<String>,
    /// A directory copied to `$PIPE_WORK/tools` and put first on `PATH` (wrappers, a CLI).
    pub tools: Option<PathBuf>,
    /// blake3 of every file under `tools`, by relative path, for cache keys.
    pub tools_digests: BTreeMap<String, String>,
    /// The model gateway's limits: set whenever the command has no network (the gateway is its
    /// only way out), none with `network = true` (the CLI calls its endpoint itself, unmetered).
    pub gateway: Option<GatewayLimits>,
    /// The agent CLIs of `with`, as written (checked against `crate::sandbox::clis::NAMES`, no
    /// repeats); empty without `with`.
    pub with: Vec<String>,
    /// The image holding them (`crate::sandbox::clis::image_for`), which the command runs in
    /// instead of the task's; `None` without `with`.
    pub image: Option<String>,
}

/// What one build may spend through its model gateway (`[...command.gateway]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct GatewayLimits {
    /// Requests the build may make.
    pub max_requests: u32,
    /// Input plus output tokens over the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Cost over the build, at the model's price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    /// Time from the build's start after which no request is admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wall_secs: Option<u64>,
}

impl GatewayLimits {
    pub const DEFAULT_MAX_REQUESTS: u32 = 200;
}

impl Default for GatewayLimits {
    fn default() -> Self {
        Self {
            max_requests: Self::DEFAULT_MAX_REQUESTS,
            max_tokens: None,
            max_cost_usd: None,
            max_wall_secs: None,
        }
    }
}

impl CommandHarness {
    /// Default time an agent command may run, in seconds.
    pub const DEFAULT_TIMEOUT_SECS: u64 = 1800;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishFormat {
    /// `report.md`.
    Markdown,
    /// `aggregate.json`: every number of the report, for scripts.
    Json,
    /// `dataset.json`: the round in the openbenchmark dataset schema v1.
    Dataset,
    /// `report.html`: one self-contained page with charts.
    Html,
}

impl PublishFormat {
    pub const NAMES: [&'static str; 4] = ["markdown", "json", "dataset", "html"];
}

impl Pipeline {
    /// The names of every stage upstream of `stage`, each once: a walk over `needs` that visits
    /// only what lies upstream.
    pub fn upstream_of(&self, stage: &Stage) -> Vec<&str> {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut out: Vec<&str> = Vec::new();
        let mut todo: Vec<&str> = stage.needs.iter().map(String::as_str).collect();
        while let Some(n) = todo.pop() {
            if let Some(s) = self.stage(n)
                && seen.insert(s.name.as_str())
            {
                todo.extend(s.needs.iter().map(String::as_str));
                out.push(s.name.as_str());
            }
        }
        out
    }
}
