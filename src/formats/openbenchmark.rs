//! The openbenchmark dataset (schema_version 1) as round data: `pipe import openbenchmark`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::checks::{check_score, file_name, safe_name};
use super::error::{ImportError, input, read_json};
use super::round_dir::write_round;
use super::rubrics;
use crate::aggregate::{
    BootstrapConfig, BuildRecord, GateRecord, JudgmentRecord, ModelInfo, RoundData, RubricInfo,
    TestRecord,
};
use crate::base::fsutil;
use crate::base::junit::TestOutcome;
use crate::base::names::{SafeName, shown};
use crate::report::dataset::{
    DASH, Dataset, DatasetRound, Detail, DetailScore, SCHEMA_VERSION, Sample, parse_wall_clock,
};
use crate::vocab::Usage;

/// `pipe import openbenchmark FILE --out DIR`: one directory per round, `DIR/<task>-<date>`.
pub fn import(file: &Path, out: &Path) -> Result<Vec<PathBuf>, ImportError> {
    let ds: Dataset = read_json(file)?;
    if ds.meta.schema_version != SCHEMA_VERSION {
        return Err(input(format!(
            "{}: meta.schema_version is {}; pipe reads schema_version {SCHEMA_VERSION}",
            file.display(),
            ds.meta.schema_version
        )));
    }
    check_dataset_names(file, &ds)?;
    let rubric = rubrics::CODE_REVIEW.or_local()?;
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
        warn_token_totals(r, data);
    }
    for (data, dir) in &rounds {
        write_round(dir, data)?;
    }
    Ok(rounds.into_iter().map(|(_, d)| d).collect())
}

/// Samples whose `tokensTotal` is not input + output: pipe counts input + output, and says so.
fn warn_token_totals(r: &DatasetRound, data: &RoundData) {
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
    let roster = Roster::of(r, at)?;
    let reps = Representatives::of(&roster);
    let builds = r
        .samples
        .iter()
        .map(|s| build_record(s, roster.details.get(s.model.as_str()).copied(), &reps))
        .collect();
    let mut gates = Vec::new();
    let mut judgments = Vec::new();
    for (i, d) in r.per_impl_detail.iter().enumerate() {
        gates.push(gate_record(d, reps.round));
        for (k, j) in d.scores.iter().enumerate() {
            let place = format!("{at}.perImplDetail[{i}].scores[{k}]");
            judgments.push(judgment_record(
                j,
                &d.implementation,
                reps.round,
                rubric,
                &place,
            )?);
        }
    }
    add_judging_cost(r, &mut judgments, at)?;
    let samples = roster
        .samples_of
        .values()
        .map(|s| s.len() as u32)
        .max()
        .unwrap_or(1)
        .max(1);
    let representative_sample = Some(reps.round);
    Ok(RoundData {
        round: format!("{}-{}", r.task, r.date),
        name: r.task.clone(),
        date: r.date.clone(),
        task: r.task.clone(),
        replayed: false,
        source: Some(source.to_string()),
        rubric: rubric.clone(),
        models: roster.models,
        samples,
        representative_sample,
        builds,
        gates,
        judgments,
        problems: Vec::new(),
        bootstrap: BootstrapConfig::default(),
    })
}

/// A round's models in the order they first appear (samples first, then implementations that
/// have details only), with their sample numbers and details. Every lookup is by name through
/// these maps: a dataset of 100,000 samples imports in linear time.
struct Roster<'a> {
    models: Vec<ModelInfo>,
    samples_of: HashMap<&'a str, Vec<u32>>,
    details: HashMap<&'a str, &'a Detail>,
}

impl<'a> Roster<'a> {
    /// Refuses a sample given twice and an implementation detailed twice.
    fn of(r: &'a DatasetRound, at: &str) -> Result<Self, ImportError> {
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
        let mut details: HashMap<&str, &Detail> = HashMap::new();
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
        Ok(Self {
            models,
            samples_of,
            details,
        })
    }
}

/// Each model's representative sample, and the round-wide number every representative is moved
/// to.
struct Representatives<'m> {
    of: BTreeMap<&'m str, u32>,
    round: u32,
}

impl<'m> Representatives<'m> {
    fn of(roster: &'m Roster) -> Self {
        let of: BTreeMap<&str, u32> = roster
            .models
            .iter()
            .map(|m| {
                let own: &[u32] = roster
                    .samples_of
                    .get(m.id.as_str())
                    .map_or(&[], Vec::as_slice);
                let from_path = roster
                    .details
                    .get(m.id.as_str())
                    .and_then(|d| run_path_sample(&d.run_path))
                    .filter(|n| own.contains(n));
                let rep = from_path.or_else(|| own.iter().copied().max()).unwrap_or(1);
                (m.id.as_str(), rep)
            })
            .collect();
        let round = of.values().copied().max().unwrap_or(1).max(1);
        Self { of, round }
    }

    fn is_rep(&self, model: &str, sample: u32) -> bool {
        self.of.get(model) == Some(&sample)
    }

    /// A sample's number, shifted so that the model's representative gets the round's number.
    fn shift(&self, model: &str, sample: u32) -> u32 {
        sample + (self.round - self.of.get(model).copied().unwrap_or(self.round))
    }
}

/// A sample as a build. A representative sample with no evidence that anything was built (no
/// code measured, no hidden test passed, no judge gave a score) is a failed build.
fn build_record(s: &Sample, d: Option<&Detail>, reps: &Representatives) -> BuildRecord {
    let is_rep = reps.is_rep(&s.model, s.sample);
    let nothing = s.loc.is_none()
        && d.is_none_or(|d| {
            d.hidden_tests.iter().all(|t| !t.passed)
                && d.scores
                    .iter()
                    .all(|j| j.scores.0.iter().all(|(_, v)| v.is_none()))
        });
    let ok = !(is_rep && nothing);
    BuildRecord {
        model: s.model.clone(),
        sample: reps.shift(&s.model, s.sample),
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
        throttled_ms: 0,
        loc: s.loc,
        run_path: d
            .filter(|_| is_rep)
            .map(|d| d.run_path.clone())
            .filter(|p| p != DASH),
        test_exit_code: s.test_exit_code,
        task: None,
        agent: None,
        unmetered: None,
    }
}

/// An implementation's hidden tests as the gate of its representative sample.
fn gate_record(d: &Detail, sample: u32) -> GateRecord {
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
    GateRecord {
        model: d.implementation.clone(),
        sample,
        passed: !tests.is_empty() && passed == tests.len(),
        tests_passed: passed,
        tests_total: tests.len(),
        reason: tests
            .is_empty()
            .then(|| "no hidden tests in the dataset".to_string()),
        tests,
        task: None,
        sandbox: None,
    }
}

/// One judge's judgment of `model`. Its scores must be criteria of the rubric, on their scale,
/// its verdict one of the rubric's; without scores or verdict it is a dropout. `place` names it
/// in errors.
fn judgment_record(
    j: &DetailScore,
    model: &str,
    sample: u32,
    rubric: &RubricInfo,
    place: &str,
) -> Result<JudgmentRecord, ImportError> {
    let scores = scores_of(j, rubric, place)?;
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
    Ok(JudgmentRecord {
        judge: j.judge.clone(),
        model: model.to_string(),
        sample,
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
        throttled_ms: 0,
        measured: false,
        task: None,
    })
}

/// A judgment's score of every criterion of the rubric (null where it gave none); a key that is
/// no criterion, or a score off its scale, refuses the import.
fn scores_of(
    j: &DetailScore,
    rubric: &RubricInfo,
    place: &str,
) -> Result<BTreeMap<String, Option<f64>>, ImportError> {
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
    Ok(rubric
        .criteria
        .iter()
        .map(|c| {
            (
                c.id.clone(),
                j.scores.get(&c.id).copied().flatten().map(|n| n.0),
            )
        })
        .collect())
}

/// Judging cost: where the dataset has numbers, the judge's totals go on its first judgment, and
/// all its judgments count as measured.
fn add_judging_cost(
    r: &DatasetRound,
    judgments: &mut [JudgmentRecord],
    at: &str,
) -> Result<(), ImportError> {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
