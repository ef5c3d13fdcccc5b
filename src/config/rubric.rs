//! A rubric: criteria with scales and weights, hard-fail checks, verdicts best to worst. Read from
//! `rubrics/*.toml` (or `.yaml`); the judge prompt, the answer schema and the report columns all
//! follow it.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::base::diag::Diag;
use crate::config::check::section;
use crate::source::{KeyPath, SourceDoc};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRubric {
    name: String,
    description: Option<String>,
    aggregation: Option<String>,
    criteria: Vec<serde_json::Value>,
    #[serde(default)]
    checks: Vec<serde_json::Value>,
    verdicts: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCriterion {
    id: String,
    label: String,
    min: f64,
    max: f64,
    #[serde(default = "one")]
    weight: f64,
    #[serde(default)]
    guidance: String,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    id: String,
    description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    Median,
    Mean,
}

#[derive(Debug, Clone, Serialize)]
pub struct Criterion {
    pub id: String,
    pub label: String,
    pub min: f64,
    pub max: f64,
    pub weight: f64,
    pub guidance: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub id: String,
    pub description: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rubric {
    pub name: String,
    pub description: Option<String>,
    pub aggregation: Aggregation,
    pub criteria: Vec<Criterion>,
    pub checks: Vec<Check>,
    /// Best first.
    pub verdicts: Vec<String>,
    /// blake3 of the file's text, for cache keys.
    pub digest: String,
}

impl Rubric {
    /// The highest composite: the weighted sum of every criterion's maximum.
    pub fn composite_max(&self) -> f64 {
        self.criteria.iter().map(|c| c.weight * c.max).sum()
    }

    /// The JSON schema of a judge's answer under this rubric.
    pub fn answer_schema(&self) -> serde_json::Value {
        let scores: serde_json::Map<String, serde_json::Value> = self
            .criteria
            .iter()
            .map(|c| {
                (c.id.clone(), serde_json::json!({"type": "integer", "minimum": c.min, "maximum": c.max, "description": c.label}))
            })
            .collect();
        let checks: serde_json::Map<String, serde_json::Value> = self
            .checks
            .iter()
            .map(|c| (c.id.clone(), serde_json::json!({"type": "string", "enum": ["pass", "fail"], "description": c.description})))
            .collect();
        serde_json::json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["scores", "checks", "verdict", "note"],
            "properties": {
                "scores": {"type": "object", "additionalProperties": false, "required": self.criteria.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), "properties": scores},
                "checks": {"type": "object", "additionalProperties": false, "required": self.checks.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), "properties": checks},
                "verdict": {"type": "string", "enum": self.verdicts},
                "note": {"type": "string"}
            }
        })
    }

    pub fn load(file: &Path) -> Result<Self, Vec<Diag>> {
        let doc = SourceDoc::load(file).map_err(|d| vec![d])?;
        Self::from_doc(&doc)
    }

    /// A rubric from its text, located as `file` in every error (an embedded rubric file).
    pub fn parse(file: &Path, text: String) -> Result<Self, Vec<Diag>> {
        let doc = SourceDoc::parse(file, text).map_err(|d| vec![d])?;
        Self::from_doc(&doc)
    }

    fn from_doc(doc: &SourceDoc) -> Result<Self, Vec<Diag>> {
        let mut diags = doc.non_finite_errors();
        let Some(raw) = section::<RawRubric>(doc, &KeyPath::root(), "the rubric", &mut diags)
        else {
            return Err(diags);
        };
        let aggregation = aggregation(doc, raw.aggregation.as_deref(), &mut diags);
        let criteria = criteria(doc, raw.criteria.len(), &mut diags);
        let checks = checks(doc, raw.checks.len(), &mut diags);
        check_verdicts(doc, &raw.verdicts, &mut diags);
        if !diags.is_empty() {
            return Err(diags);
        }
        Ok(Self {
            name: raw.name,
            description: raw.description,
            aggregation,
            criteria,
            checks,
            verdicts: raw.verdicts,
            digest: blake3::hash(doc.text.as_bytes()).to_hex().to_string(),
        })
    }
}

/// `aggregation`: median when left out.
fn aggregation(doc: &SourceDoc, name: Option<&str>, diags: &mut Vec<Diag>) -> Aggregation {
    match name {
        None | Some("median") => Aggregation::Median,
        Some("mean") => Aggregation::Mean,
        Some(other) => {
            diags.push(
                doc.error_at(
                    &KeyPath::root().key("aggregation"),
                    format!("unknown aggregation `{other}`"),
                    false,
                )
                .help("use `median` (published peer rounds) or `mean` (Multivac-style rounds)"),
            );
            Aggregation::Median
        }
    }
}

/// The `count` criteria of the file: each well-formed, ids unique, not all weighing 0.
fn criteria(doc: &SourceDoc, count: usize, diags: &mut Vec<Diag>) -> Vec<Criterion> {
    let root = KeyPath::root();
    let mut criteria = Vec::new();
    // The index in the file of every criterion id read so far.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for i in 0..count {
        let at = root.key("criteria").index(i);
        let Some(c) = section::<RawCriterion>(doc, &at, "a criterion", diags) else {
            continue;
        };
        check_criterion(doc, &at, &c, diags);
        if let Some(first) = seen.get(&c.id) {
            diags.push(
                doc.error_at(
                    &at.key("id"),
                    format!("duplicate criterion id `{}`", c.id),
                    false,
                )
                .help(format!(
                    "criterion ids must be unique within a rubric; `criteria[{first}]` already uses `{}`",
                    c.id
                )),
            );
        }
        seen.entry(c.id.clone()).or_insert(i);
        criteria.push(Criterion {
            id: c.id,
            label: c.label,
            min: c.min,
            max: c.max,
            weight: c.weight,
            guidance: c.guidance,
        });
    }
    if count == 0 {
        diags.push(doc.error_at(
            &root.key("criteria"),
            "a rubric needs at least one criterion",
            false,
        ));
    } else if criteria.len() == count && criteria.iter().all(|c| c.weight == 0.0) {
        diags.push(
            doc.error_at(
                &root.key("criteria"),
                "every criterion has weight 0: the composite score of every implementation would be 0",
                true,
            )
            .help("give at least one criterion a weight above 0 (a criterion without `weight` counts 1)"),
        );
    }
    criteria
}

/// One criterion's scale runs upwards and its weight is 0 or more.
fn check_criterion(doc: &SourceDoc, at: &KeyPath, c: &RawCriterion, diags: &mut Vec<Diag>) {
    if c.min >= c.max {
        diags.push(
            doc.error_at(
                &at.key("max"),
                format!(
                    "criterion `{}` has an inverted scale: min {} is not below max {}",
                    c.id, c.min, c.max
                ),
                false,
            )
            .help("a scale runs from `min` (worst) up to `max` (best)"),
        );
    }
    if !(c.weight.is_finite() && c.weight >= 0.0) {
        diags.push(
            doc.error_at(
                &at.key("weight"),
                format!("criterion `{}` has a negative weight ({})", c.id, c.weight),
                false,
            )
            .help("a weight is how much the criterion counts in the composite: 0 or more"),
        );
    }
}

/// The `count` pass/fail checks of the file.
fn checks(doc: &SourceDoc, count: usize, diags: &mut Vec<Diag>) -> Vec<Check> {
    (0..count)
        .filter_map(|i| {
            section::<RawCheck>(
                doc,
                &KeyPath::root().key("checks").index(i),
                "a check",
                diags,
            )
        })
        .map(|c| Check {
            id: c.id,
            description: c.description,
        })
        .collect()
}

/// At least one verdict, none listed twice.
fn check_verdicts(doc: &SourceDoc, verdicts: &[String], diags: &mut Vec<Diag>) {
    let root = KeyPath::root();
    if verdicts.is_empty() {
        diags.push(
            doc.error_at(
                &root.key("verdicts"),
                "a rubric needs at least one verdict",
                false,
            )
            .help("list verdicts best to worst"),
        );
    }
    let mut seen: HashSet<&str> = HashSet::new();
    for (i, v) in verdicts.iter().enumerate() {
        if !seen.insert(v) {
            diags.push(doc.error_at(
                &root.key("verdicts").index(i),
                format!("duplicate verdict `{v}`"),
                false,
            ));
        }
    }
}
