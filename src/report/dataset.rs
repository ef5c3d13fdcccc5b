//! The openbenchmark dataset, schema_version 1 (`docs`: the format document
//! `openbenchmark-dataset-v1.md`): serde types with the published key names, and the conversion of
//! a round's [`RoundData`] + [`Aggregate`] into a dataset round and its flat rows.
//!
//! Conventions of the format, followed exactly:
//! - "—" (U+2014) stands for a missing value in text cells (verdicts, notes, rankings, costs).
//! - `hardFail` is true when the implementation PASSES the hard-fail checks (the name is historical).
//! - A judge that produced no usable judgment has null scores, `hardFail` false, verdict and note "—".
//! - Whole numbers are written as JSON integers (`9`, not `9.0`).
//!
//! Criterion keys: the standard code-review rubric has the criteria `spec` and `quality`, which give
//! the published keys (`specPeer`, `qualityAll`, `selfSpec`, `peerMedQual`, `minSpec`, `spec_peer`,
//! ...). Any other rubric gets the same families for each of its criteria `<id>`: `<id>Peer`,
//! `<id>Expert`, `<id>All` (scoreboard), `<id>` (per-judgment scores), `self<Id>`, `peerMed<Id>`,
//! `delta<Id>` (self-bias), `min<Id>`/`max<Id>` of the first criterion (agreement) and `<id>_peer`
//! (flat rows), where `<Id>` is the id in UpperCamelCase (`Qual` for `quality`, as published).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::text::{cost_per_test, str_or_dash, wall};
use crate::aggregate::{Aggregate, ImplRow, RoundData, Tier};
use crate::base::stats::round2;
use crate::config::rubric::Aggregation;

/// The missing-value mark, here for the readers of datasets.
pub use super::text::DASH;
pub const SCHEMA_VERSION: u32 = 1;
pub const LICENSE: &str = "MIT";

/// A number written as a JSON integer when it is whole.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Num(pub f64);

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let x = self.0;
        if x.is_finite() && x.fract() == 0.0 && x.abs() < 9.0e15 {
            s.serialize_i64(x as i64)
        } else {
            s.serialize_f64(x)
        }
    }
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        f64::deserialize(d).map(Num)
    }
}

fn num(x: Option<f64>) -> Option<Num> {
    x.map(Num)
}

/// A cell that is a number, or text ("—" where a value is missing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Cell {
    Num(Num),
    Text(String),
}

impl Cell {
    pub fn dash() -> Self {
        Cell::Text(DASH.to_string())
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Cell::Num(n) => Some(n.0),
            Cell::Text(_) => None,
        }
    }
}

/// Keys that depend on the rubric, in order (flattened into the row that holds them).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Keyed<T>(pub Vec<(String, T)>);

impl<T> Keyed<T> {
    pub fn get(&self, key: &str) -> Option<&T> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl<T: Serialize> Serialize for Keyed<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Keyed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: DeserializeOwned> Visitor<'de> for V<T> {
            type Value = Keyed<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Keyed<T>, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, T>()? {
                    out.push((k, v));
                }
                Ok(Keyed(out))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    pub meta: Meta,
    pub rounds: Vec<DatasetRound>,
    #[serde(default)]
    pub flat: Vec<FlatRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    #[serde(default)]
    pub generated_at: String,
    pub schema_version: u32,
    #[serde(default)]
    pub license: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub rounds: usize,
    #[serde(default)]
    pub rows: usize,
}

/// ROUND. The derived tables may be absent from a file being imported (they are recomputed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetRound {
    pub date: String,
    pub task: String,
    pub samples: Vec<Sample>,
    #[serde(default)]
    pub scoreboard: Vec<ScoreboardRow>,
    #[serde(default)]
    pub judge_ranking: Vec<RankingRow>,
    #[serde(default)]
    pub self_bias: Vec<SelfBiasRow>,
    #[serde(default)]
    pub agreement: Vec<AgreementRow>,
    pub per_impl_detail: Vec<Detail>,
    #[serde(default)]
    pub cost_efficiency: Vec<CostRow>,
    #[serde(default)]
    pub judging_cost: Vec<JudgingCostRow>,
    #[serde(default = "dash")]
    pub cross_model_observations: String,
    #[serde(default = "dash")]
    pub recommendation: String,
    #[serde(default = "dash")]
    pub spec_changes: String,
}

fn dash() -> String {
    DASH.to_string()
}

/// SAMPLE: one build attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    pub model: String,
    #[serde(default)]
    pub round: String,
    #[serde(default)]
    pub task: String,
    pub sample: u32,
    pub wall_sec: Num,
    pub cost_usd: Num,
    #[serde(default)]
    pub tokens_total: u64,
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_read_tokens: u64,
    #[serde(default)]
    pub loc: Option<usize>,
    #[serde(default)]
    pub test_exit_code: Option<i32>,
    #[serde(default = "dash")]
    pub model_slug: String,
    /// The sandbox that ran this sample's gate (`docker`, `local+bwrap`, `unisolated`): a pipe
    /// extension, absent where the source does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_sandbox: Option<String>,
}

/// SCOREBOARD_ROW.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreboardRow {
    #[serde(rename = "impl")]
    pub implementation: String,
    #[serde(rename = "hardFail")]
    pub hard_fail: bool,
    /// `<id>All`, `<id>Expert`, `<id>Peer` per criterion.
    #[serde(flatten)]
    pub scores: Keyed<Option<Num>>,
    pub tests: String,
    pub verdict: String,
}

/// RANKING_ROW.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankingRow {
    pub judge: String,
    pub first: String,
    pub second: String,
    pub third: String,
}

/// SELF_BIAS_ROW: `self<Id>`, `peerMed<Id>`, `delta<Id>` per criterion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfBiasRow {
    #[serde(rename = "impl")]
    pub implementation: String,
    #[serde(flatten)]
    pub values: Keyed<Option<Num>>,
}

/// AGREEMENT_ROW, over the first criterion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgreementRow {
    #[serde(rename = "impl")]
    pub implementation: String,
    /// `min<Id>`, `max<Id>`.
    #[serde(flatten)]
    pub bounds: Keyed<Option<Num>>,
    pub range: Option<Num>,
    pub stdev: Option<Num>,
    pub judges: String,
}

/// DETAIL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Detail {
    #[serde(rename = "impl")]
    pub implementation: String,
    #[serde(default = "dash")]
    pub run_path: String,
    pub scores: Vec<DetailScore>,
    #[serde(default)]
    pub hidden_tests: Vec<HiddenTestRow>,
}

/// One judge's raw judgment of one implementation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetailScore {
    pub judge: String,
    pub tier: Tier,
    #[serde(rename = "hardFail", default)]
    pub hard_fail: bool,
    /// One key per criterion.
    #[serde(flatten)]
    pub scores: Keyed<Option<Num>>,
    #[serde(default = "dash")]
    pub verdict: String,
    #[serde(default = "dash")]
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HiddenTestRow {
    pub name: String,
    pub passed: bool,
}

/// COST_ROW.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CostRow {
    #[serde(rename = "impl")]
    pub implementation: String,
    /// The slug in backticks, as published.
    pub model_slug: String,
    pub loc: Cell,
    pub wall_clock: String,
    pub tokens: u64,
    pub cost_usd: Num,
    pub tests_passed: String,
    pub cost_per_test: String,
}

/// JUDGING_COST_ROW: "—" where not measured, numbers where measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JudgingCostRow {
    pub judge: String,
    pub tier: Tier,
    #[serde(default = "dash")]
    pub harness: String,
    #[serde(default = "dash")]
    pub model: String,
    #[serde(default = "dash")]
    pub wall_clock: String,
    #[serde(default = "Cell::dash")]
    pub tokens: Cell,
    #[serde(default = "Cell::dash")]
    pub cost_usd: Cell,
}

/// FLAT_ROW: one per round x implementation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlatRow {
    pub round: String,
    #[serde(rename = "impl")]
    pub implementation: String,
    pub model_slug: String,
    /// `<id>_peer` per criterion.
    #[serde(flatten)]
    pub peer: Keyed<Option<Num>>,
    pub composite: Option<Num>,
    pub passed_hard_fail: bool,
    pub tests: String,
    pub verdict: String,
    pub samples: u32,
    pub total_cost_usd: Num,
    pub total_tokens: u64,
    pub median_wall_seconds: Option<Num>,
    pub median_loc: Option<Num>,
}

/// Parses a wall time as [`wall`] writes it (`2m05s`) back into milliseconds.
pub fn parse_wall_clock(s: &str) -> Option<u64> {
    let (m, rest) = s.split_once('m')?;
    let sec = rest.strip_suffix('s')?;
    Some((m.parse::<u64>().ok()? * 60 + sec.parse::<u64>().ok()?) * 1000)
}

/// Rounds to `places` decimals (removes float noise from sums).
pub fn round_to(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// The UpperCamelCase form of a criterion id in compound keys (`Spec`, `Qual`, `CodeStyle`).
pub fn key_part(id: &str) -> String {
    match id {
        "spec" => "Spec".into(),
        "quality" => "Qual".into(),
        _ => id
            .split(['-', '_', ' '])
            .filter(|p| !p.is_empty())
            .map(|p| {
                let mut c = p.chars();
                c.next()
                    .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                    .unwrap_or_default()
            })
            .collect(),
    }
}

fn text(x: Option<&str>) -> String {
    str_or_dash(x).to_string()
}

fn tests_cell(r: &ImplRow) -> String {
    format!("{}/{}", r.tests_passed, r.tests_total)
}

fn cost_order(r: &ImplRow) -> f64 {
    if r.tests_passed > 0 {
        r.cost_usd / r.tests_passed as f64
    } else {
        f64::INFINITY
    }
}

/// A dataset round from a round's data and its aggregate.
pub fn round_from(data: &RoundData, agg: &Aggregate) -> DatasetRound {
    DatasetRound {
        date: agg.date.clone(),
        task: agg.task.clone(),
        samples: samples(data, agg),
        scoreboard: scoreboard(agg),
        judge_ranking: judge_ranking(agg),
        self_bias: self_bias(agg),
        agreement: agreement(agg),
        per_impl_detail: per_impl_detail(agg),
        cost_efficiency: cost_efficiency(agg),
        judging_cost: judging_cost(agg),
        cross_model_observations: dash(),
        recommendation: dash(),
        spec_changes: dash(),
    }
}

/// SAMPLE rows: every build, in the round's model order.
fn samples(data: &RoundData, agg: &Aggregate) -> Vec<Sample> {
    let model_pos = |m: &str| {
        data.models
            .iter()
            .position(|x| x.id == m)
            .unwrap_or(usize::MAX)
    };
    let slug_of = |m: &str| {
        data.models
            .iter()
            .find(|x| x.id == m)
            .map_or_else(dash, |x| x.slug.clone())
    };
    let mut builds: Vec<_> = data.builds.iter().collect();
    builds.sort_by(|a, b| {
        model_pos(&a.model)
            .cmp(&model_pos(&b.model))
            .then(a.model.cmp(&b.model))
            .then(a.sample.cmp(&b.sample))
    });
    builds
        .iter()
        .map(|b| Sample {
            model: b.model.clone(),
            round: agg.date.clone(),
            task: agg.task.clone(),
            sample: b.sample,
            wall_sec: Num(b.wall_ms as f64 / 1000.0),
            cost_usd: Num(b.cost_usd),
            tokens_total: b.usage.total(),
            input_tokens: b.usage.input_tokens,
            output_tokens: b.usage.output_tokens,
            cache_read_tokens: b.usage.cache_read_tokens,
            loc: b.loc,
            test_exit_code: b.test_exit_code,
            model_slug: slug_of(&b.model),
            test_sandbox: data
                .gates
                .iter()
                .find(|g| g.model == b.model && g.sample == b.sample && g.task == b.task)
                .and_then(|g| g.sandbox.clone()),
        })
        .collect()
}

/// SCOREBOARD_ROWs, in scoreboard order.
fn scoreboard(agg: &Aggregate) -> Vec<ScoreboardRow> {
    let criteria = &agg.criteria;
    agg.implementations
        .iter()
        .map(|r| ScoreboardRow {
            implementation: r.implementation.clone(),
            hard_fail: r.passed_hard_fail.unwrap_or(false),
            scores: Keyed(
                criteria
                    .iter()
                    .flat_map(|c| {
                        [
                            (format!("{}All", c.id), num(r.all[&c.id])),
                            (format!("{}Expert", c.id), num(r.expert[&c.id])),
                            (format!("{}Peer", c.id), num(r.peer[&c.id])),
                        ]
                    })
                    .collect(),
            ),
            tests: tests_cell(r),
            verdict: text(r.verdict.as_deref()),
        })
        .collect()
}

/// RANKING_ROWs.
fn judge_ranking(agg: &Aggregate) -> Vec<RankingRow> {
    agg.judge_ranking
        .iter()
        .map(|r| RankingRow {
            judge: r.judge.clone(),
            first: r.top[0].clone(),
            second: r.top[1].clone(),
            third: r.top[2].clone(),
        })
        .collect()
}

/// SELF_BIAS_ROWs.
fn self_bias(agg: &Aggregate) -> Vec<SelfBiasRow> {
    let criteria = &agg.criteria;
    agg.self_bias
        .iter()
        .map(|r| SelfBiasRow {
            implementation: r.implementation.clone(),
            values: Keyed(
                criteria
                    .iter()
                    .flat_map(|c| {
                        let [s, p, d] = r.by_criterion.get(&c.id).copied().unwrap_or_default();
                        let k = key_part(&c.id);
                        [
                            (format!("self{k}"), num(s)),
                            (format!("peerMed{k}"), num(p)),
                            (format!("delta{k}"), num(d)),
                        ]
                    })
                    .collect(),
            ),
        })
        .collect()
}

/// AGREEMENT_ROWs, over the first criterion.
fn agreement(agg: &Aggregate) -> Vec<AgreementRow> {
    let criteria = &agg.criteria;
    let first = criteria
        .first()
        .map_or_else(|| "Spec".to_string(), |c| key_part(&c.id));
    agg.agreement
        .iter()
        .map(|r| AgreementRow {
            implementation: r.implementation.clone(),
            bounds: Keyed(vec![
                (format!("min{first}"), num(r.min)),
                (format!("max{first}"), num(r.max)),
            ]),
            range: num(r.range),
            stdev: num(r.stdev),
            judges: if r.judges.is_empty() {
                dash()
            } else {
                r.judges.clone()
            },
        })
        .collect()
}

/// DETAILs: every judgment and hidden test of each implementation.
fn per_impl_detail(agg: &Aggregate) -> Vec<Detail> {
    let criteria = &agg.criteria;
    agg.implementations
        .iter()
        .map(|r| Detail {
            implementation: r.implementation.clone(),
            run_path: text(r.run_path.as_deref()),
            scores: r
                .judgments
                .iter()
                .map(|j| {
                    let dropout = j.dropout.is_some();
                    DetailScore {
                        judge: j.judge.clone(),
                        tier: j.tier,
                        hard_fail: !dropout && j.hard_fail_pass.unwrap_or(false),
                        scores: Keyed(
                            criteria
                                .iter()
                                .map(|c| {
                                    let v = j.scores.get(&c.id).copied().flatten();
                                    (c.id.clone(), num(v.filter(|_| !dropout)))
                                })
                                .collect(),
                        ),
                        verdict: if dropout {
                            dash()
                        } else {
                            text(j.verdict.as_deref())
                        },
                        note: if dropout {
                            dash()
                        } else {
                            text(j.note.as_deref())
                        },
                    }
                })
                .collect(),
            hidden_tests: r
                .hidden_tests
                .iter()
                .map(|t| HiddenTestRow {
                    name: t.name.clone(),
                    passed: t.passed,
                })
                .collect(),
        })
        .collect()
}

/// COST_ROWs, cheapest passed test first.
fn cost_efficiency(agg: &Aggregate) -> Vec<CostRow> {
    let mut by_cost: Vec<&ImplRow> = agg.implementations.iter().collect();
    by_cost.sort_by(|a, b| {
        cost_order(a)
            .total_cmp(&cost_order(b))
            .then(a.implementation.cmp(&b.implementation))
    });
    by_cost
        .iter()
        .map(|r| CostRow {
            implementation: r.implementation.clone(),
            model_slug: format!("`{}`", r.model_slug),
            loc: r.loc.map_or_else(Cell::dash, |l| Cell::Num(Num(l as f64))),
            wall_clock: wall(r.wall_ms),
            tokens: r.tokens,
            cost_usd: Num(round2(r.cost_usd)),
            tests_passed: r.tests_passed.to_string(),
            cost_per_test: cost_per_test(r.cost_usd, r.tests_passed),
        })
        .collect()
}

/// JUDGING_COST_ROWs.
fn judging_cost(agg: &Aggregate) -> Vec<JudgingCostRow> {
    agg.judging_cost
        .iter()
        .map(|r| {
            if r.measured {
                JudgingCostRow {
                    judge: r.judge.clone(),
                    tier: r.tier,
                    harness: "pipe".into(),
                    model: r.model_slug.clone(),
                    wall_clock: wall(r.wall_ms),
                    tokens: Cell::Num(Num(r.tokens as f64)),
                    cost_usd: Cell::Num(Num(round_to(r.cost_usd, 4))),
                }
            } else {
                JudgingCostRow {
                    judge: r.judge.clone(),
                    tier: r.tier,
                    harness: dash(),
                    model: dash(),
                    wall_clock: dash(),
                    tokens: Cell::dash(),
                    cost_usd: Cell::dash(),
                }
            }
        })
        .collect()
}

/// The flat rows of one round, in scoreboard order. Costs are rounded to 6 decimals, wall seconds
/// to milliseconds.
pub fn flat_rows(agg: &Aggregate) -> Vec<FlatRow> {
    agg.implementations
        .iter()
        .map(|r| FlatRow {
            round: agg.date.clone(),
            implementation: r.implementation.clone(),
            model_slug: r.model_slug.clone(),
            peer: Keyed(
                agg.criteria
                    .iter()
                    .map(|c| (format!("{}_peer", c.id), num(r.peer[&c.id])))
                    .collect(),
            ),
            composite: num(r.composite.map(|c| round_to(c, 6))),
            passed_hard_fail: r.passed_hard_fail.unwrap_or(false),
            tests: tests_cell(r),
            verdict: text(r.verdict.as_deref()),
            samples: r.samples,
            total_cost_usd: Num(round_to(r.total_cost_usd, 6)),
            total_tokens: r.total_tokens,
            median_wall_seconds: num(r.median_wall_seconds.map(|w| round_to(w, 3))),
            median_loc: num(r.median_loc),
        })
        .collect()
}

/// The whole dataset, rounds in the order given.
pub fn dataset<'a>(rounds: impl IntoIterator<Item = (&'a RoundData, &'a Aggregate)>) -> Dataset {
    let mut out = Vec::new();
    let mut flat = Vec::new();
    for (data, agg) in rounds {
        out.push(round_from(data, agg));
        flat.extend(flat_rows(agg));
    }
    Dataset {
        meta: Meta {
            generated_at: now_rfc3339(),
            schema_version: SCHEMA_VERSION,
            license: LICENSE.into(),
            source: "pipe".into(),
            rounds: out.len(),
            rows: flat.len(),
        },
        rounds: out,
        flat,
    }
}

/// Now, RFC 3339 in UTC with milliseconds (`2026-05-13T12:13:22.004Z`).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// One entry of the Multivac `rankings` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeanRanking {
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    pub average_score: Num,
    pub score_count: usize,
    pub min_score: Num,
    pub max_score: Num,
    pub rank: usize,
}

/// Under mean aggregation: the Multivac `rankings` (keyed by model id, best first) and `avg_score`
/// (the mean of the average scores, rounded to 6 decimals). `None` for median rounds.
pub fn mean_rankings(agg: &Aggregate) -> Option<(Keyed<MeanRanking>, Option<Num>)> {
    if agg.aggregation != Aggregation::Mean {
        return None;
    }
    let mut rows: Vec<(&ImplRow, &crate::aggregate::MeanRow)> = agg
        .implementations
        .iter()
        .filter_map(|r| Some((r, r.mean.as_ref()?)))
        .collect();
    rows.sort_by_key(|(_, m)| m.rank);
    let rankings = rows
        .into_iter()
        .map(|(r, m)| {
            // Imported Multivac slugs are `provider/name`.
            let (provider, name) = match r.model_slug.split_once('/') {
                Some((p, n)) => (Some(p.to_string()), n.to_string()),
                None => (None, r.model_slug.clone()),
            };
            (
                r.implementation.clone(),
                MeanRanking {
                    display_name: name,
                    provider,
                    average_score: Num(m.average_score),
                    score_count: m.score_count,
                    min_score: Num(m.min_score),
                    max_score: Num(m.max_score),
                    rank: m.rank,
                },
            )
        })
        .collect();
    Some((Keyed(rankings), num(agg.avg_score.map(|a| round_to(a, 6)))))
}

/// The `pipe aggregate --json` object: the dataset round, plus `rankings` and `avg_score` under
/// mean aggregation.
pub fn round_json(data: &RoundData, agg: &Aggregate) -> serde_json::Value {
    let mut v = serde_json::to_value(round_from(data, agg)).expect("a dataset round serialises");
    if let (Some((rankings, avg)), Some(obj)) = (mean_rankings(agg), v.as_object_mut()) {
        obj.insert(
            "rankings".into(),
            serde_json::to_value(rankings).expect("rankings serialise"),
        );
        obj.insert(
            "avg_score".into(),
            serde_json::to_value(avg).expect("a number serialises"),
        );
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_parses_back() {
        assert_eq!(parse_wall_clock(&wall(125_999)), Some(125_000));
        assert_eq!(parse_wall_clock("60m00s"), Some(3_600_000));
        assert_eq!(parse_wall_clock(DASH), None);
        assert_eq!(DASH, "—");
    }

    #[test]
    fn whole_numbers_are_integers() {
        assert_eq!(serde_json::to_string(&Num(9.0)).unwrap(), "9");
        assert_eq!(serde_json::to_string(&Num(8.5)).unwrap(), "8.5");
        assert_eq!(serde_json::to_string(&Num(0.82)).unwrap(), "0.82");
        assert_eq!(
            serde_json::to_string(&Cell::dash()).unwrap(),
            "\"\u{2014}\""
        );
    }

    #[test]
    fn criterion_key_parts() {
        assert_eq!(key_part("spec"), "Spec");
        assert_eq!(key_part("quality"), "Qual");
        assert_eq!(key_part("code-style"), "CodeStyle");
        assert_eq!(key_part("depth"), "Depth");
    }

    #[test]
    fn keyed_rows_keep_their_key_order() {
        let row = AgreementRow {
            implementation: "alpha".into(),
            bounds: Keyed(vec![
                ("minSpec".into(), Some(Num(8.0))),
                ("maxSpec".into(), Some(Num(10.0))),
            ]),
            range: Some(Num(2.0)),
            stdev: Some(Num(0.82)),
            judges: "alpha, beta".into(),
        };
        let s = serde_json::to_string(&row).unwrap();
        assert_eq!(
            s,
            r#"{"impl":"alpha","minSpec":8,"maxSpec":10,"range":2,"stdev":0.82,"judges":"alpha, beta"}"#
        );
        let back: AgreementRow = serde_json::from_str(&s).unwrap();
        assert_eq!(back, row);
    }
}
