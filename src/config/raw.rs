//! The pipeline file as serde reads it: every key optional where a default exists, no meaning
//! attached yet. [`super::load`] turns it into the validated [`super::Pipeline`].

use serde::Deserialize;

use crate::vocab::Price;

/// The top level; used for its key list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RawTop {
    pub round: serde_json::Value,
    #[serde(default)]
    pub providers: serde_json::Value,
    #[serde(default)]
    pub models: serde_json::Value,
    #[serde(default)]
    pub stages: serde_json::Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRound {
    pub name: String,
    pub date: Option<String>,
    /// One task directory, relative to the pipeline file.
    pub task: Option<String>,
    /// Several: directories or globs (`../tasks/humaneval/*`), relative to the pipeline file.
    pub tasks: Option<Vec<String>>,
    pub samples: Option<u32>,
    /// `local` (the default: bubblewrap required), `docker`, `unisolated` or `auto`.
    pub sandbox: Option<String>,
    /// With `sandbox = "auto"`: run without isolation when neither Docker nor bubblewrap works.
    pub unisolated_fallback: Option<bool>,
    /// Which sample represents a model in per-implementation tables (default: the last).
    pub representative_sample: Option<u32>,
    pub description: Option<String>,
    /// Spending cap of the round in USD: once reached, no new model call starts.
    pub max_cost_usd: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub kind: String,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    pub max_concurrency: Option<u32>,
    pub timeout_secs: Option<u64>,
    pub max_retries: Option<u32>,
    /// First backoff ceiling between retries, in milliseconds (doubles per retry).
    pub retry_base_ms: Option<u64>,
    /// Longest backoff wait between retries, in milliseconds (also caps an endpoint's hint).
    pub retry_max_ms: Option<u64>,
    /// How long calls wait out an endpoint that refuses connections, in seconds.
    pub outage_secs: Option<u64>,
    /// Fixed headers sent with every request.
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    /// Replay: the recordings directory, relative to the pipeline file.
    pub recordings: Option<String>,
    /// Replay: simulated latency per answer, in milliseconds (for benchmarks and demos).
    pub delay_ms: Option<u64>,
    /// Replay: the simulated latency varies by up to this much either way, per call.
    pub delay_jitter_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub id: String,
    pub provider: String,
    pub model: String,
    pub price: Option<Price>,
    pub temperature: Option<f64>,
    pub seed: Option<u64>,
    pub max_tokens: Option<u32>,
    /// Spending cap of this model's calls in USD.
    pub max_cost_usd: Option<f64>,
    /// Overrides the build stage's harness for this model.
    pub harness: Option<String>,
}

/// Read first to learn a stage's kind; the kind's own struct then checks the rest.
#[derive(Debug)]
pub struct RawStageKind {
    pub kind: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuildStage {
    pub kind: String,
    #[serde(default)]
    pub needs: Vec<String>,
    pub prompt: String,
    pub harness: Option<String>,
    /// `harness = "command"`: the table of [`RawCommandHarness`], checked on its own.
    pub command: Option<serde_json::Value>,
    /// `[stages.build.agent]`: settings of the agent harness.
    pub agent: Option<serde_json::Value>,
}

/// `[stages.<build>.command]`: an agent CLI run in the build's sandbox.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommandHarness {
    /// The command line, a minijinja template.
    pub run: String,
    /// Required: whether the sandbox gives the command network (its own model calls need it).
    pub network: Option<bool>,
    pub timeout_secs: Option<u64>,
    /// NAMES of host variables passed into the sandbox.
    #[serde(default)]
    pub env: Vec<String>,
    /// A workspace-relative file the CLI writes its usage to.
    pub usage: Option<String>,
    /// A directory (relative to the pipeline file) copied to `$PIPE_WORK/tools`, first on PATH.
    pub tools: Option<String>,
    /// `[...command.gateway]`: the table of [`RawGatewayLimits`], checked on its own.
    pub gateway: Option<serde_json::Value>,
    /// Agent CLIs (`crate::sandbox::clis::NAMES`) the command runs: it then runs in their image.
    pub with: Option<Vec<String>>,
}

/// `[stages.<build>.command.gateway]`: what one build may spend through the model gateway.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGatewayLimits {
    pub max_requests: Option<i64>,
    pub max_tokens: Option<i64>,
    pub max_cost_usd: Option<f64>,
    pub max_wall_secs: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgentSettings {
    pub max_steps: Option<i64>,
    pub max_context_tokens: Option<i64>,
    pub wall_secs: Option<i64>,
    pub stagnation_steps: Option<i64>,
    pub passes: Option<i64>,
    pub notes_file: Option<String>,
    pub run_timeout_secs: Option<i64>,
    /// The agent's first user message, a template like `prompt`.
    pub prompt: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateStage {
    pub kind: String,
    #[serde(default)]
    pub needs: Vec<String>,
    pub timeout_secs: Option<u64>,
    pub repeat: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJudgeStage {
    pub kind: String,
    #[serde(default)]
    pub needs: Vec<String>,
    pub prompt: String,
    pub rubric: String,
    /// Bytes of implementation source embedded in a judge prompt before truncation.
    pub max_impl_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAggregateStage {
    pub kind: String,
    #[serde(default)]
    pub needs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPublishStage {
    pub kind: String,
    #[serde(default)]
    pub needs: Vec<String>,
    pub formats: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommandStage {
    pub kind: String,
    #[serde(default)]
    pub needs: Vec<String>,
    pub command: String,
    pub timeout_secs: Option<u64>,
}
