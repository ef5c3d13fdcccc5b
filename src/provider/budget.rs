//! Spending caps: `max_cost_usd` of the round and of each model.
//!
//! The ledger starts from what the round's kept results cost (the builds and judgments a run
//! reuses, [`Budget::seed`]) and adds the cost of every call as it answers, failed attempts'
//! billed tokens included. A call starts only while the round and its model are under their
//! caps; calls already in flight when a cap is reached finish, so the round may end a few calls
//! past it. The cap is no input of any node: raising it lets the next run start the calls that
//! were refused, and nothing else changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::config::Pipeline;
use crate::vocab::{Price, Usage};

/// The round's spending caps and what has been spent against them.
#[derive(Debug)]
pub struct Budget {
    round_cap: Option<f64>,
    model_caps: HashMap<String, f64>,
    prices: HashMap<String, Price>,
    spent: Mutex<Spent>,
}

#[derive(Debug, Default, Clone)]
struct Spent {
    total: f64,
    by_model: BTreeMap<String, f64>,
}

impl Budget {
    /// The caps of a pipeline; none when it sets no cap (nothing to count).
    pub fn of(pipeline: &Pipeline) -> Option<Self> {
        let model_caps: HashMap<String, f64> = pipeline
            .models
            .iter()
            .filter_map(|m| Some((m.id.to_string(), m.max_cost_usd?)))
            .collect();
        if pipeline.round.max_cost_usd.is_none() && model_caps.is_empty() {
            return None;
        }
        Some(Self {
            round_cap: pipeline.round.max_cost_usd,
            model_caps,
            prices: pipeline
                .models
                .iter()
                .map(|m| (m.id.to_string(), m.price))
                .collect(),
            spent: Mutex::new(Spent::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Spent> {
        self.spent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts what a kept result of `model` cost (a result an earlier run paid for).
    pub fn seed(&self, model: &str, usd: f64) {
        if usd.is_finite() && usd > 0.0 {
            let mut s = self.lock();
            s.total += usd;
            *s.by_model.entry(model.to_string()).or_default() += usd;
        }
    }

    /// Whether a call of `model` may start; why not when a cap is reached.
    pub fn admit(&self, model: &str) -> Result<(), String> {
        let s = self.lock();
        if let Some(cap) = self.round_cap
            && s.total >= cap
        {
            return Err(format!(
                "the round's max_cost_usd (${cap:.4}) is reached: ${:.4} spent",
                s.total
            ));
        }
        if let Some(cap) = self.model_caps.get(model) {
            let mine = s.by_model.get(model).copied().unwrap_or(0.0);
            if mine >= *cap {
                return Err(format!(
                    "model `{model}`'s max_cost_usd (${cap:.4}) is reached: ${mine:.4} spent"
                ));
            }
        }
        Ok(())
    }

    /// Counts a call's usage at `model`'s price.
    pub fn spend(&self, model: &str, usage: Usage) {
        let usd = self
            .prices
            .get(model)
            .copied()
            .unwrap_or_default()
            .cost(usage);
        self.seed(model, usd);
    }

    /// Spent in all, and per model.
    pub fn spent(&self) -> (f64, BTreeMap<String, f64>) {
        let s = self.lock().clone();
        (s.total, s.by_model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(round: Option<f64>, alpha: Option<f64>) -> Budget {
        Budget {
            round_cap: round,
            model_caps: alpha
                .map(|c| ("alpha".to_string(), c))
                .into_iter()
                .collect(),
            prices: [("alpha", 10.0), ("bravo", 1.0)]
                .into_iter()
                .map(|(m, p)| {
                    (
                        m.to_string(),
                        Price {
                            input: p,
                            output: p,
                            cache_read: None,
                        },
                    )
                })
                .collect(),
            spent: Mutex::new(Spent::default()),
        }
    }

    /// 100,000 tokens: $1 at alpha's price, $0.10 at bravo's.
    fn tokens() -> Usage {
        Usage {
            input_tokens: 50_000,
            output_tokens: 50_000,
            cache_read_tokens: 0,
        }
    }

    #[test]
    fn the_round_cap_stops_every_model_once_reached() {
        let b = budget(Some(1.5), None);
        b.admit("alpha").unwrap();
        b.spend("alpha", tokens());
        b.admit("bravo").unwrap();
        b.spend("alpha", tokens());
        let why = b.admit("bravo").unwrap_err();
        assert_eq!(
            why,
            "the round's max_cost_usd ($1.5000) is reached: $2.0000 spent"
        );
        assert_eq!(b.spent().0, 2.0);
    }

    #[test]
    fn a_model_cap_stops_that_model_only() {
        let b = budget(None, Some(0.5));
        b.spend("alpha", tokens());
        assert!(b.admit("alpha").unwrap_err().contains("model `alpha`"));
        for _ in 0..100 {
            b.spend("bravo", tokens());
        }
        b.admit("bravo").unwrap();
    }

    #[test]
    fn kept_results_count_and_a_zero_cap_starts_nothing() {
        let b = budget(Some(3.0), None);
        b.seed("bravo", 3.0);
        assert!(b.admit("alpha").is_err());
        let b = budget(Some(0.0), None);
        assert!(b.admit("bravo").is_err());
        // Nonsense amounts are not counted.
        let b = budget(Some(1.0), None);
        b.seed("bravo", f64::NAN);
        b.seed("bravo", -5.0);
        b.admit("bravo").unwrap();
    }
}
