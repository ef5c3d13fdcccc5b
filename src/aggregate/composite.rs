//! An implementation's composite score from its judgments, as the rubric aggregates them: the
//! rubric-weighted sum of per-criterion medians, or the mean of the judgments' own composites.
//! Shared by the round's numbers ([`super::compute`]), the suite's and the bootstrap.

use super::data::{JudgmentRecord, RubricInfo, Tier};
use crate::base::stats::{mean, median};
use crate::config::rubric::Aggregation;

/// An implementation's composite from a set of judgments (with repeats, for the bootstrap).
pub(crate) fn composite_of(rows: &[&JudgmentRecord], rubric: &RubricInfo) -> Option<f64> {
    let scored: Vec<Scored> = rows.iter().map(|j| Scored::of(j, rubric)).collect();
    composite_of_scored(&scored.iter().collect::<Vec<_>>(), rubric)
}

/// What [`composite_of`] reads of a judgment: its composite and its score per criterion (in the
/// rubric's order), compact, so the bootstrap's thousands of draws read them from one array.
#[derive(Debug, Clone)]
pub(crate) struct Scored {
    composite: Option<f64>,
    scores: Vec<Option<f64>>,
}

impl Scored {
    pub(crate) fn of(j: &JudgmentRecord, rubric: &RubricInfo) -> Self {
        Self {
            composite: j.composite(&rubric.criteria),
            scores: rubric
                .criteria
                .iter()
                .map(|c| j.scores.get(&c.id).copied().flatten())
                .collect(),
        }
    }
}

/// [`composite_of`] over judgments already [`Scored`].
pub(crate) fn composite_of_scored(rows: &[&Scored], rubric: &RubricInfo) -> Option<f64> {
    match rubric.aggregation {
        Aggregation::Median => {
            if rubric.criteria.is_empty() {
                return None;
            }
            rubric
                .criteria
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let v: Vec<f64> = rows.iter().filter_map(|r| r.scores[i]).collect();
                    median(&v).map(|m| m * c.weight)
                })
                .sum()
        }
        Aggregation::Mean => {
            let v: Vec<f64> = rows.iter().filter_map(|r| r.composite).collect();
            mean(&v)
        }
    }
}

pub(crate) fn is_peer(j: &JudgmentRecord) -> bool {
    j.tier == Tier::Peer && j.dropout.is_none()
}
