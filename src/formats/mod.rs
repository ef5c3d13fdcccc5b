//! Imports of published rounds into [`RoundData`]: the openbenchmark dataset (schema_version 1) and
//! Multivac evaluation files. Also reads round directories back (`pipe aggregate`, `pipe publish`).
//!
//! An imported round directory holds `round-data.json`, `aggregate.json` (computed) and
//! `report.md`, like the aggregate node of a run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::aggregate::{
    self, BootstrapConfig, BuildRecord, CriterionInfo, GateRecord, JudgmentRecord, ModelInfo,
    RoundData, RubricInfo, TestRecord, Tier,
};
use crate::base::fsutil;
use crate::base::junit::TestOutcome;
use crate::base::names::{NameError, SafeName, shown};
use crate::config::rubric::{Aggregation, Rubric};
use crate::report::dataset::{DASH, Dataset, DatasetRound, SCHEMA_VERSION, parse_wall_clock};
use crate::vocab::Usage;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input is unreadable or wrong (exit 2).
    #[error("{0}")]
    Input(String),
    /// Writing failed (exit 1).
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A directory to write into is not plainly inside `--out` (a planted link; exit 1).
    #[error("{0}")]
    Outside(#[from] fsutil::Outside),
}

fn input(msg: impl Into<String>) -> ImportError {
    ImportError::Input(msg.into())
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |source| ImportError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads and parses a JSON file of at most [`MAX_IMPORT_BYTES`](crate::base::limits::MAX_IMPORT_BYTES);
/// an error names the file, line:column and the key path.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, ImportError> {
    let text =
        crate::base::limits::read_text(path, crate::base::limits::MAX_IMPORT_BYTES, "a JSON file")
            .map_err(|e| input(e.to_string()))?;
    let mut de = serde_json::Deserializer::from_str(&text);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner();
        let suffix = format!(" at line {} column {}", inner.line(), inner.column());
        let full = inner.to_string();
        let message = full.strip_suffix(&suffix).unwrap_or(&full);
        let place = if at == "." {
            String::new()
        } else {
            format!(" (at `{at}`)")
        };
        input(format!(
            "{}:{}:{}: {message}{place}",
            path.display(),
            inner.line(),
            inner.column()
        ))
    })?;
    de.end().map_err(|e| {
        input(format!(
            "{}:{}:{}: trailing characters after the JSON value",
            path.display(),
            e.line(),
            e.column()
        ))
    })?;
    Ok(value)
}

/// A name read from an imported file (`at` is its JSON path, `$.rounds[0].task`), proven safe:
/// names from a file become directories and node ids, so an unsafe one refuses the whole import.
fn safe_name(file: &Path, at: &str, name: &str) -> Result<SafeName, ImportError> {
    SafeName::new(name).map_err(|e| {
        input(format!(
            "{}: {at}: \"{}\" is not a safe name: {e}\n  = help: imported names follow the rule of a pipeline's names, which name directories: {}",
            file.display(),
            shown(name),
            NameError::RULE
        ))
    })
}

/// Every name of a dataset, proven safe before anything is written: each round's task and date
/// (its directory is `<task>-<date>`), and every model and judge it names.
fn check_dataset_names(file: &Path, ds: &Dataset) -> Result<(), ImportError> {
    for (i, r) in ds.rounds.iter().enumerate() {
        let at = format!("$.rounds[{i}]");
        let task = safe_name(file, &format!("{at}.task"), &r.task)?;
        let Some(date) = crate::base::names::date(&r.date) else {
            return Err(input(format!(
                "{}: {at}.date: \"{}\" is not a YYYY-MM-DD date",
                file.display(),
                shown(&r.date)
            )));
        };
        SafeName::joined(&task, &date).map_err(|e| {
            input(format!(
                "{}: {at}.task: the round directory \"{task}-{date}\" is not a safe name: {e}",
                file.display()
            ))
        })?;
        for (k, s) in r.samples.iter().enumerate() {
            safe_name(file, &format!("{at}.samples[{k}].model"), &s.model)?;
        }
        for (k, d) in r.per_impl_detail.iter().enumerate() {
            let here = format!("{at}.perImplDetail[{k}]");
            safe_name(file, &format!("{here}.impl"), &d.implementation)?;
            for (m, j) in d.scores.iter().enumerate() {
                safe_name(file, &format!("{here}.scores[{m}].judge"), &j.judge)?;
            }
        }
        for (k, c) in r.judging_cost.iter().enumerate() {
            safe_name(file, &format!("{at}.judgingCost[{k}].judge"), &c.judge)?;
        }
    }
    Ok(())
}

/// Every name of a Multivac file, proven safe before anything is written.
fn check_multivac_names(file: &Path, e: &Evaluation) -> Result<(), ImportError> {
    safe_name(file, "$.question_id", &e.question_id)?;
    for (i, m) in e.models_used.iter().enumerate() {
        safe_name(file, &format!("$.models_used[{i}].id"), &m.id)?;
    }
    for (i, j) in e.judgments.iter().enumerate() {
        safe_name(file, &format!("$.judgments[{i}].judge_key"), &j.judge_key)?;
        safe_name(
            file,
            &format!("$.judgments[{i}].respondent_key"),
            &j.respondent_key,
        )?;
    }
    Ok(())
}

/// `rubrics/<name>.toml` under the current directory when present, else `builtin`.
fn rubric_or(name: &str, builtin: RubricInfo) -> Result<RubricInfo, ImportError> {
    let file = Path::new("rubrics").join(format!("{name}.toml"));
    if !file.exists() {
        return Ok(builtin);
    }
    Rubric::load(&file)
        .map(|r| RubricInfo::from(&r))
        .map_err(|diags| {
            input(crate::base::diag::render_all(
                &diags,
                &std::env::current_dir().unwrap_or_default(),
            ))
        })
}

/// An imported score must lie on its scale (`min..=max`): one outside it would skew every mean
/// and median it enters.
fn check_score(
    at: &str,
    value: f64,
    min: f64,
    max: f64,
    rubric: &RubricInfo,
) -> Result<(), ImportError> {
    // Rounding slack: weights like 0.3 + 0.2 + ... sum to 1 only nearly.
    let slack = 1e-9 * min.abs().max(max.abs()).max(1.0);
    if value >= min - slack && value <= max + slack {
        return Ok(());
    }
    let (min, max) = (
        crate::report::dataset::round_to(min, 6),
        crate::report::dataset::round_to(max, 6),
    );
    Err(input(format!(
        "{at}: {value} is outside the scale {min}..{max} of the rubric `{}`",
        rubric.name
    )))
}

fn criterion(id: &str, label: &str, max: f64, weight: f64) -> CriterionInfo {
    CriterionInfo {
        id: id.into(),
        label: label.into(),
        min: 0.0,
        max,
        weight,
    }
}

/// The standard code-review rubric (`rubrics/code-review.toml`): spec /10 + quality /20.
pub fn code_review_rubric() -> RubricInfo {
    RubricInfo {
        name: "code-review".into(),
        aggregation: Aggregation::Median,
        criteria: vec![
            criterion("spec", "Spec compliance", 10.0, 1.0),
            criterion("quality", "Code quality", 20.0, 1.0),
        ],
        verdicts: ["ship", "ship-with-cleanup", "rewrite", "reject"]
            .map(String::from)
            .to_vec(),
    }
}

/// The Multivac rubric (`rubrics/multivac.toml`): five criteria on 0..10, weights summing to 1,
/// so a weighted score is on 0..10; mean aggregation.
pub fn multivac_rubric() -> RubricInfo {
    RubricInfo {
        name: "multivac".into(),
        aggregation: Aggregation::Mean,
        criteria: vec![
            criterion("correctness", "Correctness", 10.0, 0.3),
            criterion("completeness", "Completeness", 10.0, 0.2),
            criterion("clarity", "Clarity", 10.0, 0.2),
            criterion("depth", "Depth", 10.0, 0.15),
            criterion("usefulness", "Usefulness", 10.0, 0.15),
        ],
        verdicts: ["excellent", "good", "fair", "poor"]
            .map(String::from)
            .to_vec(),
    }
}

fn file_name(file: &Path) -> String {
    file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The sample number at the end of a run path (`...-r3` -> 3).
fn run_path_sample(run_path: &str) -> Option<u32> {
    let last = run_path.trim_end_matches('/').rsplit('/').next()?;
    let (_, n) = last.rsplit_once("-r")?;
    n.parse().ok()
}

/// One dataset round as round data. `at` names the round in errors (`FILE: rounds[0]`).
///
/// `compute` takes one representative sample number for the whole round, but a dataset's models
/// may have different numbers of samples. Each model's sample numbers are therefore shifted so
/// that its representative sample (the `-rN` of its run path, else its last) gets the round's
/// highest representative number; models whose representative is already that number keep
/// their numbers.
pub fn round_data_from_dataset(
    r: &DatasetRound,
    rubric: &RubricInfo,
    source: &str,
    at: &str,
) -> Result<RoundData, ImportError> {
    if r.date.parse::<jiff::civil::Date>().is_err() {
        return Err(input(format!(
            "{at}.date: `{}` is not a YYYY-MM-DD date",
            r.date
        )));
    }
    if r.task.trim().is_empty() {
        return Err(input(format!("{at}.task is empty")));
    }
    // Every lookup below is by name through these maps: a dataset of 100,000 samples imports in
    // linear time.
    let mut models: Vec<ModelInfo> = Vec::new();
    let mut position: HashMap<&str, usize> = HashMap::new();
    let mut samples_of: HashMap<&str, Vec<u32>> = HashMap::new();
    let mut seen: HashSet<(&str, u32)> = HashSet::new();
    for (i, s) in r.samples.iter().enumerate() {
        if let Some(&m) = position.get(s.model.as_str()) {
            if models[m].slug == DASH {
                models[m].slug.clone_from(&s.model_slug);
            }
        } else {
            position.insert(&s.model, models.len());
            models.push(ModelInfo {
                id: s.model.clone(),
                slug: s.model_slug.clone(),
            });
        }
        if !seen.insert((&s.model, s.sample)) {
            return Err(input(format!(
                "{at}.samples[{i}]: model `{}` has sample {} twice",
                s.model, s.sample
            )));
        }
        samples_of.entry(&s.model).or_default().push(s.sample);
    }
    let mut details: HashMap<&str, &crate::report::dataset::Detail> = HashMap::new();
    for (i, d) in r.per_impl_detail.iter().enumerate() {
        if details.insert(&d.implementation, d).is_some() {
            return Err(input(format!(
                "{at}.perImplDetail[{i}]: implementation `{}` appears twice",
                d.implementation
            )));
        }
        if !position.contains_key(d.implementation.as_str()) {
            position.insert(&d.implementation, models.len());
            models.push(ModelInfo {
                id: d.implementation.clone(),
                slug: DASH.into(),
            });
        }
    }
    let detail = |m: &str| details.get(m).copied();
    // Each model's representative sample, and the round-wide number it is moved to.
    let reps: BTreeMap<&str, u32> = models
        .iter()
        .map(|m| {
            let own: &[u32] = samples_of.get(m.id.as_str()).map_or(&[], Vec::as_slice);
            let from_path = detail(&m.id)
                .and_then(|d| run_path_sample(&d.run_path))
                .filter(|n| own.contains(n));
            let rep = from_path.or_else(|| own.iter().copied().max()).unwrap_or(1);
            (m.id.as_str(), rep)
        })
        .collect();
    let round_rep = reps.values().copied().max().unwrap_or(1).max(1);
    let shift = |m: &str, s: u32| s + (round_rep - reps.get(m).copied().unwrap_or(round_rep));

    let mut builds = Vec::new();
    for s in &r.samples {
        let is_rep = reps.get(s.model.as_str()) == Some(&s.sample);
        let d = detail(&s.model);
        // Evidence that nothing was built: no code measured, no hidden test passed, no judge
        // gave a score.
        let nothing = s.loc.is_none()
            && d.is_none_or(|d| {
                d.hidden_tests.iter().all(|t| !t.passed)
                    && d.scores
                        .iter()
                        .all(|j| j.scores.0.iter().all(|(_, v)| v.is_none()))
            });
        let ok = !(is_rep && nothing);
        builds.push(BuildRecord {
            model: s.model.clone(),
            sample: shift(&s.model, s.sample),
            ok,
            reason: (!ok).then(|| {
                "no implementation: no lines of code, no hidden test passed, no judge scored it"
                    .to_string()
            }),
            usage: Usage {
                input_tokens: s.input_tokens,
                output_tokens: s.output_tokens,
                cache_read_tokens: s.cache_read_tokens,
            },
            cost_usd: s.cost_usd.0,
            wall_ms: (s.wall_sec.0 * 1000.0).round().max(0.0) as u64,
            loc: s.loc,
            run_path: d
                .filter(|_| is_rep)
                .map(|d| d.run_path.clone())
                .filter(|p| p != DASH),
            test_exit_code: s.test_exit_code,
            task: None,
            agent: None,
        });
    }
    let mut gates = Vec::new();
    let mut judgments = Vec::new();
    for (i, d) in r.per_impl_detail.iter().enumerate() {
        let tests: Vec<TestRecord> = d
            .hidden_tests
            .iter()
            .map(|t| TestRecord {
                name: t.name.clone(),
                outcome: if t.passed {
                    TestOutcome::Passed
                } else {
                    TestOutcome::Failed
                },
                flaky: false,
            })
            .collect();
        let passed = tests
            .iter()
            .filter(|t| t.outcome == TestOutcome::Passed)
            .count();
        gates.push(GateRecord {
            model: d.implementation.clone(),
            sample: round_rep,
            passed: !tests.is_empty() && passed == tests.len(),
            tests_passed: passed,
            tests_total: tests.len(),
            reason: tests
                .is_empty()
                .then(|| "no hidden tests in the dataset".to_string()),
            tests,
            task: None,
            sandbox: None,
        });
        for (k, j) in d.scores.iter().enumerate() {
            let place = format!("{at}.perImplDetail[{i}].scores[{k}]");
            for (key, value) in &j.scores.0 {
                let Some(c) = rubric.criteria.iter().find(|c| &c.id == key) else {
                    return Err(input(format!(
                        "{place}: `{key}` is not a criterion of the rubric `{}` (criteria: {})",
                        rubric.name,
                        rubric
                            .criteria
                            .iter()
                            .map(|c| c.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                };
                if let Some(n) = value {
                    check_score(&format!("{place}.{key}"), n.0, c.min, c.max, rubric)?;
                }
            }
            let scores: BTreeMap<String, Option<f64>> = rubric
                .criteria
                .iter()
                .map(|c| {
                    (
                        c.id.clone(),
                        j.scores.get(&c.id).copied().flatten().map(|n| n.0),
                    )
                })
                .collect();
            let verdict = (j.verdict != DASH).then(|| j.verdict.clone());
            if let Some(v) = &verdict
                && !rubric.verdicts.contains(v)
            {
                return Err(input(format!(
                    "{place}.verdict: `{v}` is not a verdict of the rubric `{}` ({})",
                    rubric.name,
                    rubric.verdicts.join(", ")
                )));
            }
            let dropout = verdict.is_none() && scores.values().all(Option::is_none);
            let note = (j.note != DASH).then(|| j.note.clone());
            judgments.push(JudgmentRecord {
                judge: j.judge.clone(),
                model: d.implementation.clone(),
                sample: round_rep,
                tier: j.tier,
                scores,
                weighted: None,
                hard_fail_pass: (!dropout).then_some(j.hard_fail),
                verdict,
                note: if dropout { None } else { note.clone() },
                dropout: dropout
                    .then(|| note.unwrap_or_else(|| "no usable judgment (dataset)".to_string())),
                infrastructure: false,
                usage: Usage::default(),
                cost_usd: 0.0,
                wall_ms: 0,
                measured: false,
                task: None,
            });
        }
    }
    // Judging cost: where the dataset has numbers, the judge's totals go on its first judgment.
    let mut by_judge: HashMap<String, Vec<usize>> = HashMap::new();
    for (k, j) in judgments.iter().enumerate() {
        by_judge.entry(j.judge.clone()).or_default().push(k);
    }
    for (i, c) in r.judging_cost.iter().enumerate() {
        let (Some(tokens), Some(cost)) = (c.tokens.as_f64(), c.cost_usd.as_f64()) else {
            continue;
        };
        let wall_ms = if c.wall_clock == DASH {
            0
        } else {
            parse_wall_clock(&c.wall_clock).ok_or_else(|| {
                input(format!(
                    "{at}.judgingCost[{i}].wallClock: `{}` is not like `2m05s`",
                    c.wall_clock
                ))
            })?
        };
        let mut first = true;
        for &k in by_judge.get(&c.judge).into_iter().flatten() {
            let j = &mut judgments[k];
            j.measured = true;
            if first {
                j.usage.input_tokens = tokens.max(0.0) as u64;
                j.cost_usd = cost;
                j.wall_ms = wall_ms;
                first = false;
            }
        }
    }
    let samples = samples_of
        .values()
        .map(|s| s.len() as u32)
        .max()
        .unwrap_or(1)
        .max(1);
    Ok(RoundData {
        round: format!("{}-{}", r.task, r.date),
        name: r.task.clone(),
        date: r.date.clone(),
        task: r.task.clone(),
        replayed: false,
        source: Some(source.to_string()),
        rubric: rubric.clone(),
        models,
        samples,
        representative_sample: Some(round_rep),
        builds,
        gates,
        judgments,
        problems: Vec::new(),
        bootstrap: BootstrapConfig::default(),
    })
}

/// Writes `round-data.json`, `aggregate.json` and `report.md` into `dir`.
pub fn write_round(dir: &Path, data: &RoundData) -> Result<(), ImportError> {
    let agg = aggregate::compute(data);
    let p = dir.join("round-data.json");
    fsutil::write_json(&p, data).map_err(write_err(&p))?;
    let p = dir.join("aggregate.json");
    fsutil::write_json(&p, &agg).map_err(write_err(&p))?;
    let p = dir.join("report.md");
    fsutil::write_atomic(
        &p,
        &crate::report::render(crate::report::Format::Markdown, data, &agg),
    )
    .map_err(write_err(&p))?;
    Ok(())
}

/// `pipe import openbenchmark FILE --out DIR`: one directory per round, `DIR/<task>-<date>`.
pub fn openbenchmark(file: &Path, out: &Path) -> Result<Vec<PathBuf>, ImportError> {
    let ds: Dataset = read_json(file)?;
    if ds.meta.schema_version != SCHEMA_VERSION {
        return Err(input(format!(
            "{}: meta.schema_version is {}; pipe reads schema_version {SCHEMA_VERSION}",
            file.display(),
            ds.meta.schema_version
        )));
    }
    check_dataset_names(file, &ds)?;
    let rubric = rubric_or("code-review", code_review_rubric())?;
    let source = file_name(file);
    let mut rounds: Vec<(RoundData, PathBuf)> = Vec::new();
    let mut ids: HashSet<String> = HashSet::new();
    for (i, r) in ds.rounds.iter().enumerate() {
        let at = format!("{}: rounds[{i}]", file.display());
        let data = round_data_from_dataset(r, &rubric, &source, &at)?;
        if !ids.insert(data.round.clone()) {
            return Err(input(format!(
                "{at}: a second round `{}` (task and date repeat)",
                data.round
            )));
        }
        let id = SafeName::new(data.round.as_str())
            .map_err(|e| input(format!("{at}: round `{}`: {e}", shown(&data.round))))?;
        let dir = fsutil::inside(out, Path::new(id.as_str()))?;
        rounds.push((data, dir));
    }
    for (r, (data, _)) in ds.rounds.iter().zip(&rounds) {
        for s in r
            .samples
            .iter()
            .filter(|s| s.tokens_total != 0 && s.tokens_total != s.input_tokens + s.output_tokens)
        {
            eprintln!(
                "warning: {}: {} sample {}: tokensTotal {} is not inputTokens + outputTokens ({}); pipe counts input + output",
                data.round,
                s.model,
                s.sample,
                s.tokens_total,
                s.input_tokens + s.output_tokens
            );
        }
    }
    for (data, dir) in &rounds {
        write_round(dir, data)?;
    }
    Ok(rounds.into_iter().map(|(_, d)| d).collect())
}

/// A Multivac evaluation file.
#[derive(Debug, Deserialize)]
pub struct Evaluation {
    #[serde(default)]
    pub evaluation_id: Option<String>,
    pub question_id: String,
    #[serde(default)]
    pub question_text: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    pub timestamp: String,
    pub models_used: Vec<MultivacModel>,
    pub judgments: Vec<MultivacJudgment>,
}

#[derive(Debug, Deserialize)]
pub struct MultivacModel {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub provider: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct MultivacJudgment {
    pub judge_key: String,
    pub respondent_key: String,
    pub weighted_score: f64,
    #[serde(default)]
    pub brief_justification: Option<String>,
}

/// A Multivac evaluation as round data: one sample per model, each judgment's `weighted_score` as
/// its composite; a missing (judge, respondent) pair of two different models is a dropout.
pub fn round_data_from_multivac(
    e: &Evaluation,
    rubric: &RubricInfo,
    source: &str,
    file: &Path,
) -> Result<RoundData, ImportError> {
    let at = file.display();
    let date = e.timestamp.get(..10).unwrap_or_default();
    if date.parse::<jiff::civil::Date>().is_err() {
        return Err(input(format!(
            "{at}: timestamp `{}` does not start with a YYYY-MM-DD date",
            e.timestamp
        )));
    }
    let mut models: Vec<ModelInfo> = Vec::new();
    let mut known: HashSet<&str> = HashSet::new();
    for (i, m) in e.models_used.iter().enumerate() {
        if !known.insert(&m.id) {
            return Err(input(format!(
                "{at}: models_used[{i}]: model `{}` appears twice",
                m.id
            )));
        }
        let slug = match (&m.provider, &m.name) {
            (Some(p), Some(n)) => format!("{p}/{n}"),
            _ => m.id.clone(),
        };
        models.push(ModelInfo {
            id: m.id.clone(),
            slug,
        });
    }
    let mut judgments: Vec<JudgmentRecord> = Vec::new();
    let mut judged: HashSet<(&str, &str)> = HashSet::new();
    let nulls: BTreeMap<String, Option<f64>> = rubric
        .criteria
        .iter()
        .map(|c| (c.id.clone(), None))
        .collect();
    for (i, j) in e.judgments.iter().enumerate() {
        for (key, name) in [
            (&j.judge_key, "judge_key"),
            (&j.respondent_key, "respondent_key"),
        ] {
            if !known.contains(key.as_str()) {
                return Err(input(format!(
                    "{at}: judgments[{i}].{name}: `{key}` is not in models_used"
                )));
            }
        }
        if !j.weighted_score.is_finite() {
            return Err(input(format!(
                "{at}: judgments[{i}].weighted_score is not a number"
            )));
        }
        check_score(
            &format!("{at}: judgments[{i}].weighted_score"),
            j.weighted_score,
            rubric.composite_min(),
            rubric.composite_max(),
            rubric,
        )?;
        if !judged.insert((&j.judge_key, &j.respondent_key)) {
            return Err(input(format!(
                "{at}: judgments[{i}]: `{}` judged `{}` twice",
                j.judge_key, j.respondent_key
            )));
        }
        judgments.push(JudgmentRecord {
            judge: j.judge_key.clone(),
            model: j.respondent_key.clone(),
            sample: 1,
            tier: if j.judge_key == j.respondent_key {
                Tier::SelfJudge
            } else {
                Tier::Peer
            },
            scores: nulls.clone(),
            weighted: Some(j.weighted_score),
            hard_fail_pass: None,
            verdict: None,
            note: j.brief_justification.clone(),
            dropout: None,
            infrastructure: false,
            usage: Usage::default(),
            cost_usd: 0.0,
            wall_ms: 0,
            measured: false,
            task: None,
        });
    }
    for judge in &models {
        for respondent in &models {
            if judge.id != respondent.id
                && !judged.contains(&(judge.id.as_str(), respondent.id.as_str()))
            {
                judgments.push(JudgmentRecord {
                    judge: judge.id.clone(),
                    model: respondent.id.clone(),
                    sample: 1,
                    tier: Tier::Peer,
                    scores: nulls.clone(),
                    weighted: None,
                    hard_fail_pass: None,
                    verdict: None,
                    note: None,
                    dropout: Some("no judgment in the Multivac file".into()),
                    infrastructure: false,
                    usage: Usage::default(),
                    cost_usd: 0.0,
                    wall_ms: 0,
                    measured: false,
                    task: None,
                });
            }
        }
    }
    let builds = models
        .iter()
        .map(|m| BuildRecord {
            model: m.id.clone(),
            sample: 1,
            ok: true,
            reason: None,
            usage: Usage::default(),
            cost_usd: 0.0,
            wall_ms: 0,
            loc: None,
            run_path: None,
            test_exit_code: None,
            task: None,
            agent: None,
        })
        .collect();
    Ok(RoundData {
        round: format!("{}-{date}", e.question_id),
        name: e.question_id.clone(),
        date: date.to_string(),
        task: e.question_id.clone(),
        replayed: false,
        source: Some(source.to_string()),
        rubric: rubric.clone(),
        models,
        samples: 1,
        representative_sample: Some(1),
        builds,
        gates: Vec::new(),
        judgments,
        problems: Vec::new(),
        bootstrap: BootstrapConfig::default(),
    })
}

/// `pipe import multivac FILE --out DIR`: one round directory, `DIR/<question_id>-<date>`.
pub fn multivac(file: &Path, out: &Path) -> Result<PathBuf, ImportError> {
    let e: Evaluation = read_json(file)?;
    check_multivac_names(file, &e)?;
    let rubric = rubric_or("multivac", multivac_rubric())?;
    let data = round_data_from_multivac(&e, &rubric, &file_name(file), file)?;
    let id = SafeName::new(data.round.as_str()).map_err(|e| {
        input(format!(
            "{}: $.question_id: the round directory \"{}\" is not a safe name: {e}",
            file.display(),
            shown(&data.round)
        ))
    })?;
    let dir = fsutil::inside(out, Path::new(id.as_str()))?;
    write_round(&dir, &data)?;
    Ok(dir)
}

/// A round directory's `round-data.json`: the directory's own, or its aggregate node's.
pub fn round_data_file(dir: &Path) -> Option<PathBuf> {
    [
        dir.join("round-data.json"),
        dir.join("nodes/aggregate/round-data.json"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

pub fn load_round(dir: &Path) -> Result<RoundData, ImportError> {
    let file = round_data_file(dir).ok_or_else(|| {
        input(format!(
            "{}: no round-data.json here or under nodes/aggregate/",
            dir.display()
        ))
    })?;
    read_json(&file)
}

/// Every round directory directly under `out` with round data, ordered by date, then round id.
pub fn load_all(out: &Path) -> Result<Vec<RoundData>, ImportError> {
    let entries =
        std::fs::read_dir(out).map_err(|e| input(format!("cannot read {}: {e}", out.display())))?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir() && round_data_file(p).is_some())
        .collect();
    dirs.sort();
    let mut rounds = dirs
        .iter()
        .map(|d| load_round(d))
        .collect::<Result<Vec<_>, _>>()?;
    rounds.sort_by(|a, b| a.date.cmp(&b.date).then(a.round.cmp(&b.round)));
    Ok(rounds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(name: &str) -> RubricInfo {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("rubrics")
            .join(format!("{name}.toml"));
        RubricInfo::from(&Rubric::load(&file).unwrap_or_else(|d| panic!("{name}: {d:?}")))
    }

    #[test]
    fn built_in_rubrics_equal_the_rubric_files() {
        assert_eq!(load("code-review"), code_review_rubric());
        let multivac = load("multivac");
        assert_eq!(multivac, multivac_rubric());
        assert!((multivac.composite_max() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn run_path_names_the_sample() {
        assert_eq!(
            run_path_sample("builds/alpha/rounds/sandbox-2026-05-05-r2"),
            Some(2)
        );
        assert_eq!(
            run_path_sample("builds/alpha/rounds/sandbox-2026-05-05"),
            None
        );
        assert_eq!(run_path_sample(DASH), None);
    }
}
