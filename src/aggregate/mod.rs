//! The round's numbers. [`compute`] is a pure function of [`RoundData`]: the formulas of published
//! peer-judged rounds (median peer scores with self excluded, verdict mode with ties to the worse,
//! agreement, self-bias, judge ranking, cost efficiency), the Multivac mean aggregation, and what
//! published rounds lack (bootstrap intervals, Krippendorff's alpha, leniency, self-preference).

mod composite;
pub mod data;
pub mod suite;
pub mod uncertainty;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// The file a round's [`Aggregate`] is kept in: the aggregate node's output, a published copy.
pub const AGGREGATE_JSON: &str = "aggregate.json";

pub use data::{
    AgentNote, BootstrapConfig, BuildRecord, CriterionInfo, GateRecord, JudgmentRecord, ModelInfo,
    Problem, RoundData, RubricInfo, TestRecord, Tier,
};

use composite::{Scored, composite_of, composite_of_scored, is_peer};

use crate::base::junit::TestOutcome;
use crate::base::stats::{mean, median, mode_worst, round2, stdev};
use crate::config::rubric::Aggregation;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JudgmentRow {
    pub judge: String,
    pub tier: Tier,
    pub scores: BTreeMap<String, Option<f64>>,
    pub composite: Option<f64>,
    pub hard_fail_pass: Option<bool>,
    pub verdict: Option<String>,
    pub note: Option<String>,
    pub dropout: Option<String>,
    pub infrastructure: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HiddenTest {
    pub name: String,
    pub passed: bool,
    pub outcome: TestOutcome,
    pub flaky: bool,
}

/// Mean aggregation (Multivac): the mean of the other models' composite scores.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MeanRow {
    pub average_score: f64,
    pub score_count: usize,
    pub min_score: f64,
    pub max_score: f64,
    pub rank: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImplRow {
    #[serde(rename = "impl")]
    pub implementation: String,
    pub model_slug: String,
    pub label: String,
    /// The representative sample.
    pub sample: u32,
    pub samples: u32,
    pub run_path: Option<String>,
    pub build_ok: bool,
    pub build_reason: Option<String>,
    /// How the representative build went, when an agent built it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<data::AgentNote>,
    pub gate_passed: bool,
    pub gate_reason: Option<String>,
    pub tests_passed: usize,
    pub tests_total: usize,
    /// Per criterion: median over peer judgments (self and dropouts excluded).
    pub peer: BTreeMap<String, Option<f64>>,
    /// Median over expert (human) judgments; null when there are none.
    pub expert: BTreeMap<String, Option<f64>>,
    /// Median over peer and expert judgments together (self still excluded).
    pub all: BTreeMap<String, Option<f64>>,
    /// Rubric-weighted sum of the peer medians (mean aggregation: the mean of peer composites).
    pub composite: Option<f64>,
    /// 95% bootstrap interval of the composite, judges resampled.
    pub composite_ci: Option<[f64; 2]>,
    /// 1 = best composite.
    pub rank: Option<usize>,
    /// Implementations whose intervals overlap this one's: ranks the data cannot separate.
    pub inseparable_from: Vec<String>,
    pub mean: Option<MeanRow>,
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
    pub test_exit_code: Option<i32>,
    pub total_cost_usd: f64,
    pub total_tokens: u64,
    pub median_wall_seconds: Option<f64>,
    pub median_loc: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SelfBiasRow {
    #[serde(rename = "impl")]
    pub implementation: String,
    /// Per criterion: [self, peer median, delta]; nulls where the self judgment is missing.
    pub by_criterion: BTreeMap<String, [Option<f64>; 3]>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgreementRow {
    #[serde(rename = "impl")]
    pub implementation: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub range: Option<f64>,
    pub stdev: Option<f64>,
    pub judges: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RankingRow {
    pub judge: String,
    pub top: [String; 3],
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JudgingCostRow {
    pub judge: String,
    pub model_slug: String,
    pub tier: Tier,
    pub judgments: usize,
    pub dropouts: usize,
    /// Cost and time were measured for this judge.
    pub measured: bool,
    pub tokens: u64,
    pub wall_ms: u64,
    pub cost_usd: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AlphaRow {
    pub criterion: String,
    pub alpha: Option<f64>,
    pub implementations: usize,
    pub judges: usize,
    /// Below 0.667: too little agreement to draw conclusions.
    pub low: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeniencyRow {
    pub judge: String,
    /// Mean of (this judge's composite − the implementation's peer composite) over the peers it judged.
    pub offset: Option<f64>,
    pub judged: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SelfPreference {
    /// Judges that judged their own implementation.
    pub judges: usize,
    /// Of those, how many rated themselves above their peers' composite.
    pub above: usize,
    pub below: usize,
    pub mean_delta: Option<f64>,
}

/// `aggregate.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Aggregate {
    pub round: String,
    pub name: String,
    pub date: String,
    pub task: String,
    pub replayed: bool,
    pub source: Option<String>,
    pub rubric: String,
    pub aggregation: Aggregation,
    pub criteria: Vec<CriterionInfo>,
    pub composite_max: f64,
    pub verdicts: Vec<String>,
    /// Sorted by composite, best first.
    pub implementations: Vec<ImplRow>,
    pub self_bias: Vec<SelfBiasRow>,
    pub agreement: Vec<AgreementRow>,
    pub judge_ranking: Vec<RankingRow>,
    pub judging_cost: Vec<JudgingCostRow>,
    pub alpha: Vec<AlphaRow>,
    pub leniency: Vec<LeniencyRow>,
    pub self_preference: SelfPreference,
    pub bootstrap: BootstrapConfig,
    /// Mean aggregation: the mean of the implementations' average scores.
    pub avg_score: Option<f64>,
    pub problems: Vec<Problem>,
    /// A round of several tasks: per-task results, pass rates, pass@k.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<suite::Suite>,
    /// Which sandbox ran every gate, from the gates' own outputs; unisolated ones first. Empty
    /// for imported rounds, which do not say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sandboxes: Vec<SandboxUse>,
    /// Models whose calls were throttled by the endpoint (429s, lowered concurrency), with how
    /// long; empty when none was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throttled: Vec<ThrottledRow>,
    /// Command builds whose CLI had the network (`network = true`): unmetered and unreplayable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmetered: Vec<UnmeteredRow>,
}

/// A command build that called its endpoint itself: pipe did not meter, limit or record its
/// calls, and its usage is what the CLI reported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UnmeteredRow {
    pub model: String,
    pub sample: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Where its usage came from: `file`, `stdout`, or `none` (unknown).
    pub usage_source: String,
}

/// The round's unmetered builds, in build order.
fn unmetered_rows(d: &RoundData) -> Vec<UnmeteredRow> {
    d.builds
        .iter()
        .filter_map(|b| {
            b.unmetered.as_ref().map(|source| UnmeteredRow {
                model: b.model.clone(),
                sample: b.sample,
                task: b.task.clone(),
                usage_source: source.clone(),
            })
        })
        .collect()
}

/// The time one model's calls spent throttled: waiting after a 429, or queued behind a lowered
/// concurrency limit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ThrottledRow {
    pub model: String,
    /// In its builds.
    pub build_ms: u64,
    /// In its judgments.
    pub judge_ms: u64,
}

/// Each model's throttled time over the round's builds and judgments, models in roster order.
fn throttled_rows(d: &RoundData) -> Vec<ThrottledRow> {
    d.models
        .iter()
        .map(|m| ThrottledRow {
            model: m.id.clone(),
            build_ms: d
                .builds
                .iter()
                .filter(|b| b.model == m.id)
                .map(|b| b.throttled_ms)
                .sum(),
            judge_ms: d
                .judgments
                .iter()
                .filter(|j| j.judge == m.id)
                .map(|j| j.throttled_ms)
                .sum(),
        })
        .filter(|r| r.build_ms + r.judge_ms > 0)
        .collect()
}

/// The gates one sandbox ran.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SandboxUse {
    /// `docker`, `local+bwrap`, `unisolated`.
    pub sandbox: String,
    /// In a container or under bubblewrap. False: the model code had no isolation at all.
    pub isolated: bool,
    /// The gates, as [`GateRecord::name`] names them.
    pub gates: Vec<String>,
}

impl Aggregate {
    /// Gates that ran the hidden tests in some sandbox.
    pub fn sandboxed_gates(&self) -> usize {
        self.sandboxes.iter().map(|s| s.gates.len()).sum()
    }

    /// Gates whose model code ran without isolation.
    pub fn unisolated_gates(&self) -> usize {
        self.sandboxes
            .iter()
            .filter(|s| !s.isolated)
            .map(|s| s.gates.len())
            .sum()
    }
}

/// The round's gates grouped by the sandbox that ran them: unisolated first, then by name.
pub fn sandbox_uses(gates: &[GateRecord]) -> Vec<SandboxUse> {
    let mut by: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for g in gates {
        if let Some(s) = &g.sandbox {
            by.entry(s.as_str()).or_default().push(g.name());
        }
    }
    let mut uses: Vec<SandboxUse> = by
        .into_iter()
        .map(|(sandbox, gates)| SandboxUse {
            sandbox: sandbox.to_string(),
            isolated: crate::sandbox::is_isolated(sandbox),
            gates,
        })
        .collect();
    uses.sort_by_key(|u| u.isolated);
    uses
}

/// `10` for whole numbers, `9.5` otherwise.
pub fn num(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round() as i64)
    } else {
        format!("{}", round2(x))
    }
}

/// The blind label of an implementation: stable within a round, unrelated to the model's name.
pub fn label(round_id: &str, model: &str, sample: u32) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let h = blake3::hash(format!("pipe-label\0{round_id}\0{model}\0{sample}").as_bytes());
    let code: String = h.as_bytes()[..4]
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect();
    format!("impl-{code}")
}

/// The round's numbers: one row per model (its representative sample), their intervals and
/// ranks, and the tables about the judges.
pub fn compute(d: &RoundData) -> Aggregate {
    if let Some(suite) = suite::compute(d) {
        return suite_aggregate(d, suite);
    }
    let rubric = &d.rubric;
    let criteria = &rubric.criteria;
    let rep = d.representative_sample.unwrap_or(d.samples);
    let index = Index::new(d);
    let mut rows: Vec<ImplRow> = d
        .models
        .iter()
        .map(|m| impl_row(d, &index, m, rep))
        .collect();
    set_intervals(d, &index, &mut rows);
    rank(&mut rows);
    let avg_score = if rubric.aggregation == Aggregation::Mean {
        rank_means(&mut rows)
    } else {
        None
    };
    let first = criteria.first().map(|c| c.id.as_str());
    let mut by_name: Vec<&ImplRow> = rows.iter().filter(|r| r.build_ok).collect();
    by_name.sort_by(|a, b| a.implementation.cmp(&b.implementation));
    let self_bias = by_name.iter().map(|r| self_bias_row(r, criteria)).collect();
    let agreement = by_name.iter().map(|r| agreement_row(r, first)).collect();
    let judges = judge_tables(d, &rows, first);
    let alpha = criteria.iter().map(|c| alpha_row(&rows, &c.id)).collect();
    let self_preference = self_preference(&rows);
    Aggregate {
        round: d.round.clone(),
        name: d.name.clone(),
        date: d.date.clone(),
        task: d.task.clone(),
        replayed: d.replayed,
        source: d.source.clone(),
        rubric: rubric.name.clone(),
        aggregation: rubric.aggregation,
        criteria: criteria.clone(),
        composite_max: rubric.composite_max(),
        verdicts: rubric.verdicts.clone(),
        implementations: rows,
        self_bias,
        agreement,
        judge_ranking: judges.ranking,
        judging_cost: judges.cost,
        alpha,
        leniency: judges.leniency,
        self_preference,
        bootstrap: d.bootstrap,
        avg_score,
        problems: d.problems.clone(),
        suite: None,
        sandboxes: sandbox_uses(&d.gates),
        throttled: throttled_rows(d),
        unmetered: unmetered_rows(d),
    }
}

/// A suite has its own section (gates, pass@k, peer scores per task); the per-implementation
/// tables describe one task, so they stay empty.
fn suite_aggregate(d: &RoundData, suite: suite::Suite) -> Aggregate {
    let mut bare = d.clone();
    bare.builds.clear();
    bare.gates.clear();
    bare.judgments.clear();
    let mut a = compute(&bare);
    a.implementations.clear();
    a.suite = Some(suite);
    a.sandboxes = sandbox_uses(&d.gates);
    a.throttled = throttled_rows(d);
    a.unmetered = unmetered_rows(d);
    a
}

/// Judgments by (model, sample), builds by model and gates by (model, sample), grouped once:
/// every lookup is then by key, and a round of hundreds of models aggregates in time near its
/// size.
struct Index<'a> {
    judgments: HashMap<(&'a str, u32), Vec<&'a JudgmentRecord>>,
    builds: HashMap<&'a str, Vec<&'a BuildRecord>>,
    gates: HashMap<(&'a str, u32), &'a GateRecord>,
}

impl<'a> Index<'a> {
    fn new(d: &'a RoundData) -> Self {
        let mut judgments: HashMap<(&str, u32), Vec<&JudgmentRecord>> = HashMap::new();
        for j in &d.judgments {
            judgments.entry((&j.model, j.sample)).or_default().push(j);
        }
        let mut builds: HashMap<&str, Vec<&BuildRecord>> = HashMap::new();
        for b in &d.builds {
            builds.entry(&b.model).or_default().push(b);
        }
        let mut gates: HashMap<(&str, u32), &GateRecord> = HashMap::new();
        for g in &d.gates {
            gates.entry((&g.model, g.sample)).or_insert(g);
        }
        Self {
            judgments,
            builds,
            gates,
        }
    }

    fn judgments_of<'s>(&'s self, model: &'s str, sample: u32) -> Vec<&'s JudgmentRecord> {
        self.judgments
            .get(&(model, sample))
            .cloned()
            .unwrap_or_default()
    }
}

/// One model's row: the build, gate and judgments of its representative sample `rep`, and the
/// totals and medians over all its samples. Unranked, without an interval.
fn impl_row(d: &RoundData, index: &Index, m: &ModelInfo, rep: u32) -> ImplRow {
    let rubric = &d.rubric;
    let criteria = &rubric.criteria;
    let samples: Vec<&BuildRecord> = index.builds.get(m.id.as_str()).cloned().unwrap_or_default();
    let build = samples.iter().find(|b| b.sample == rep).copied();
    let gate = index.gates.get(&(m.id.as_str(), rep)).copied();
    let build_ok = build.is_some_and(|b| b.ok);
    let js = index.judgments_of(&m.id, rep);
    let peers: Vec<&JudgmentRecord> = js.iter().copied().filter(|j| is_peer(j)).collect();
    let composite = if build_ok {
        composite_of(&peers, rubric)
    } else {
        None
    };
    let given: Vec<&str> = js.iter().filter_map(|j| j.verdict.as_deref()).collect();
    let walls: Vec<f64> = samples.iter().map(|b| b.wall_ms as f64 / 1000.0).collect();
    let locs: Vec<f64> = samples
        .iter()
        .filter_map(|b| b.loc.map(|l| l as f64))
        .collect();
    ImplRow {
        implementation: m.id.clone(),
        model_slug: m.slug.clone(),
        label: label(&d.round, &m.id, rep),
        sample: rep,
        samples: samples.len() as u32,
        run_path: build.and_then(|b| b.run_path.clone()),
        build_ok,
        agent: build.and_then(|b| b.agent.clone()),
        build_reason: match build {
            None => Some("the build did not finish".to_string()),
            Some(b) => b.reason.clone(),
        },
        gate_passed: gate.is_some_and(|g| g.passed),
        gate_reason: gate.map_or_else(
            || Some("the gate did not run".to_string()),
            |g| g.reason.clone(),
        ),
        tests_passed: gate.map_or(0, |g| g.tests_passed),
        tests_total: gate.map_or(0, |g| g.tests_total),
        peer: medians(&js, criteria, |j| j.tier == Tier::Peer),
        expert: medians(&js, criteria, |j| j.tier == Tier::Expert),
        all: medians(&js, criteria, |j| j.tier != Tier::SelfJudge),
        composite,
        composite_ci: None,
        rank: None,
        inseparable_from: Vec::new(),
        mean: mean_row(rubric, &peers),
        verdict: mode_worst(&given, &rubric.verdicts).map(str::to_string),
        passed_hard_fail: hard_fail_majority(&js),
        judgments: judgment_rows(&js, criteria),
        hidden_tests: gate.map(hidden_tests).unwrap_or_default(),
        loc: build.filter(|b| b.ok).and_then(|b| b.loc),
        wall_ms: build.map_or(0, |b| b.wall_ms),
        tokens: build.map_or(0, |b| b.usage.total()),
        input_tokens: build.map_or(0, |b| b.usage.input_tokens),
        output_tokens: build.map_or(0, |b| b.usage.output_tokens),
        cache_read_tokens: build.map_or(0, |b| b.usage.cache_read_tokens),
        cost_usd: build.map_or(0.0, |b| b.cost_usd),
        test_exit_code: build.and_then(|b| b.test_exit_code),
        total_cost_usd: samples.iter().map(|b| b.cost_usd).sum(),
        total_tokens: samples.iter().map(|b| b.usage.total()).sum(),
        median_wall_seconds: median(&walls),
        median_loc: median(&locs),
    }
}

/// Per criterion, the median score over the judgments `pred` keeps.
fn medians(
    js: &[&JudgmentRecord],
    criteria: &[CriterionInfo],
    pred: impl Fn(&JudgmentRecord) -> bool,
) -> BTreeMap<String, Option<f64>> {
    criteria
        .iter()
        .map(|c| {
            let v: Vec<f64> = js
                .iter()
                .filter(|j| pred(j))
                .filter_map(|j| j.scores.get(&c.id).copied().flatten())
                .collect();
            (c.id.clone(), median(&v))
        })
        .collect()
}

/// Whether most peers that answered the hard-fail question said it passed; none when none
/// answered.
fn hard_fail_majority(js: &[&JudgmentRecord]) -> Option<bool> {
    let answered: Vec<bool> = js
        .iter()
        .filter(|j| j.tier == Tier::Peer)
        .filter_map(|j| j.hard_fail_pass)
        .collect();
    (!answered.is_empty()).then(|| answered.iter().filter(|x| **x).count() * 2 > answered.len())
}

/// Mean aggregation: the mean, count and range of the peers' composites (ranked later).
fn mean_row(rubric: &RubricInfo, peers: &[&JudgmentRecord]) -> Option<MeanRow> {
    if rubric.aggregation != Aggregation::Mean {
        return None;
    }
    let v: Vec<f64> = peers
        .iter()
        .filter_map(|j| j.composite(&rubric.criteria))
        .collect();
    Some(MeanRow {
        average_score: round2(mean(&v)?),
        score_count: v.len(),
        min_score: v.iter().copied().fold(f64::INFINITY, f64::min),
        max_score: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        rank: 0,
    })
}

/// The judgments of one implementation as the report lists them, by judge.
fn judgment_rows(js: &[&JudgmentRecord], criteria: &[CriterionInfo]) -> Vec<JudgmentRow> {
    let mut rows: Vec<JudgmentRow> = js
        .iter()
        .map(|j| JudgmentRow {
            judge: j.judge.clone(),
            tier: j.tier,
            scores: criteria
                .iter()
                .map(|c| (c.id.clone(), j.scores.get(&c.id).copied().flatten()))
                .collect(),
            composite: if j.dropout.is_none() {
                j.composite(criteria)
            } else {
                None
            },
            hard_fail_pass: j.hard_fail_pass,
            verdict: j.verdict.clone(),
            note: j.note.clone(),
            dropout: j.dropout.clone(),
            infrastructure: j.infrastructure,
        })
        .collect();
    rows.sort_by(|a, b| a.judge.cmp(&b.judge));
    rows
}

fn hidden_tests(g: &GateRecord) -> Vec<HiddenTest> {
    g.tests
        .iter()
        .map(|t| HiddenTest {
            name: t.name.clone(),
            passed: t.outcome == TestOutcome::Passed,
            outcome: t.outcome,
            flaky: t.flaky,
        })
        .collect()
}

/// Bootstrap: resample the judges who gave peer judgments; recompute every composite; set each
/// row's interval.
fn set_intervals(d: &RoundData, index: &Index, rows: &mut [ImplRow]) {
    let rubric = &d.rubric;
    let mut judges: Vec<&str> = d
        .judgments
        .iter()
        .filter(|j| is_peer(j))
        .map(|j| j.judge.as_str())
        .collect();
    judges.sort_unstable();
    judges.dedup();
    let judge_index: HashMap<&str, usize> =
        judges.iter().enumerate().map(|(i, j)| (*j, i)).collect();
    let per_judge: Vec<Option<ByJudge>> = rows
        .iter()
        .map(|r| {
            r.build_ok.then(|| {
                let js = index.judgments_of(&r.implementation, r.sample);
                ByJudge::new(&js, &judge_index, rubric)
            })
        })
        .collect();
    let cis = uncertainty::bootstrap(
        judges.len(),
        rows.len(),
        d.bootstrap.draws,
        d.bootstrap.seed,
        d.bootstrap.level,
        |pick| {
            let mut drawn: Vec<&Scored> = Vec::new();
            per_judge
                .iter()
                .map(|by| {
                    let by = by.as_ref()?;
                    drawn.clear();
                    for &p in pick {
                        drawn.extend(by.of(p));
                    }
                    composite_of_scored(&drawn, rubric)
                })
                .collect()
        },
    );
    for (r, ci) in rows.iter_mut().zip(cis) {
        r.composite_ci = ci;
    }
}

/// A built implementation's peer judgments grouped by judge, in their order, in one array
/// (`starts[p]..starts[p + 1]` are judge `p`'s): a draw picks judges and takes theirs, without
/// searching.
struct ByJudge {
    starts: Vec<usize>,
    items: Vec<Scored>,
}

impl ByJudge {
    fn new(
        js: &[&JudgmentRecord],
        judge_index: &HashMap<&str, usize>,
        rubric: &RubricInfo,
    ) -> Self {
        let mut by: Vec<Vec<&JudgmentRecord>> = vec![Vec::new(); judge_index.len()];
        for j in js {
            if is_peer(j)
                && let Some(&i) = judge_index.get(j.judge.as_str())
            {
                by[i].push(j);
            }
        }
        let mut starts = Vec::with_capacity(judge_index.len() + 1);
        let mut items = Vec::new();
        for group in by {
            starts.push(items.len());
            items.extend(group.into_iter().map(|j| Scored::of(j, rubric)));
        }
        starts.push(items.len());
        Self { starts, items }
    }

    /// Judge `p`'s judgments.
    fn of(&self, p: usize) -> &[Scored] {
        &self.items[self.starts[p]..self.starts[p + 1]]
    }
}

/// Order: composite descending, then name; ranks; overlapping intervals.
fn rank(rows: &mut [ImplRow]) {
    rows.sort_by(|a, b| {
        b.composite
            .unwrap_or(f64::NEG_INFINITY)
            .total_cmp(&a.composite.unwrap_or(f64::NEG_INFINITY))
            .then(a.implementation.cmp(&b.implementation))
    });
    let mut rank = 0;
    for r in rows.iter_mut() {
        if r.composite.is_some() {
            rank += 1;
            r.rank = Some(rank);
        }
    }
    let intervals: Vec<(String, Option<[f64; 2]>)> = rows
        .iter()
        .map(|r| (r.implementation.clone(), r.composite_ci))
        .collect();
    for r in rows.iter_mut() {
        if let Some([lo, hi]) = r.composite_ci {
            r.inseparable_from = intervals
                .iter()
                .filter(|(name, ci)| {
                    name != &r.implementation && ci.is_some_and(|[l, h]| l <= hi && lo <= h)
                })
                .map(|(name, _)| name.clone())
                .collect();
        }
    }
}

/// Mean aggregation: ranks the rows by average score (then name); returns the mean of the
/// average scores.
fn rank_means(rows: &mut [ImplRow]) -> Option<f64> {
    let mut order: Vec<usize> = (0..rows.len())
        .filter(|i| rows[*i].mean.is_some())
        .collect();
    order.sort_by(|a, b| {
        let (x, y) = (
            rows[*a].mean.as_ref().map_or(0.0, |m| m.average_score),
            rows[*b].mean.as_ref().map_or(0.0, |m| m.average_score),
        );
        y.total_cmp(&x)
            .then(rows[*a].implementation.cmp(&rows[*b].implementation))
    });
    for (k, i) in order.iter().enumerate() {
        if let Some(m) = rows[*i].mean.as_mut() {
            m.rank = k + 1;
        }
    }
    let avgs: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.mean.as_ref().map(|m| m.average_score))
        .collect();
    mean(&avgs)
}

/// Per criterion: the implementation's self score, its peer median and their difference.
fn self_bias_row(r: &ImplRow, criteria: &[CriterionInfo]) -> SelfBiasRow {
    let own = r.judgments.iter().find(|j| j.tier == Tier::SelfJudge);
    let by_criterion = criteria
        .iter()
        .map(|c| {
            let s = own.and_then(|j| j.scores.get(&c.id).copied().flatten());
            let pm = r.peer[&c.id];
            (c.id.clone(), [s, pm, s.zip(pm).map(|(a, b)| a - b)])
        })
        .collect();
    SelfBiasRow {
        implementation: r.implementation.clone(),
        by_criterion,
    }
}

/// How far the judges' scores of the `first` criterion spread for one implementation.
fn agreement_row(r: &ImplRow, first: Option<&str>) -> AgreementRow {
    let with: Vec<(&str, f64)> = first
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
    let mut names: Vec<&str> = with.iter().map(|x| x.0).collect();
    names.sort_unstable();
    AgreementRow {
        implementation: r.implementation.clone(),
        min,
        max,
        range: min.zip(max).map(|(a, b)| b - a),
        stdev: stdev(&vals).map(round2),
        judges: names.join(", "),
    }
}

/// The tables with a row per judge, in the order of the judges' names.
struct JudgeTables {
    ranking: Vec<RankingRow>,
    cost: Vec<JudgingCostRow>,
    leniency: Vec<LeniencyRow>,
}

/// Per row, each judge's first judgment and first peer judgment of it.
struct Firsts<'r> {
    any: HashMap<&'r str, &'r JudgmentRow>,
    peer: HashMap<&'r str, &'r JudgmentRow>,
}

impl<'r> Firsts<'r> {
    fn of(r: &'r ImplRow) -> Self {
        let (mut any, mut peer) = (HashMap::new(), HashMap::new());
        for j in &r.judgments {
            any.entry(j.judge.as_str()).or_insert(j);
            if j.tier == Tier::Peer {
                peer.entry(j.judge.as_str()).or_insert(j);
            }
        }
        Self { any, peer }
    }
}

/// Judges: every model, plus anyone else who judged (experts); their top three by the `first`
/// criterion, what their judging cost, how lenient they were.
fn judge_tables(d: &RoundData, rows: &[ImplRow], first: Option<&str>) -> JudgeTables {
    let mut judge_ids: Vec<String> = d.models.iter().map(|m| m.id.clone()).collect();
    let mut listed: HashSet<&str> = d.models.iter().map(|m| m.id.as_str()).collect();
    for j in &d.judgments {
        if listed.insert(&j.judge) {
            judge_ids.push(j.judge.clone());
        }
    }
    judge_ids.sort();
    let models_by_id: HashMap<&str, &ModelInfo> =
        d.models.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut judgments_by: HashMap<&str, Vec<&JudgmentRecord>> = HashMap::new();
    for j in &d.judgments {
        judgments_by.entry(&j.judge).or_default().push(j);
    }
    let firsts: Vec<Firsts> = rows.iter().map(Firsts::of).collect();
    let mut tables = JudgeTables {
        ranking: Vec::new(),
        cost: Vec::new(),
        leniency: Vec::new(),
    };
    for judge in &judge_ids {
        tables
            .ranking
            .push(ranking_row(judge, rows, &firsts, first));
        let mine: &[&JudgmentRecord] = judgments_by.get(judge.as_str()).map_or(&[], Vec::as_slice);
        let model = models_by_id.get(judge.as_str()).copied();
        tables.cost.push(judging_cost_row(judge, model, mine));
        tables.leniency.push(leniency_row(judge, rows, &firsts));
    }
    tables
}

/// The judge's top three implementations by its score of the `first` criterion.
fn ranking_row(
    judge: &str,
    rows: &[ImplRow],
    firsts: &[Firsts],
    first: Option<&str>,
) -> RankingRow {
    let mut scored: Vec<(String, f64)> = rows
        .iter()
        .zip(firsts)
        .filter_map(|(r, f)| {
            let v = f.any.get(judge)?.scores.get(first?).copied().flatten()?;
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
    RankingRow {
        judge: judge.to_string(),
        top: [place(0), place(1), place(2)],
    }
}

/// What the judge's judgments (`mine`) cost; a judge that is no model of the round is an expert.
fn judging_cost_row(
    judge: &str,
    model: Option<&ModelInfo>,
    mine: &[&JudgmentRecord],
) -> JudgingCostRow {
    JudgingCostRow {
        judge: judge.to_string(),
        model_slug: model.map_or_else(|| "\u{2014}".to_string(), |m| m.slug.clone()),
        tier: if model.is_some() {
            Tier::Peer
        } else {
            Tier::Expert
        },
        judgments: mine.len(),
        dropouts: mine.iter().filter(|j| j.dropout.is_some()).count(),
        measured: mine.iter().any(|j| j.measured),
        tokens: mine.iter().map(|j| j.usage.total()).sum(),
        wall_ms: mine.iter().map(|j| j.wall_ms).sum(),
        cost_usd: mine.iter().map(|j| j.cost_usd).sum(),
    }
}

/// How far the judge's peer composites sit above the implementations' peer composites.
fn leniency_row(judge: &str, rows: &[ImplRow], firsts: &[Firsts]) -> LeniencyRow {
    let offsets: Vec<f64> = rows
        .iter()
        .zip(firsts)
        .filter_map(|(r, f)| {
            let j = f.peer.get(judge)?;
            Some(j.composite? - r.composite?)
        })
        .collect();
    LeniencyRow {
        judge: judge.to_string(),
        offset: mean(&offsets).map(round2),
        judged: offsets.len(),
    }
}

/// Krippendorff's alpha of one criterion over the judge x implementation matrix (every usable
/// judgment, self included, as in the agreement table).
fn alpha_row(rows: &[ImplRow], criterion: &str) -> AlphaRow {
    let score = |j: &JudgmentRow| j.scores.get(criterion).copied().flatten();
    let units: Vec<Vec<f64>> = rows
        .iter()
        .filter(|r| r.build_ok)
        .map(|r| r.judgments.iter().filter_map(score).collect())
        .collect();
    let a = uncertainty::krippendorff_interval(&units).map(|x| (x * 1000.0).round() / 1000.0);
    let mut js: Vec<&str> = rows
        .iter()
        .flat_map(|r| {
            r.judgments
                .iter()
                .filter(|j| score(j).is_some())
                .map(|j| j.judge.as_str())
        })
        .collect();
    js.sort_unstable();
    js.dedup();
    AlphaRow {
        criterion: criterion.to_string(),
        alpha: a,
        implementations: units.iter().filter(|u| u.len() >= 2).count(),
        judges: js.len(),
        low: a.is_some_and(|x| x < uncertainty::ALPHA_TENTATIVE),
    }
}

/// How the judges that judged their own implementation rated it against their peers.
fn self_preference(rows: &[ImplRow]) -> SelfPreference {
    let deltas: Vec<f64> = rows
        .iter()
        .filter_map(|r| {
            Some(
                r.judgments
                    .iter()
                    .find(|j| j.tier == Tier::SelfJudge)?
                    .composite?
                    - r.composite?,
            )
        })
        .collect();
    SelfPreference {
        judges: deltas.len(),
        above: deltas.iter().filter(|x| **x > 0.0).count(),
        below: deltas.iter().filter(|x| **x < 0.0).count(),
        mean_delta: mean(&deltas).map(round2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(model: &str, sample: u32, task: Option<&str>, sandbox: Option<&str>) -> GateRecord {
        GateRecord {
            model: model.into(),
            sample,
            passed: true,
            tests_passed: 1,
            tests_total: 1,
            tests: Vec::new(),
            reason: None,
            task: task.map(str::to_string),
            sandbox: sandbox.map(str::to_string),
        }
    }

    #[test]
    fn gates_are_grouped_by_sandbox_unisolated_first() {
        let gates = [
            gate("ann", 1, Some("add"), Some("docker")),
            gate("bob", 1, Some("add"), Some("unisolated")),
            gate("ann", 2, Some("add"), Some("local+bwrap")),
            gate("bob", 2, Some("add"), None),
            gate("ann", 1, Some("sub"), Some("docker")),
        ];
        let uses = sandbox_uses(&gates);
        let rows: Vec<(&str, bool, Vec<&str>)> = uses
            .iter()
            .map(|u| {
                (
                    u.sandbox.as_str(),
                    u.isolated,
                    u.gates.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ("unisolated", false, vec!["add/bob#1"]),
                ("docker", true, vec!["add/ann#1", "sub/ann#1"]),
                ("local+bwrap", true, vec!["add/ann#2"]),
            ]
        );
        // A gate that ran nothing (its build produced no implementation) is in no sandbox.
        let uses = sandbox_uses(&[gate("bob", 2, None, None)]);
        assert!(uses.is_empty());
    }

    #[test]
    fn an_unknown_label_counts_as_unisolated() {
        let uses = sandbox_uses(&[
            gate("ann", 1, None, Some("local")),
            gate("bob", 1, None, Some("?")),
        ]);
        assert!(uses.iter().all(|u| !u.isolated), "{uses:?}");
    }
}
