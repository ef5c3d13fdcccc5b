//! The round in a terminal (`pipe aggregate`): one line per implementation, its score, each
//! criterion's peer score, its hidden tests and its verdict; the round's average under mean
//! aggregation, and the unisolated warning.

use std::fmt::Write as _;

use super::text::{number, or_dash, str_or_dash, unisolated_warning};
use crate::aggregate::{Aggregate, num};

/// The table, a line each, every line ending in a newline.
pub fn table(agg: &Aggregate) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{} ({}, {})", agg.round, agg.rubric, agg.date);
    let heads: Vec<&str> = agg.criteria.iter().map(|c| c.id.as_str()).collect();
    let _ = writeln!(
        o,
        "{:>4}  {:<20} {:>9}  {}  {:>7}  verdict",
        "#",
        "impl",
        format!("/{}", num(agg.composite_max)),
        heads.iter().fold(String::new(), |mut o, h| {
            let _ = write!(o, " {h:>w$}", w = h.len().max(7));
            o
        }),
        "tests"
    );
    for r in &agg.implementations {
        let score = match (&r.mean, r.composite) {
            (Some(m), _) => Some(m.average_score),
            (None, c) => c,
        };
        let _ = writeln!(
            o,
            "{:>4}  {:<20} {:>9}  {}  {:>7}  {}",
            or_dash(r.rank),
            r.implementation,
            number(score),
            agg.criteria.iter().fold(String::new(), |mut o, c| {
                let _ = write!(o, " {:>w$}", number(r.peer[&c.id]), w = c.id.len().max(7));
                o
            }),
            format!("{}/{}", r.tests_passed, r.tests_total),
            str_or_dash(r.verdict.as_deref())
        );
    }
    if let Some(a) = agg.avg_score {
        let _ = writeln!(o, "avg_score {}", num(a));
    }
    if let Some(w) = unisolated_warning(agg) {
        let _ = writeln!(o, "warning: {w}");
    }
    o
}
