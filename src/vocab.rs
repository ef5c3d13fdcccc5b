//! The words every phase shares about a model call: its sampling parameters, the tokens it used
//! and what tokens cost. The pipeline declares them, providers report them, stages and the
//! aggregate add them up.

use serde::{Deserialize, Serialize};

/// Sampling parameters, recorded with every call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

/// Token usage of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_read_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
    pub fn add(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
    }
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Price {
    #[serde(default)]
    pub input: f64,
    #[serde(default)]
    pub output: f64,
    /// Price of input tokens served from the endpoint's prompt cache; defaults to `input`.
    #[serde(default)]
    pub cache_read: Option<f64>,
}

impl Price {
    /// Cost in USD of one call's usage. Cache-read tokens are a subset of input tokens, as the
    /// OpenAI-compatible APIs count them.
    pub fn cost(&self, usage: Usage) -> f64 {
        let cached = usage.cache_read_tokens.min(usage.input_tokens);
        let fresh = usage.input_tokens - cached;
        let cache_price = self.cache_read.unwrap_or(self.input);
        (fresh as f64 * self.input
            + cached as f64 * cache_price
            + usage.output_tokens as f64 * self.output)
            / 1_000_000.0
    }
}

/// For `skip_serializing_if`: a count that is zero is left out.
#[allow(clippy::trivially_copy_pass_by_ref)]
pub fn is_zero(n: &u64) -> bool {
    *n == 0
}
