//! Publish: the aggregate as a report people read (`report.md`) and the aggregate itself for
//! machines, written in the node directory and copied to the round directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{NodeCtx, NodeError, write_output, write_text};
use crate::aggregate::{Aggregate, ImplRow, num};
use crate::config::{PublishFormat, StageKind};
use crate::fsutil;

const DASH: &str = "\u{2014}";

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| DASH.to_string(), |v| format!("{v:.1}"))
}

fn signed(x: Option<f64>) -> String {
    match x {
        None => DASH.to_string(),
        Some(v) if v > 0.0 => format!("+{v:.1}"),
        Some(v) => format!("{v:.1}"),
    }
}

/// `2m05s`: whole seconds, floored.
pub fn wall(ms: u64) -> String {
    let s = ms / 1000;
    format!("{}m{:02}s", s / 60, s % 60)
}

pub fn tokens(n: u64) -> String {
    if n >= 1000 {
        format!("{:.1}k", n as f64 / 1000.0)
    } else {
        n.to_string()
    }
}

/// The markdown report.
pub fn markdown(a: &Aggregate) -> String {
    let mut o = String::new();
    let max = num(a.composite_max);
    let _ = writeln!(o, "# {} \u{b7} {}\n", a.name, a.date);
    if a.replayed {
        let _ = writeln!(
            o,
            "> Replayed round: every model answer comes from recordings, not from live calls.\n"
        );
    }
    let built: Vec<_> = a.implementations.iter().filter(|r| r.build_ok).collect();
    let spent: f64 = a.implementations.iter().map(|r| r.total_cost_usd).sum();
    if let Some(top) = built.first().filter(|t| t.composite.is_some()) {
        let parts: Vec<String> = a
            .criteria
            .iter()
            .map(|c| format!("{} {}", c.id, opt(top.peer[&c.id])))
            .collect();
        let _ = writeln!(
            o,
            "**{}** takes the round with {}/{max} ({}). {} models, ${spent:.3} spent on builds. Hidden tests: {} of {} implementations pass the gate.\n",
            top.implementation,
            opt(top.composite),
            parts.join(", "),
            a.implementations.len(),
            a.implementations.iter().filter(|r| r.gate_passed).count(),
            a.implementations.len()
        );
    }
    // Scoreboard.
    let _ = writeln!(o, "## Scoreboard\n");
    let crit_heads: Vec<String> = a
        .criteria
        .iter()
        .map(|c| format!("{} /{}", c.id, num(c.max)))
        .collect();
    let _ = writeln!(
        o,
        "| # | impl | model | total /{max} | {} | build | tests | hard-fail | verdict |",
        crit_heads.join(" | ")
    );
    let _ = writeln!(
        o,
        "|---|---|---|---|{}---|---|---|---|",
        "---|".repeat(a.criteria.len())
    );
    for (i, r) in a.implementations.iter().enumerate() {
        let crit: Vec<String> = a.criteria.iter().map(|c| opt(r.peer[&c.id])).collect();
        let _ = writeln!(
            o,
            "| {:02} | {} | `{}` | {} | {} | {} | {}/{} | {} | {} |",
            i + 1,
            r.implementation,
            r.model_slug,
            opt(r.composite),
            crit.join(" | "),
            if r.build_ok { "pass" } else { "fail" },
            r.tests_passed,
            r.tests_total,
            r.passed_hard_fail
                .map_or(DASH, |p| if p { "pass" } else { "fail" }),
            r.verdict.as_deref().unwrap_or(DASH)
        );
    }
    let _ = writeln!(
        o,
        "\n<sub>total = rubric-weighted sum of the peer medians ({}), self-judgments and dropouts excluded. tests = hidden tests passed/collected in the gate; a gate passes only when tests ran and all passed. verdict = most frequent verdict over all judgments, a tie going to the worse. hard-fail = majority of peer judges saying every hard-fail check passes.</sub>\n",
        a.criteria
            .iter()
            .map(|c| format!("{} \u{d7} {}", num(c.weight), c.id))
            .collect::<Vec<_>>()
            .join(" + ")
    );
    let failed: Vec<_> = a.implementations.iter().filter(|r| !r.build_ok).collect();
    if !failed.is_empty() {
        let _ = writeln!(o, "Failed builds:\n");
        for r in failed {
            let _ = writeln!(
                o,
                "- **{}**: {}",
                r.implementation,
                r.build_reason.as_deref().unwrap_or("unknown")
            );
        }
        o.push('\n');
    }
    // Cost.
    let _ = writeln!(o, "## Cost\n");
    let _ = writeln!(o, "| impl | model | samples | wall | cost | tokens |");
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    let mut by_name: Vec<_> = a.implementations.iter().collect();
    by_name.sort_by(|x, y| x.implementation.cmp(&y.implementation));
    for r in &by_name {
        let _ = writeln!(
            o,
            "| {} | `{}` | {} | {} | ${:.4} | {} |",
            r.implementation,
            r.model_slug,
            r.samples,
            wall(r.wall_ms),
            r.total_cost_usd,
            tokens(r.total_tokens)
        );
    }
    let _ = writeln!(
        o,
        "\n<sub>cost = recorded token usage \u{d7} the model's price table (cache reads at their own price), over all samples. wall = the representative sample's build time.</sub>\n"
    );
    // Self-bias.
    let _ = writeln!(o, "## Self-bias\n");
    let mut head = String::from("| impl |");
    for c in &a.criteria {
        let _ = write!(head, " self {0} | peer med | \u{394} {0} |", c.id);
    }
    let _ = writeln!(
        o,
        "{head}\n|---|{}",
        "---|---|---|".repeat(a.criteria.len())
    );
    for r in &a.self_bias {
        let mut line = format!("| {} |", r.implementation);
        for c in &a.criteria {
            let [s, p, d] = r
                .by_criterion
                .get(&c.id)
                .copied()
                .unwrap_or([None, None, None]);
            let _ = write!(line, " {} | {} | {} |", opt(s), opt(p), signed(d));
        }
        let _ = writeln!(o, "{line}");
    }
    let _ = writeln!(
        o,
        "\n<sub>\u{394} = the model's score of its own implementation \u{2212} the peer median. + = rates itself above its peers.</sub>\n"
    );
    // Judge ranking.
    let first = a.criteria.first().map_or("score", |c| c.id.as_str());
    let _ = writeln!(
        o,
        "## Judge ranking\n\n| judge | 1st | 2nd | 3rd |\n|---|---|---|---|"
    );
    for r in &a.judge_ranking {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            r.judge, r.top[0], r.top[1], r.top[2]
        );
    }
    let _ = writeln!(
        o,
        "\n<sub>each judge's top three implementations by its own {first} score, ties broken by name.</sub>\n"
    );
    // Agreement.
    let _ = writeln!(
        o,
        "## Agreement ({first})\n\n| impl | min | max | range | stdev | judges |\n|---|---|---|---|---|---|"
    );
    for r in &a.agreement {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} |",
            r.implementation,
            opt(r.min),
            opt(r.max),
            opt(r.range),
            r.stdev
                .map_or_else(|| DASH.to_string(), |s| format!("{s:.2}")),
            r.judges
        );
    }
    let _ = writeln!(
        o,
        "\n<sub>over every judgment with a {first} score, self included; stdev is the sample standard deviation (n \u{2212} 1).</sub>\n"
    );
    // Per implementation.
    let _ = writeln!(o, "## Per implementation\n");
    for r in &a.implementations {
        let _ = writeln!(
            o,
            "### {} (`{}`, blind label {})\n",
            r.implementation, r.model_slug, r.label
        );
        if !r.build_ok {
            let _ = writeln!(
                o,
                "Build failed: {}\n",
                r.build_reason.as_deref().unwrap_or("unknown")
            );
            continue;
        }
        let heads: Vec<&str> = a.criteria.iter().map(|c| c.id.as_str()).collect();
        let _ = writeln!(
            o,
            "| judge | tier | {} | hard-fail | verdict | note |",
            heads.join(" | ")
        );
        let _ = writeln!(o, "|---|---|{}---|---|---|", "---|".repeat(heads.len()));
        for j in &r.judgments {
            let scores: Vec<String> = a
                .criteria
                .iter()
                .map(|c| opt(j.scores.get(&c.id).copied().flatten()))
                .collect();
            let tier = serde_json::to_value(j.tier)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let note = match (&j.note, &j.dropout) {
                (Some(n), _) => short(n, 90),
                (None, Some(d)) if j.infrastructure => {
                    format!("{DASH} (infrastructure: {})", short(d, 60))
                }
                _ => DASH.to_string(),
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} |",
                j.judge,
                tier,
                scores.join(" | "),
                j.hard_fail_pass
                    .map_or(DASH, |p| if p { "pass" } else { "fail" }),
                j.verdict.as_deref().unwrap_or(DASH),
                note.replace('|', "\\|")
            );
        }
        let _ = writeln!(
            o,
            "\nHidden tests {}/{}{}:\n",
            r.tests_passed,
            r.tests_total,
            r.gate_reason
                .as_ref()
                .map(|g| format!(" ({g})"))
                .unwrap_or_default()
        );
        for t in &r.hidden_tests {
            let _ = writeln!(
                o,
                "- {} `{}`{}",
                if t.passed { "\u{2713}" } else { "\u{2717}" },
                t.name,
                if t.flaky { " (flaky)" } else { "" }
            );
        }
        o.push('\n');
    }
    // Cost efficiency.
    let _ = writeln!(
        o,
        "## Cost efficiency\n\n| impl | slug | loc | wall | tokens | cost | tests | $/test |\n|---|---|---|---|---|---|---|---|"
    );
    let mut eff: Vec<_> = a.implementations.iter().collect();
    let per_test = |r: &ImplRow| (r.tests_passed > 0).then(|| r.cost_usd / r.tests_passed as f64);
    eff.sort_by(|x, y| {
        per_test(x)
            .unwrap_or(f64::INFINITY)
            .total_cmp(&per_test(y).unwrap_or(f64::INFINITY))
            .then(x.implementation.cmp(&y.implementation))
    });
    for r in eff {
        let _ = writeln!(
            o,
            "| {} | `{}` | {} | {} | {} | ${:.2} | {} | {} |",
            r.implementation,
            r.model_slug,
            r.loc.map_or_else(|| DASH.to_string(), |l| l.to_string()),
            wall(r.wall_ms),
            tokens(r.tokens),
            r.cost_usd,
            r.tests_passed,
            per_test(r).map_or_else(|| DASH.to_string(), |c| format!("${c:.4}"))
        );
    }
    let _ = writeln!(
        o,
        "\n<sub>loc = non-blank, non-comment lines of the produced sources. $/test = build cost / hidden tests passed.</sub>\n"
    );
    // Judging cost.
    let _ = writeln!(
        o,
        "## Judging cost\n\n| judge | model | judgments | dropouts | tokens | wall | cost |\n|---|---|---|---|---|---|---|"
    );
    for r in &a.judging_cost {
        let _ = writeln!(
            o,
            "| {} | `{}` | {} | {} | {} | {} | ${:.4} |",
            r.judge,
            r.model_slug,
            r.judgments,
            r.dropouts,
            tokens(r.tokens),
            wall(r.wall_ms),
            r.cost_usd
        );
    }
    let _ = writeln!(
        o,
        "\n<sub>measured per judge over its judgments, repair turns included.</sub>\n"
    );
    if !a.problems.is_empty() {
        let _ = writeln!(o, "## Infrastructure problems\n");
        for p in &a.problems {
            let _ = writeln!(o, "- `{}` ({}): {}", p.node, p.kind, short(&p.message, 200));
        }
        o.push('\n');
    }
    o
}

fn short(s: &str, n: usize) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > n {
        format!("{}...", one.chars().take(n).collect::<String>())
    } else {
        one
    }
}

pub fn run(ctx: &NodeCtx, dir: &Path) -> Result<Vec<PathBuf>, NodeError> {
    let StageKind::Publish { formats } = ctx.stage_kind() else {
        unreachable!("dispatched by kind")
    };
    let agg_node = ctx
        .upstream_of_kind("aggregate")
        .ok_or_else(|| NodeError::Internal("publish without aggregate".into()))?;
    let a: Aggregate = ctx.read_output(agg_node, "aggregate.json")?;
    let mut outputs = Vec::new();
    for f in formats {
        let name = match f {
            PublishFormat::Markdown => {
                outputs.push(write_text(dir, "report.md", &markdown(&a))?);
                "report.md"
            }
            PublishFormat::Json => {
                outputs.push(write_output(dir, "aggregate.json", &a)?);
                "aggregate.json"
            }
        };
        let from = dir.join(name);
        let to = ctx.store.root.join(name);
        let bytes = std::fs::read(&from).map_err(super::io(&from))?;
        fsutil::write_atomic(&to, &bytes).map_err(super::io(&to))?;
    }
    outputs.dedup();
    Ok(outputs)
}
