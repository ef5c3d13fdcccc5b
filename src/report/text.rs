//! The words and numbers every report writes the same way: the missing-value dash, wall times,
//! token counts, money, tier names, truncation, the sandbox sentences and the facts of the
//! headline. The markdown report, the HTML page, the dataset and the terminal table all use these.

use std::fmt::Display;

/// How a node a spending cap kept from its model call is labelled (the store's
/// [`crate::store::FailureKind::Budget`]).
pub const BUDGET_LABEL: &str = "skipped (budget)";

use crate::aggregate::{Aggregate, ImplRow, Tier, num};
use crate::config::rubric::Aggregation;

/// The missing-value mark (U+2014).
pub const DASH: &str = "\u{2014}";

/// The value, or the dash.
pub fn or_dash<T: Display>(x: Option<T>) -> String {
    x.map_or_else(|| DASH.to_string(), |v| v.to_string())
}

/// The text, or the dash.
pub fn str_or_dash(x: Option<&str>) -> &str {
    x.unwrap_or(DASH)
}

/// `places` decimals, or the dash.
pub fn fixed(x: Option<f64>, places: usize) -> String {
    x.map_or_else(|| DASH.to_string(), |v| format!("{v:.places$}"))
}

/// [`num`] (whole numbers without decimals, else at most two), or the dash.
pub fn number(x: Option<f64>) -> String {
    x.map_or_else(|| DASH.to_string(), num)
}

/// One decimal at most, as [`num`] writes it (`8`, `7.5`).
pub fn num1(x: f64) -> String {
    num((x * 10.0).round() / 10.0)
}

/// One decimal with a `+` when positive (`+1.5`, `-0.5`), or the dash.
pub fn signed(x: Option<f64>) -> String {
    match x {
        None => DASH.to_string(),
        Some(v) if v > 0.0 => format!("+{v:.1}"),
        Some(v) => format!("{v:.1}"),
    }
}

/// As [`num`] writes it with a `+` when positive and a true minus sign when negative.
pub fn signed_number(x: Option<f64>) -> String {
    match x {
        None => DASH.to_string(),
        Some(v) if v > 0.0 => format!("+{}", num(v)),
        Some(v) => num(v).replace('-', "\u{2212}"),
    }
}

/// `7.5–9.0`: an interval with one decimal, or the dash.
pub fn interval(ci: Option<[f64; 2]>) -> String {
    ci.map_or_else(
        || DASH.to_string(),
        |[lo, hi]| format!("{lo:.1}\u{2013}{hi:.1}"),
    )
}

/// `2m05s`: whole seconds, floored.
pub fn wall(ms: u64) -> String {
    let s = ms / 1000;
    format!("{}m{:02}s", s / 60, s % 60)
}

/// `950`, `12.3k`: thousands with one decimal.
pub fn tokens_k(n: u64) -> String {
    if n >= 1000 {
        format!("{:.1}k", n as f64 / 1000.0)
    } else {
        n.to_string()
    }
}

/// `950`, `12.3k`, `1.25M`.
pub fn tokens(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.2}M", n as f64 / 1e6)
    } else {
        tokens_k(n)
    }
}

/// `$0`, `$0.0043` under a dollar, `$12.50` from one dollar up.
pub fn usd(x: f64) -> String {
    if x == 0.0 {
        "$0".to_string()
    } else if x.abs() < 1.0 {
        format!("${x:.4}")
    } else {
        format!("${x:.2}")
    }
}

/// `$0.0043`: four decimals, or the dash.
pub fn usd4(x: Option<f64>) -> String {
    x.map_or_else(|| DASH.to_string(), |c| format!("${c:.4}"))
}

/// `$0.0043`: cost per passed hidden test, 4 decimals; the dash when no test passed.
pub fn cost_per_test(cost_usd: f64, tests_passed: usize) -> String {
    usd4((tests_passed > 0).then(|| cost_usd / tests_passed as f64))
}

pub fn tier_name(t: Tier) -> &'static str {
    match t {
        Tier::SelfJudge => "self",
        Tier::Peer => "peer",
        Tier::Expert => "expert",
    }
}

pub fn aggregation_name(a: Aggregation) -> &'static str {
    match a {
        Aggregation::Median => "median",
        Aggregation::Mean => "mean",
    }
}

/// `pass`, `fail`, or the dash.
pub fn pass_fail(x: Option<bool>) -> &'static str {
    x.map_or(DASH, |p| if p { "pass" } else { "fail" })
}

/// `1 step`, `3 steps`.
pub fn plural(k: u32, one: &str, many: &str) -> String {
    format!("{k} {}", if k == 1 { one } else { many })
}

/// Whitespace runs as one space, none at the ends.
pub fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most `n` characters, an ellipsis marking the cut.
pub fn clip(s: &str, n: usize) -> String {
    if s.chars().count() > n {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('\u{2026}');
        t
    } else {
        s.to_string()
    }
}

/// At most `n` characters, the middle cut out (test names differ at both ends).
pub fn clip_middle(s: &str, n: usize) -> String {
    let len = s.chars().count();
    if len <= n {
        return s.to_string();
    }
    let tail = n / 3;
    let head = n - tail - 1;
    let mut t: String = s.chars().take(head).collect();
    t.push('\u{2026}');
    t.extend(s.chars().skip(len - tail));
    t
}

/// Whitespace squashed, at most `n` characters ([`clip`]).
pub fn short(s: &str, n: usize) -> String {
    clip(&squash(s), n)
}

/// Whitespace squashed, the first `n` characters and `...` after them when there are more.
pub fn short_dots(s: &str, n: usize) -> String {
    let one = squash(s);
    if one.chars().count() > n {
        format!("{}...", one.chars().take(n).collect::<String>())
    } else {
        one
    }
}

/// The facts the headline of a round's report states, whatever its markup.
pub struct Headline<'a> {
    /// The first implementation, when it has a composite: it takes the round.
    pub top: Option<&'a ImplRow>,
    pub implementations: usize,
    /// Implementations whose gate passed (every hidden test ran and passed).
    pub passing: usize,
    /// Spent on builds, every sample.
    pub build_cost: f64,
    /// Spent on judging.
    pub judging_cost: f64,
}

impl<'a> Headline<'a> {
    pub fn of(a: &'a Aggregate) -> Self {
        Headline {
            top: a.implementations.first().filter(|t| t.composite.is_some()),
            implementations: a.implementations.len(),
            passing: a.implementations.iter().filter(|r| r.gate_passed).count(),
            build_cost: a.implementations.iter().map(|r| r.total_cost_usd).sum(),
            judging_cost: a.judging_cost.iter().map(|r| r.cost_usd).sum(),
        }
    }
}

/// The warning every report of a round with unisolated gates carries near its top, in words;
/// none when every gate ran isolated.
pub fn unisolated_warning(a: &Aggregate) -> Option<String> {
    let n = a.unisolated_gates();
    (n > 0).then(|| {
        format!(
            "{n} of {} gates ran unisolated: no container, no bubblewrap. The model code they ran could read pipe's environment and the user's files, write anywhere the user can and reach the network; their results are only as trustworthy as that code.",
            a.sandboxed_gates()
        )
    })
}

/// What a sandbox label means for the code it ran.
pub fn isolation_text(label: &str) -> &'static str {
    match label {
        crate::sandbox::LABEL_DOCKER => {
            "a container: no network, memory, pids and CPU limits, read-only root, unprivileged user"
        }
        crate::sandbox::LABEL_BWRAP => {
            "bubblewrap: no network, the host read-only; no memory, pids or CPU limits"
        }
        crate::sandbox::LABEL_UNISOLATED => {
            "none: ran as the user, with the network and the user's files"
        }
        _ => "unknown",
    }
}

/// The gates a sandbox ran, as a cell: `all N` when it ran every gate, else each by name.
pub fn gates_text(a: &Aggregate, gates: &[String]) -> String {
    if a.sandboxes.len() == 1 {
        format!("all {}", gates.len())
    } else {
        gates.join(", ")
    }
}

/// Where an unmetered build's usage came from, in words; a value pipe does not write reads as
/// unknown.
pub fn usage_source(source: &str) -> &'static str {
    match source {
        "file" => "a usage file the CLI wrote",
        "stdout" => "the CLI's output",
        _ => "unknown: the CLI reported none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_is_floored_minutes_and_two_digit_seconds() {
        assert_eq!(wall(125_999), "2m05s");
        assert_eq!(wall(59_999), "0m59s");
        assert_eq!(wall(0), "0m00s");
        assert_eq!(wall(3_600_000), "60m00s");
    }

    #[test]
    fn token_counts() {
        assert_eq!(tokens_k(999), "999");
        assert_eq!(tokens_k(12_345), "12.3k");
        assert_eq!(tokens_k(2_000_000), "2000.0k");
        assert_eq!(tokens(2_000_000), "2.00M");
        assert_eq!(tokens(12_345), "12.3k");
    }

    #[test]
    fn money() {
        assert_eq!(usd(0.0), "$0");
        assert_eq!(usd(0.004_31), "$0.0043");
        assert_eq!(usd(12.5), "$12.50");
        assert_eq!(usd4(None), DASH);
        assert_eq!(cost_per_test(0.0516, 12), "$0.0043");
        // 0.051 / 12 is 0.0042499999... in binary: 4 decimals of the exact value, like toFixed.
        assert_eq!(cost_per_test(0.051, 12), "$0.0042");
        assert_eq!(cost_per_test(0.5, 0), DASH);
    }

    #[test]
    fn numbers_signs_and_intervals() {
        assert_eq!(fixed(Some(0.81234), 3), "0.812");
        assert_eq!(fixed(None, 2), DASH);
        assert_eq!(number(Some(8.0)), "8");
        assert_eq!(num1(7.46), "7.5");
        assert_eq!(signed(Some(1.26)), "+1.3");
        assert_eq!(signed(Some(-0.5)), "-0.5");
        assert_eq!(signed_number(Some(-0.5)), "\u{2212}0.5");
        assert_eq!(signed_number(Some(2.0)), "+2");
        assert_eq!(interval(Some([7.0, 9.26])), "7.0\u{2013}9.3");
        assert_eq!(or_dash(Some(3)), "3");
        assert_eq!(or_dash::<u32>(None), DASH);
        assert_eq!(pass_fail(Some(false)), "fail");
        assert_eq!(plural(1, "step", "steps"), "1 step");
    }

    #[test]
    fn truncation() {
        assert_eq!(squash("  a \n b\tc "), "a b c");
        assert_eq!(clip("abcdef", 4), "abc\u{2026}");
        assert_eq!(clip("abc", 4), "abc");
        assert_eq!(short("a  b  c  d", 5), "a b \u{2026}");
        assert_eq!(short_dots("a  b  c  d", 5), "a b c...");
        assert_eq!(short_dots("a b", 5), "a b");
        let long = "x".repeat(80);
        assert_eq!(clip_middle(&long, 52).chars().count(), 52);
    }
}
