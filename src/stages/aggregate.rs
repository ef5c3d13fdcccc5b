//! Aggregate: the round's numbers from whatever upstream produced. A judgment that is missing
//! (its node failed or was skipped) or invalid is a dropout; a build that was rejected shows as a
//! failed build. The formulas are those of published peer-judged rounds (see README.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::build::{BuildOutcome, BuildReport};
use super::gate::GateReport;
use super::judge::{Judgment, Tier};
use super::{NodeCtx, NodeError, write_output};
use crate::config::{ProviderKind, StageKind};
use crate::junit::TestOutcome;
use crate::plan::Subject;
use crate::rubric::Rubric;
use crate::stats::{median, mode_worst, round2, stdev};
use crate::store::Status;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CriterionInfo {
    pub id: String,
    pub label: String,
    pub max: f64,
    pub weight: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JudgmentRow {
    pub judge: String,
    pub tier: Tier,
    pub scores: BTreeMap<String, Option<f64>>,
    pub hard_fail_pass: Option<bool>,
    pub verdict: Option<String>,
    pub note: Option<String>,
    /// Why there is no usable judgment.
    pub dropout: Option<String>,
    /// The dropout is the infrastructure's fault (the judge's node failed), not the model's.
    pub infrastructure: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HiddenTest {
    pub name: String,
    pub passed: bool,
    pub outcome: TestOutcome,
    pub flaky: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImplRow {
    #[serde(rename = "impl")]
    pub implementation: String,
    pub model_slug: String,
    pub label: String,
    /// The representative sample.
    pub sample: u32,
    pub samples: u32,
    pub build_ok: bool,
    pub build_reason: Option<String>,
    pub gate_passed: bool,
    pub gate_reason: Option<String>,
    pub tests_passed: usize,
    pub tests_total: usize,
    pub peer: BTreeMap<String, Option<f64>>,
    pub composite: Option<f64>,
    pub verdict: Option<String>,
    pub passed_hard_fail: Option<bool>,
    pub judgments: Vec<JudgmentRow>,
    pub hidden_tests: Vec<HiddenTest>,
    pub loc: Option<usize>,
    pub wall_ms: u64,
    pub tokens: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cost_usd: f64,
    pub total_cost_usd: f64,
    pub total_tokens: u64,
    pub median_wall_seconds: Option<f64>,
    pub median_loc: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SelfBiasRow {
    #[serde(rename = "impl")]
    pub implementation: String,
    /// Per criterion: (self, peer median, delta); nulls where the self judgment is missing.
    pub by_criterion: BTreeMap<String, (Option<f64>, Option<f64>, Option<f64>)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgreementRow {
    #[serde(rename = "impl")]
    pub implementation: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub range: Option<f64>,
    pub stdev: Option<f64>,
    pub judges: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RankingRow {
    pub judge: String,
    pub top: [String; 3],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JudgingCostRow {
    pub judge: String,
    pub model_slug: String,
    pub judgments: usize,
    pub dropouts: usize,
    pub tokens: u64,
    pub wall_ms: u64,
    pub cost_usd: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Problem {
    pub node: String,
    pub kind: String,
    pub message: String,
}

/// `aggregate.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Aggregate {
    pub round: String,
    pub name: String,
    pub date: String,
    pub task: String,
    pub replayed: bool,
    pub rubric: Option<String>,
    pub criteria: Vec<CriterionInfo>,
    pub composite_max: f64,
    pub verdicts: Vec<String>,
    pub implementations: Vec<ImplRow>,
    pub self_bias: Vec<SelfBiasRow>,
    pub agreement: Vec<AgreementRow>,
    pub judge_ranking: Vec<RankingRow>,
    pub judging_cost: Vec<JudgingCostRow>,
    pub problems: Vec<Problem>,
}

/// `10` for whole numbers, `9.5` otherwise.
pub fn num(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round() as i64)
    } else {
        format!("{}", round2(x))
    }
}

pub fn run(ctx: &NodeCtx, dir: &Path) -> Result<Vec<PathBuf>, NodeError> {
    let p = ctx.pipeline();
    let deps = ctx.plan.deps(&ctx.node.id);
    let judge_stage = deps
        .iter()
        .find(|d| d.kind == "judge")
        .map(|d| d.stage.clone());
    let rubric: Option<&Rubric> = judge_stage.as_ref().and_then(|s| match &p.stage(s)?.kind {
        StageKind::Judge { rubric, .. } => Some(&**rubric),
        _ => None,
    });
    let mut problems = Vec::new();
    // Read whatever each upstream node left; a node that did not finish contributes nothing.
    let mut builds: BTreeMap<(String, u32), BuildReport> = BTreeMap::new();
    let mut gates: BTreeMap<(String, u32), GateReport> = BTreeMap::new();
    let mut judgments: BTreeMap<(String, u32), Vec<(String, Result<Judgment, String>)>> =
        BTreeMap::new();
    for d in &deps {
        let record = ctx.store.record(d);
        let done = record.as_ref().is_some_and(|r| r.status == Status::Done);
        if !done {
            let message = record
                .and_then(|r| r.failure.map(|f| f.message))
                .unwrap_or_else(|| "did not run (an upstream node failed)".into());
            problems.push(Problem {
                node: d.id.clone(),
                kind: "infrastructure".into(),
                message: message.clone(),
            });
            if let Subject::Judgment {
                judge,
                model,
                sample,
            } = &d.subject
                && Some(&d.stage) == judge_stage.as_ref()
            {
                judgments
                    .entry((model.clone(), *sample))
                    .or_default()
                    .push((judge.clone(), Err(message)));
            }
            continue;
        }
        match (&d.subject, d.kind) {
            (Subject::Impl { model, sample }, "build") => {
                builds.insert((model.clone(), *sample), ctx.read_output(d, "build.json")?);
            }
            (Subject::Impl { model, sample }, "gate") => {
                gates.insert((model.clone(), *sample), ctx.read_output(d, "gate.json")?);
            }
            (
                Subject::Judgment {
                    judge,
                    model,
                    sample,
                },
                "judge",
            ) if Some(&d.stage) == judge_stage.as_ref() => {
                let j: Judgment = ctx.read_output(d, "judgment.json")?;
                judgments
                    .entry((model.clone(), *sample))
                    .or_default()
                    .push((judge.clone(), Ok(j)));
            }
            _ => {}
        }
    }
    let criteria: Vec<CriterionInfo> = rubric
        .map(|r| {
            r.criteria
                .iter()
                .map(|c| CriterionInfo {
                    id: c.id.clone(),
                    label: c.label.clone(),
                    max: c.max,
                    weight: c.weight,
                })
                .collect()
        })
        .unwrap_or_default();
    let verdicts = rubric.map(|r| r.verdicts.clone()).unwrap_or_default();
    let mut implementations = Vec::new();
    for m in &p.models {
        let rep = p.round.representative_sample.unwrap_or(p.round.samples);
        let samples: Vec<&BuildReport> = (1..=p.round.samples)
            .filter_map(|s| builds.get(&(m.id.clone(), s)))
            .collect();
        let build = builds.get(&(m.id.clone(), rep));
        let gate = gates.get(&(m.id.clone(), rep));
        let build_ok = build.is_some_and(|b| b.outcome == BuildOutcome::Completed);
        let build_reason = match build {
            None => Some("the build did not finish".to_string()),
            Some(b) => b.reason.clone(),
        };
        let mut rows: Vec<JudgmentRow> = judgments
            .get(&(m.id.clone(), rep))
            .map(|js| {
                js.iter()
                    .filter(|(_, j)| !matches!(j, Ok(j) if j.not_applicable))
                    .map(|(judge, j)| match j {
                        Ok(j) => JudgmentRow {
                            judge: judge.clone(),
                            tier: j.tier,
                            scores: j.scores.clone(),
                            hard_fail_pass: j.hard_fail_pass,
                            verdict: j.verdict.clone(),
                            note: j.note.clone(),
                            dropout: j.dropout.clone(),
                            infrastructure: false,
                        },
                        Err(msg) => JudgmentRow {
                            judge: judge.clone(),
                            tier: if judge == &m.id {
                                Tier::SelfJudge
                            } else {
                                Tier::Peer
                            },
                            scores: criteria.iter().map(|c| (c.id.clone(), None)).collect(),
                            hard_fail_pass: None,
                            verdict: None,
                            note: None,
                            dropout: Some(msg.clone()),
                            infrastructure: true,
                        },
                    })
                    .collect()
            })
            .unwrap_or_default();
        rows.sort_by(|a, b| a.judge.cmp(&b.judge));
        let peer_values = |c: &str| -> Vec<f64> {
            rows.iter()
                .filter(|r| r.tier == Tier::Peer)
                .filter_map(|r| r.scores.get(c).copied().flatten())
                .collect()
        };
        let peer: BTreeMap<String, Option<f64>> = criteria
            .iter()
            .map(|c| (c.id.clone(), median(&peer_values(&c.id))))
            .collect();
        let composite = (!criteria.is_empty() && build_ok)
            .then(|| {
                criteria
                    .iter()
                    .map(|c| peer[&c.id].map(|v| v * c.weight))
                    .sum::<Option<f64>>()
            })
            .flatten();
        let given: Vec<&str> = rows.iter().filter_map(|r| r.verdict.as_deref()).collect();
        let verdict = mode_worst(&given, &verdicts).map(str::to_string);
        let answered: Vec<bool> = rows
            .iter()
            .filter(|r| r.tier == Tier::Peer)
            .filter_map(|r| r.hard_fail_pass)
            .collect();
        let passed_hard_fail = (!answered.is_empty())
            .then(|| answered.iter().filter(|x| **x).count() * 2 > answered.len());
        let hidden_tests = gate
            .map(|g| {
                g.tests
                    .iter()
                    .map(|t| HiddenTest {
                        name: t.name.clone(),
                        passed: t.outcome == TestOutcome::Passed,
                        outcome: t.outcome,
                        flaky: t.flaky,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let walls: Vec<f64> = samples.iter().map(|b| b.wall_ms as f64 / 1000.0).collect();
        let locs: Vec<f64> = samples
            .iter()
            .filter(|b| b.outcome == BuildOutcome::Completed)
            .map(|b| b.loc as f64)
            .collect();
        implementations.push(ImplRow {
            implementation: m.id.clone(),
            model_slug: m.model.clone(),
            label: super::judge::label(&p.round.id, &m.id, rep),
            sample: rep,
            samples: samples.len() as u32,
            build_ok,
            build_reason,
            gate_passed: gate.is_some_and(|g| g.passed),
            gate_reason: gate
                .and_then(|g| g.reason.clone())
                .or_else(|| gate.is_none().then(|| "the gate did not run".to_string())),
            tests_passed: gate.map_or(0, |g| g.tests_passed),
            tests_total: gate.map_or(0, |g| g.tests_total),
            peer,
            composite,
            verdict,
            passed_hard_fail,
            judgments: rows,
            hidden_tests,
            loc: build
                .filter(|b| b.outcome == BuildOutcome::Completed)
                .map(|b| b.loc),
            wall_ms: build.map_or(0, |b| b.wall_ms),
            tokens: build.map_or(0, |b| b.usage.total()),
            input_tokens: build.map_or(0, |b| b.usage.input_tokens),
            output_tokens: build.map_or(0, |b| b.usage.output_tokens),
            cache_read_tokens: build.map_or(0, |b| b.usage.cache_read_tokens),
            cost_usd: build.map_or(0.0, |b| m.price.cost(b.usage)),
            total_cost_usd: samples.iter().map(|b| m.price.cost(b.usage)).sum(),
            total_tokens: samples.iter().map(|b| b.usage.total()).sum(),
            median_wall_seconds: median(&walls),
            median_loc: median(&locs),
        });
    }
    // Scoreboard order: composite descending, then name.
    implementations.sort_by(|a, b| {
        b.composite
            .unwrap_or(f64::NEG_INFINITY)
            .total_cmp(&a.composite.unwrap_or(f64::NEG_INFINITY))
            .then(a.implementation.cmp(&b.implementation))
    });
    let first = criteria.first().map(|c| c.id.clone());
    let mut by_name: Vec<&ImplRow> = implementations.iter().filter(|r| r.build_ok).collect();
    by_name.sort_by(|a, b| a.implementation.cmp(&b.implementation));
    let self_bias = by_name
        .iter()
        .map(|r| {
            let own = r.judgments.iter().find(|j| j.tier == Tier::SelfJudge);
            let by_criterion = criteria
                .iter()
                .map(|c| {
                    let s = own.and_then(|j| j.scores.get(&c.id).copied().flatten());
                    let pm = r.peer[&c.id];
                    (c.id.clone(), (s, pm, s.zip(pm).map(|(a, b)| a - b)))
                })
                .collect();
            SelfBiasRow {
                implementation: r.implementation.clone(),
                by_criterion,
            }
        })
        .collect();
    let agreement = by_name
        .iter()
        .map(|r| {
            let with: Vec<(&str, f64)> = first
                .as_ref()
                .map(|c| {
                    r.judgments
                        .iter()
                        .filter_map(|j| {
                            j.scores
                                .get(c)
                                .copied()
                                .flatten()
                                .map(|v| (j.judge.as_str(), v))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let vals: Vec<f64> = with.iter().map(|x| x.1).collect();
            let min = vals.iter().copied().reduce(f64::min);
            let max = vals.iter().copied().reduce(f64::max);
            let mut judges: Vec<&str> = with.iter().map(|x| x.0).collect();
            judges.sort_unstable();
            AgreementRow {
                implementation: r.implementation.clone(),
                min,
                max,
                range: min.zip(max).map(|(a, b)| b - a),
                stdev: stdev(&vals).map(round2),
                judges: judges.join(", "),
            }
        })
        .collect();
    let mut judge_ranking = Vec::new();
    let mut judging_cost = Vec::new();
    let mut judge_ids: Vec<&str> = p.models.iter().map(|m| m.id.as_str()).collect();
    judge_ids.sort_unstable();
    for judge in judge_ids {
        let mut scored: Vec<(String, f64)> = implementations
            .iter()
            .filter_map(|r| {
                let v = r
                    .judgments
                    .iter()
                    .find(|j| j.judge == judge)?
                    .scores
                    .get(first.as_ref()?)
                    .copied()
                    .flatten()?;
                Some((r.implementation.clone(), v))
            })
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let place = |i: usize| {
            scored.get(i).map_or_else(
                || "\u{2014}".to_string(),
                |(n, v)| format!("{n} ({})", num(*v)),
            )
        };
        judge_ranking.push(RankingRow {
            judge: judge.to_string(),
            top: [place(0), place(1), place(2)],
        });
        let mine: Vec<&Judgment> = judgments
            .values()
            .flatten()
            .filter_map(|(j, r)| (j == judge).then_some(r.as_ref().ok()).flatten())
            .filter(|j| !j.not_applicable)
            .collect();
        let m = p.model(judge).expect("judge is a model");
        judging_cost.push(JudgingCostRow {
            judge: judge.to_string(),
            model_slug: m.model.clone(),
            judgments: mine.len(),
            dropouts: mine.iter().filter(|j| j.dropout.is_some()).count(),
            tokens: mine.iter().map(|j| j.usage.total()).sum(),
            wall_ms: mine.iter().map(|j| j.wall_ms).sum(),
            cost_usd: mine.iter().map(|j| m.price.cost(j.usage)).sum(),
        });
    }
    let replayed = p
        .providers
        .values()
        .all(|pr| matches!(pr.kind, ProviderKind::Replay { .. }));
    let agg = Aggregate {
        round: p.round.id.clone(),
        name: p.round.name.clone(),
        date: p.round.date.clone(),
        task: p.task.name.clone(),
        replayed,
        rubric: rubric.map(|r| r.name.clone()),
        criteria,
        composite_max: rubric.map_or(0.0, Rubric::composite_max),
        verdicts,
        implementations,
        self_bias,
        agreement,
        judge_ranking,
        judging_cost,
        problems,
    };
    Ok(vec![write_output(dir, "aggregate.json", &agg)?])
}
