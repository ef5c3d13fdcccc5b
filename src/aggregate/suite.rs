//! A suite's numbers: per task and model how many samples passed their gate, each model's overall
//! pass rate, and pass@k by the unbiased estimator of Chen et al. (2021), averaged over tasks.
//! Pure functions of [`RoundData`] whose builds and gates carry their task.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::composite::{composite_of, is_peer};
use super::data::{JudgmentRecord, RoundData};
use crate::base::stats::mean;

/// The suite section of `aggregate.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Suite {
    pub tasks: Vec<String>,
    /// Samples per (task, model): the `n` of pass@k.
    pub samples: u32,
    /// The k reported: 1, 5, 10 and 100 where at most `samples`, and `samples` itself.
    pub ks: Vec<u32>,
    /// Best overall pass rate first.
    pub models: Vec<SuiteModel>,
    /// The round's model order: the columns of `per_task`.
    pub model_order: Vec<String>,
    pub per_task: Vec<TaskRow>,
    /// The rubric's composite maximum, when the suite was peer-judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composite_max: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SuiteModel {
    pub model: String,
    pub slug: String,
    /// Implementations (task, sample) whose gate passed, out of `implementations`.
    pub passed: usize,
    pub implementations: usize,
    pub pass_rate: f64,
    /// Tasks with at least one passing sample.
    pub tasks_solved: usize,
    /// `pass@k` by k, the mean over tasks of the unbiased estimator.
    pub pass_at: BTreeMap<u32, f64>,
    pub tests_passed: usize,
    pub tests_total: usize,
    /// Builds that produced no implementation (rejected answers, failed agents).
    pub builds_failed: usize,
    pub cost_usd: f64,
    /// Cost over passing implementations; none when nothing passed.
    pub cost_per_pass_usd: Option<f64>,
    /// Peer-judged suites: the mean over the model's judged implementations (task x sample) of
    /// each one's composite (the rubric's aggregation over its peer judges, self excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_score: Option<f64>,
    /// Implementations with a peer composite.
    #[serde(default)]
    pub judged: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskRow {
    pub task: String,
    /// Per model, in the round's model order: samples passed (`c` of pass@k).
    pub passed: Vec<u32>,
    /// Per model: the mean peer composite of its samples of this task (peer-judged suites).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_score: Vec<Option<f64>>,
}

/// The unbiased pass@k estimator, `1 - C(n-c, k) / C(n, k)`, in the numerically stable product
/// form `1 - prod_{i=n-c+1..=n} (1 - k/i)`: no binomials, no overflow at large `n`.
///
/// `n` samples of which `c` are correct; `k <= n`.
pub fn pass_at_k(n: u32, c: u32, k: u32) -> f64 {
    assert!(
        c <= n && k >= 1 && k <= n,
        "pass@k needs c <= n and 1 <= k <= n"
    );
    if n - c < k {
        return 1.0;
    }
    let prod: f64 = (n - c + 1..=n)
        .map(|i| 1.0 - f64::from(k) / f64::from(i))
        .product();
    1.0 - prod
}

/// The suite section; `None` when no build or gate names a task (a round of one task).
pub fn compute(d: &RoundData) -> Option<Suite> {
    let tasks = tasks_of(d);
    if tasks.is_empty() {
        return None;
    }
    let n = d.samples;
    let ks = ks_for(n);
    let passed = |task: &str, model: &str| -> u32 {
        let c = d
            .gates
            .iter()
            .filter(|g| g.task.as_deref() == Some(task) && g.model == model && g.passed)
            .count();
        u32::try_from(c).unwrap_or(u32::MAX).min(n)
    };
    let judged = !d.judgments.is_empty();
    // The peer composite of one implementation; none when its build failed or no peer scored it.
    let composite = |task: &str, model: &str, sample: u32| -> Option<f64> {
        let built = d.builds.iter().any(|b| {
            b.task.as_deref() == Some(task) && b.model == model && b.sample == sample && b.ok
        });
        let peers: Vec<&JudgmentRecord> = d
            .judgments
            .iter()
            .filter(|j| {
                j.task.as_deref() == Some(task)
                    && j.model == model
                    && j.sample == sample
                    && is_peer(j)
            })
            .collect();
        (built && !peers.is_empty())
            .then(|| composite_of(&peers, &d.rubric))
            .flatten()
    };
    let composites = |task: &str, model: &str| -> Vec<f64> {
        (1..=n).filter_map(|s| composite(task, model, s)).collect()
    };
    let per_task: Vec<TaskRow> = tasks
        .iter()
        .map(|t| TaskRow {
            task: t.clone(),
            passed: d.models.iter().map(|m| passed(t, &m.id)).collect(),
            peer_score: if judged {
                d.models
                    .iter()
                    .map(|m| mean(&composites(t, &m.id)))
                    .collect()
            } else {
                Vec::new()
            },
        })
        .collect();
    let mut models: Vec<SuiteModel> = d
        .models
        .iter()
        .enumerate()
        .map(|(mi, m)| {
            let cs: Vec<u32> = per_task.iter().map(|r| r.passed[mi]).collect();
            let pass_at = ks
                .iter()
                .map(|&k| {
                    let sum: f64 = cs.iter().map(|&c| pass_at_k(n, c, k)).sum();
                    (k, sum / cs.len() as f64)
                })
                .collect();
            let gates = d.gates.iter().filter(|g| g.model == m.id);
            let passed: usize = cs.iter().map(|c| *c as usize).sum();
            let implementations = tasks.len() * n as usize;
            let cost_usd: f64 = d
                .builds
                .iter()
                .filter(|b| b.model == m.id)
                .map(|b| b.cost_usd)
                .sum();
            let all: Vec<f64> = tasks.iter().flat_map(|t| composites(t, &m.id)).collect();
            SuiteModel {
                peer_score: if judged { mean(&all) } else { None },
                judged: all.len(),
                model: m.id.clone(),
                slug: m.slug.clone(),
                passed,
                implementations,
                pass_rate: passed as f64 / implementations as f64,
                tasks_solved: cs.iter().filter(|c| **c > 0).count(),
                pass_at,
                tests_passed: gates.clone().map(|g| g.tests_passed).sum(),
                tests_total: gates.map(|g| g.tests_total).sum(),
                builds_failed: d.builds.iter().filter(|b| b.model == m.id && !b.ok).count(),
                cost_usd,
                cost_per_pass_usd: (passed > 0).then(|| cost_usd / passed as f64),
            }
        })
        .collect();
    // Ties on the pass rate go to the model that solves more tasks at the largest k.
    let at_n = |m: &SuiteModel| m.pass_at.get(&n).copied().unwrap_or(0.0);
    models.sort_by(|a, b| {
        b.pass_rate
            .total_cmp(&a.pass_rate)
            .then_with(|| at_n(b).total_cmp(&at_n(a)))
            .then_with(|| a.model.cmp(&b.model))
    });
    Some(Suite {
        tasks,
        samples: n,
        ks,
        models,
        model_order: d.models.iter().map(|m| m.id.clone()).collect(),
        per_task,
        composite_max: judged.then(|| d.rubric.composite_max()),
    })
}

/// The tasks the builds and gates name, in the order they first appear.
fn tasks_of(d: &RoundData) -> Vec<String> {
    let mut tasks: Vec<String> = Vec::new();
    for t in d
        .builds
        .iter()
        .filter_map(|b| b.task.as_ref())
        .chain(d.gates.iter().filter_map(|g| g.task.as_ref()))
    {
        if !tasks.contains(t) {
            tasks.push(t.clone());
        }
    }
    tasks
}

/// The k of pass@k reported for `n` samples: 1, 5, 10 and 100 where at most `n`, and `n`.
fn ks_for(n: u32) -> Vec<u32> {
    let mut ks: Vec<u32> = [1, 5, 10, 100].into_iter().filter(|k| *k <= n).collect();
    if !ks.contains(&n) {
        ks.push(n);
    }
    ks
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The estimator by its definition, with exact binomials (small n only).
    fn by_binomials(n: u32, c: u32, k: u32) -> f64 {
        fn choose(n: u32, k: u32) -> f64 {
            if k > n {
                return 0.0;
            }
            (0..k).fold(1.0, |acc, i| acc * f64::from(n - i) / f64::from(i + 1))
        }
        1.0 - choose(n - c, k) / choose(n, k)
    }

    #[test]
    fn pass_at_k_matches_the_definition() {
        for n in 1..=12 {
            for c in 0..=n {
                for k in 1..=n {
                    let (a, b) = (pass_at_k(n, c, k), by_binomials(n, c, k));
                    assert!((a - b).abs() < 1e-12, "n={n} c={c} k={k}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn pass_at_k_edges() {
        assert_eq!(pass_at_k(10, 0, 1), 0.0);
        assert_eq!(pass_at_k(10, 10, 1), 1.0);
        // pass@1 is the fraction correct.
        assert!((pass_at_k(10, 3, 1) - 0.3).abs() < 1e-12);
        // Any k larger than the failures guarantees a pass.
        assert_eq!(pass_at_k(10, 8, 3), 1.0);
    }

    #[test]
    fn pass_at_k_is_stable_where_binomials_overflow() {
        // C(1000, 500) overflows f64; the product form does not.
        let v = pass_at_k(1000, 1, 500);
        assert!((v - 0.5).abs() < 1e-9, "{v}");
        let v = pass_at_k(200, 50, 100);
        assert!(v > 0.999_999 && v <= 1.0, "{v}");
    }

    proptest::proptest! {
        #[test]
        fn pass_at_k_is_a_probability_rising_in_k_and_c(n in 1u32..300, c_frac in 0.0f64..=1.0, k_frac in 0.0f64..=1.0) {
            let c = ((f64::from(n) * c_frac) as u32).min(n);
            let k = ((f64::from(n) * k_frac) as u32).clamp(1, n);
            let v = pass_at_k(n, c, k);
            proptest::prop_assert!((0.0..=1.0).contains(&v));
            if k < n {
                proptest::prop_assert!(pass_at_k(n, c, k + 1) >= v - 1e-12);
            }
            if c < n {
                proptest::prop_assert!(pass_at_k(n, c + 1, k) >= v - 1e-12);
            }
        }
    }
}
