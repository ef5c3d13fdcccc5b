//! Multivac evaluation files as round data: `pipe import multivac`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::checks::{check_score, file_name, safe_name};
use super::error::{ImportError, input, read_json};
use super::round_dir::write_round;
use super::rubrics;
use crate::aggregate::{
    BootstrapConfig, BuildRecord, JudgmentRecord, ModelInfo, RoundData, RubricInfo, Tier,
};
use crate::base::fsutil;
use crate::base::names::{SafeName, shown};
use crate::vocab::Usage;

/// `pipe import multivac FILE --out DIR`: one round directory, `DIR/<question_id>-<date>`.
pub fn import(file: &Path, out: &Path) -> Result<PathBuf, ImportError> {
    let e: Evaluation = read_json(file)?;
    check_multivac_names(file, &e)?;
    let rubric = rubrics::MULTIVAC.or_local()?;
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

/// A Multivac evaluation as round data: one sample per model, each judgment's `weighted_score` as
/// its composite; a missing (judge, respondent) pair of two different models is a dropout.
pub fn round_data_from_multivac(
    e: &Evaluation,
    rubric: &RubricInfo,
    source: &str,
    file: &Path,
) -> Result<RoundData, ImportError> {
    let at = file.display().to_string();
    let date = e.timestamp.get(..10).unwrap_or_default();
    if date.parse::<jiff::civil::Date>().is_err() {
        return Err(input(format!(
            "{at}: timestamp `{}` does not start with a YYYY-MM-DD date",
            e.timestamp
        )));
    }
    let models = models_of(e, &at)?;
    let mut judgments = given_judgments(e, rubric, &at)?;
    judgments.extend(missing_judgments(&models, &judgments, rubric));
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
            throttled_ms: 0,
            loc: None,
            run_path: None,
            test_exit_code: None,
            task: None,
            agent: None,
            unmetered: None,
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

/// The models used, each once; its slug is `provider/name` where the file gives both.
fn models_of(e: &Evaluation, at: &str) -> Result<Vec<ModelInfo>, ImportError> {
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
    Ok(models)
}

/// The file's judgments: between models it uses, each pair once, a weighted score on the
/// rubric's composite scale. A model judging itself is a self-judgment.
fn given_judgments(
    e: &Evaluation,
    rubric: &RubricInfo,
    at: &str,
) -> Result<Vec<JudgmentRecord>, ImportError> {
    let known: HashSet<&str> = e.models_used.iter().map(|m| m.id.as_str()).collect();
    let mut judgments: Vec<JudgmentRecord> = Vec::new();
    let mut judged: HashSet<(&str, &str)> = HashSet::new();
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
            tier: if j.judge_key == j.respondent_key {
                Tier::SelfJudge
            } else {
                Tier::Peer
            },
            weighted: Some(j.weighted_score),
            note: j.brief_justification.clone(),
            ..unscored(&j.judge_key, &j.respondent_key, rubric)
        });
    }
    Ok(judgments)
}

/// A dropout for every (judge, respondent) pair of two different models that `given` lacks.
fn missing_judgments(
    models: &[ModelInfo],
    given: &[JudgmentRecord],
    rubric: &RubricInfo,
) -> Vec<JudgmentRecord> {
    let judged: HashSet<(&str, &str)> = given
        .iter()
        .map(|j| (j.judge.as_str(), j.model.as_str()))
        .collect();
    let mut missing = Vec::new();
    for judge in models {
        for respondent in models {
            if judge.id != respondent.id
                && !judged.contains(&(judge.id.as_str(), respondent.id.as_str()))
            {
                missing.push(JudgmentRecord {
                    dropout: Some("no judgment in the Multivac file".into()),
                    ..unscored(&judge.id, &respondent.id, rubric)
                });
            }
        }
    }
    missing
}

/// A peer judgment of sample 1 with every criterion null and nothing else said.
fn unscored(judge: &str, model: &str, rubric: &RubricInfo) -> JudgmentRecord {
    JudgmentRecord {
        judge: judge.to_string(),
        model: model.to_string(),
        sample: 1,
        tier: Tier::Peer,
        scores: rubric
            .criteria
            .iter()
            .map(|c| (c.id.clone(), None))
            .collect::<BTreeMap<String, Option<f64>>>(),
        weighted: None,
        hard_fail_pass: None,
        verdict: None,
        note: None,
        dropout: None,
        infrastructure: false,
        usage: Usage::default(),
        cost_usd: 0.0,
        wall_ms: 0,
        throttled_ms: 0,
        measured: false,
        task: None,
    }
}
