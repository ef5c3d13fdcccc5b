//! What one build has spent through its gateway, and the build's limits: requests, tokens,
//! cost and wall time. A request is admitted while every limit still has room; the call it
//! starts may overshoot a token or cost limit, as a call in flight is never cut off. Past a
//! limit every later request is refused, and the build's outcome is `budget`.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::GatewayLimits;
use crate::provider::ChatResponse;
use crate::vocab::{Price, Usage};

/// A build's gateway, as `build.json` keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Requests answered by the endpoint.
    pub requests: u32,
    /// Requests refused: past a limit, malformed, or not answered by the endpoint.
    #[serde(default)]
    pub refused: u32,
    /// The limit the build reached, in words; none when it stayed within them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// Time the calls took, retries included, and the time spent throttled, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub throttled_ms: u64,
}

/// The running account of one build's gateway.
#[derive(Debug)]
pub struct Meter {
    limits: GatewayLimits,
    price: Option<Price>,
    start: Instant,
    pub usage: Usage,
    pub cost_usd: f64,
    pub report: Report,
    /// Requests admitted so far: the next one's turn in the recording.
    admitted: usize,
}

impl Meter {
    pub fn new(limits: GatewayLimits, price: Option<Price>) -> Self {
        Self {
            limits,
            price,
            start: Instant::now(),
            usage: Usage::default(),
            cost_usd: 0.0,
            report: Report::default(),
            admitted: 0,
        }
    }

    /// Admits one more request, giving its turn; or refuses it, naming the limit reached.
    pub fn admit(&mut self) -> Result<usize, String> {
        if let Some(limit) = &self.report.limit {
            self.report.refused += 1;
            return Err(limit.clone());
        }
        let reached = self.reached();
        if let Some(limit) = reached {
            self.report.refused += 1;
            self.report.limit = Some(limit.clone());
            return Err(limit);
        }
        self.admitted += 1;
        Ok(self.admitted - 1)
    }

    fn reached(&self) -> Option<String> {
        let l = &self.limits;
        if self.admitted >= l.max_requests as usize {
            return Some(format!(
                "the build's limit of {} requests is reached",
                l.max_requests
            ));
        }
        if let Some(max) = l.max_tokens
            && self.usage.total() >= max
        {
            return Some(format!(
                "the build's limit of {max} tokens is reached ({} used)",
                self.usage.total()
            ));
        }
        if let Some(max) = l.max_cost_usd
            && self.cost_usd >= max
        {
            return Some(format!(
                "the build's limit of ${max} is reached (${:.4} spent)",
                self.cost_usd
            ));
        }
        if let Some(max) = l.max_wall_secs
            && self.start.elapsed() >= Duration::from_secs(max)
        {
            return Some(format!("the build's wall-time limit of {max}s is reached"));
        }
        None
    }

    /// Counts an answer.
    pub fn answered(&mut self, r: &ChatResponse) {
        self.spend(r.usage);
        self.report.requests += 1;
        self.report.latency_ms += r.latency_ms;
        self.report.attempts += r.attempts;
        self.report.throttled_ms += r.throttled_ms;
    }

    /// Counts usage (an answer's, or what failed attempts reported).
    pub fn spend(&mut self, usage: Usage) {
        self.usage.add(usage);
        if let Some(p) = self.price {
            self.cost_usd += p.cost(usage);
        }
    }

    /// Counts a request that got no answer.
    pub fn refused(&mut self) {
        self.report.refused += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> GatewayLimits {
        GatewayLimits {
            max_requests: 3,
            max_tokens: Some(100),
            max_cost_usd: Some(1.0),
            max_wall_secs: None,
        }
    }

    fn answer(tokens: u64) -> ChatResponse {
        ChatResponse {
            content: String::new(),
            usage: Usage {
                input_tokens: tokens,
                output_tokens: 0,
                cache_read_tokens: 0,
            },
            latency_ms: 2,
            attempts: 1,
            tool_calls: Vec::new(),
            finish_reason: None,
            throttled_ms: 0,
        }
    }

    #[test]
    fn requests_are_counted_and_the_limit_refuses_the_next_one() {
        let mut m = Meter::new(limits(), None);
        for turn in 0..3 {
            assert_eq!(m.admit(), Ok(turn));
            m.answered(&answer(1));
        }
        let e = m.admit().unwrap_err();
        assert!(e.contains("limit of 3 requests"), "{e}");
        // Once reached, it stays reached.
        assert_eq!(m.admit().unwrap_err(), e);
        assert_eq!(m.report.refused, 2);
        assert_eq!(m.report.requests, 3);
        assert_eq!(m.report.latency_ms, 6);
    }

    #[test]
    fn a_call_may_overshoot_tokens_and_cost_but_the_next_is_refused() {
        let mut m = Meter::new(limits(), None);
        m.admit().unwrap();
        m.answered(&answer(250));
        assert!(
            m.admit()
                .unwrap_err()
                .contains("100 tokens is reached (250 used)")
        );

        let price = Price {
            input: 1_000_000.0,
            output: 0.0,
            cache_read: None,
        };
        let mut m = Meter::new(
            GatewayLimits {
                max_tokens: None,
                ..limits()
            },
            Some(price),
        );
        m.admit().unwrap();
        m.answered(&answer(2));
        assert!((m.cost_usd - 2.0).abs() < 1e-9);
        assert!(m.admit().unwrap_err().contains("limit of $1 is reached"));
    }

    #[test]
    fn wall_time_counts_from_the_start() {
        let mut m = Meter::new(
            GatewayLimits {
                max_wall_secs: Some(0),
                ..limits()
            },
            None,
        );
        assert!(m.admit().unwrap_err().contains("wall-time limit of 0s"));
    }
}
