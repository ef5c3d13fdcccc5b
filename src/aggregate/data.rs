//! The inputs of the numbers: everything a round's aggregate is computed from, in one
//! serialisable struct. The aggregate node builds it from node outputs (`round-data.json`);
//! `pipe import` builds it from published data; [`super::compute`] turns it into an
//! [`super::Aggregate`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::base::junit::TestOutcome;
use crate::config::rubric::Aggregation;
use crate::vocab::Usage;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CriterionInfo {
    pub id: String,
    pub label: String,
    #[serde(default)]
    pub min: f64,
    pub max: f64,
    pub weight: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RubricInfo {
    pub name: String,
    pub aggregation: Aggregation,
    pub criteria: Vec<CriterionInfo>,
    /// Best first.
    pub verdicts: Vec<String>,
}

impl From<&crate::config::rubric::Rubric> for RubricInfo {
    fn from(r: &crate::config::rubric::Rubric) -> Self {
        Self {
            name: r.name.clone(),
            aggregation: r.aggregation,
            criteria: r
                .criteria
                .iter()
                .map(|c| CriterionInfo {
                    id: c.id.clone(),
                    label: c.label.clone(),
                    min: c.min,
                    max: c.max,
                    weight: c.weight,
                })
                .collect(),
            verdicts: r.verdicts.clone(),
        }
    }
}

impl RubricInfo {
    pub fn composite_max(&self) -> f64 {
        self.criteria.iter().map(|c| c.weight * c.max).sum()
    }

    /// The lowest composite: the weighted sum of every criterion's minimum.
    pub fn composite_min(&self) -> f64 {
        self.criteria.iter().map(|c| c.weight * c.min).sum()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelInfo {
    pub id: String,
    pub slug: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BuildRecord {
    pub model: String,
    pub sample: u32,
    /// The build produced an implementation.
    pub ok: bool,
    pub reason: Option<String>,
    pub usage: Usage,
    pub cost_usd: f64,
    pub wall_ms: u64,
    /// Time the build's model calls spent throttled.
    #[serde(default, skip_serializing_if = "crate::vocab::is_zero")]
    pub throttled_ms: u64,
    pub loc: Option<usize>,
    #[serde(default)]
    pub run_path: Option<String>,
    #[serde(default)]
    pub test_exit_code: Option<i32>,
    /// The task, in a round of several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// How an agent build went (none for single-shot builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentNote>,
    /// A command build with `network = true`: its CLI called the endpoint itself, so pipe neither
    /// metered nor recorded it. Where its usage came from (`file`, `stdout`, `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmetered: Option<String>,
}

/// An agent build in a line: its outcome, steps, rejected `done` calls and passes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentNote {
    pub outcome: String,
    pub steps: u32,
    pub done_rejections: u32,
    pub passes: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TestRecord {
    pub name: String,
    pub outcome: TestOutcome,
    #[serde(default)]
    pub flaky: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GateRecord {
    pub model: String,
    pub sample: u32,
    pub passed: bool,
    pub tests_passed: usize,
    pub tests_total: usize,
    pub tests: Vec<TestRecord>,
    pub reason: Option<String>,
    /// The task, in a round of several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The sandbox that ran the hidden tests (`docker`, `local+bwrap`, `unisolated`); none when
    /// no test ran (the build produced nothing) or the round was imported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

impl GateRecord {
    /// How reports name the gate: `model#sample`, `task/model#sample` in a suite.
    pub fn name(&self) -> String {
        match &self.task {
            Some(t) => format!("{t}/{}#{}", self.model, self.sample),
            None => format!("{}#{}", self.model, self.sample),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    #[serde(rename = "self")]
    SelfJudge,
    Peer,
    Expert,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JudgmentRecord {
    pub judge: String,
    /// The implementation judged (its model) and the sample.
    pub model: String,
    pub sample: u32,
    pub tier: Tier,
    /// Per criterion; a dropout has nulls.
    pub scores: BTreeMap<String, Option<f64>>,
    /// A score on the rubric's composite scale given directly (Multivac's `weighted_score`);
    /// when absent the weighted sum of `scores` is used.
    #[serde(default)]
    pub weighted: Option<f64>,
    pub hard_fail_pass: Option<bool>,
    pub verdict: Option<String>,
    pub note: Option<String>,
    /// Why there is no usable judgment.
    pub dropout: Option<String>,
    /// The dropout is the infrastructure's fault (the judge's node failed), not the model's.
    #[serde(default)]
    pub infrastructure: bool,
    #[serde(default)]
    pub usage: Usage,
    #[serde(default)]
    pub cost_usd: f64,
    #[serde(default)]
    pub wall_ms: u64,
    /// Time the judge's calls spent throttled.
    #[serde(default, skip_serializing_if = "crate::vocab::is_zero")]
    pub throttled_ms: u64,
    /// Cost and time were measured (imports of rounds that did not measure them leave this false).
    #[serde(default)]
    pub measured: bool,
    /// The task, in a round of several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

impl JudgmentRecord {
    /// The judgment's score on the composite scale, if it has one.
    pub fn composite(&self, criteria: &[CriterionInfo]) -> Option<f64> {
        if self.weighted.is_some() {
            return self.weighted;
        }
        if criteria.is_empty() {
            return None;
        }
        criteria
            .iter()
            .map(|c| {
                self.scores
                    .get(&c.id)
                    .copied()
                    .flatten()
                    .map(|v| v * c.weight)
            })
            .sum()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Problem {
    pub node: String,
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct BootstrapConfig {
    pub draws: usize,
    pub seed: u64,
    /// Coverage of the interval (0.95).
    pub level: f64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            draws: 1000,
            seed: 20_260_508,
            level: 0.95,
        }
    }
}

/// The file a round's [`RoundData`] is kept in: the aggregate node's output, an import's.
pub const ROUND_DATA_JSON: &str = "round-data.json";

/// `round-data.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RoundData {
    /// `<name>-<date>`.
    pub round: String,
    pub name: String,
    pub date: String,
    pub task: String,
    /// Every model answer was replayed from recordings.
    pub replayed: bool,
    /// Where the data came from, when imported.
    #[serde(default)]
    pub source: Option<String>,
    pub rubric: RubricInfo,
    pub models: Vec<ModelInfo>,
    pub samples: u32,
    /// Which sample represents a model (default: the last).
    pub representative_sample: Option<u32>,
    pub builds: Vec<BuildRecord>,
    pub gates: Vec<GateRecord>,
    pub judgments: Vec<JudgmentRecord>,
    pub problems: Vec<Problem>,
    #[serde(default)]
    pub bootstrap: BootstrapConfig,
}
