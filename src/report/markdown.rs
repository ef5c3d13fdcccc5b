//! The round as markdown (`report.md`): the headline, the table of implementations, the judges,
//! the sandboxes that ran the gates, the problems, a suite's pass rates.

use std::fmt::Write as _;

use super::text::{
    BUDGET_LABEL, DASH, Headline, aggregation_name, cost_per_test, fixed, gates_text, interval,
    isolation_text, or_dash, pass_fail, plural, short_dots, signed, str_or_dash, tier_name,
    tokens_k, unisolated_warning, usd4, wall,
};
use crate::aggregate::suite::Suite;
use crate::aggregate::{Aggregate, ImplRow, Tier, num};
use crate::config::rubric::Aggregation;

/// One decimal, or the dash.
fn opt(x: Option<f64>) -> String {
    fixed(x, 1)
}

/// The markdown report: the sections of a published peer-judged round, with the uncertainty
/// they lack, and a footnote under each table saying how its numbers are computed.
pub fn markdown(a: &Aggregate) -> String {
    let mut o = String::new();
    intro(&mut o, a);
    if let Some(suite) = &a.suite {
        suite_markdown(&mut o, suite);
    } else {
        headline(&mut o, a);
        scoreboard(&mut o, a);
        failed_builds(&mut o, a);
        agent_builds(&mut o, a);
        if a.aggregation == Aggregation::Mean {
            mean_rankings(&mut o, a);
        }
        how_sure(&mut o, a);
        cost(&mut o, a);
        self_bias(&mut o, a);
        judge_ranking(&mut o, a);
        agreement(&mut o, a);
        per_implementation(&mut o, a);
        cost_efficiency(&mut o, a);
        judging_cost(&mut o, a);
    }
    sandboxes_markdown(&mut o, a);
    throttled_markdown(&mut o, a);
    unmetered_markdown(&mut o, &a.unmetered);
    problems_markdown(&mut o, a);
    budget_markdown(&mut o, a);
    o
}

/// The models the endpoint throttled, and for how long (nothing when none was).
fn throttled_markdown(o: &mut String, a: &Aggregate) {
    if a.throttled.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "## Throttling\n\n| model | builds | judging |\n|---|---|---|"
    );
    let secs = |ms: u64| format!("{:.1} s", ms as f64 / 1000.0);
    for t in &a.throttled {
        let _ = writeln!(
            o,
            "| {} | {} | {} |",
            t.model,
            secs(t.build_ms),
            secs(t.judge_ms)
        );
    }
    let _ = writeln!(
        o,
        "\n<sub>time the model's calls spent throttled by the endpoint: waiting after a 429, or queued behind a concurrency limit a 429 lowered. The run log (`log.jsonl`) has every wait.</sub>\n"
    );
}

/// Command builds whose CLI had the network: named, with where their usage came from.
fn unmetered_markdown(o: &mut String, rows: &[crate::aggregate::UnmeteredRow]) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "## Unmetered builds

| build | usage from |
|---|---|"
    );
    for u in rows {
        let task = u
            .task
            .as_deref()
            .map(|t| format!("{t}/"))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "| {task}{}#{} | {} |",
            u.model,
            u.sample,
            super::text::usage_source(&u.usage_source)
        );
    }
    let _ = writeln!(
        o,
        "\n<sub>these builds ran with `network = true`: the CLI called its endpoint itself, so pipe did not meter, limit or record its calls. Their usage and cost are what the CLI reported, and they cannot be replayed.</sub>\n"
    );
}

/// The nodes a spending cap kept from calling their model.
fn budget_markdown(o: &mut String, a: &Aggregate) {
    let skipped: Vec<_> = a.problems.iter().filter(|p| p.kind == "budget").collect();
    if skipped.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "## Skipped (budget)\n\nA spending cap (`max_cost_usd`) kept {} node(s) from calling their model; what they would have fed is missing from the tables above. Raise the cap and run the round again to resume them.\n",
        skipped.len()
    );
    for p in skipped {
        let _ = writeln!(o, "- `{}`: {}", p.node, short_dots(&p.message, 200));
    }
    o.push('\n');
}

/// The title, what the round is, and the notices (imported, replayed, unisolated).
fn intro(o: &mut String, a: &Aggregate) {
    let _ = writeln!(o, "# {} \u{b7} {}\n", a.name, a.date);
    if let Some(suite) = &a.suite {
        let _ = writeln!(
            o,
            "Suite of {} tasks (`{}`) \u{b7} {} sample(s) per task and model",
            suite.tasks.len(),
            a.task,
            suite.samples
        );
    } else {
        let _ = writeln!(
            o,
            "Task `{}` \u{b7} rubric `{}` \u{b7} {} aggregation",
            a.task,
            a.rubric,
            aggregation_name(a.aggregation)
        );
    }
    if let Some(src) = &a.source {
        let _ = writeln!(o, "\nImported from `{src}`.");
    }
    if a.replayed {
        let _ = writeln!(
            o,
            "\n> Replayed round: every model answer comes from recordings, not from live calls."
        );
    }
    if let Some(w) = unisolated_warning(a) {
        let _ = writeln!(o, "\n> **Warning: {w}**");
    }
    o.push('\n');
}

/// Who takes the round, with what, and what the round cost.
fn headline(o: &mut String, a: &Aggregate) {
    let h = Headline::of(a);
    let Some(top) = h.top else { return };
    let parts: Vec<String> = a
        .criteria
        .iter()
        .filter_map(|c| top.peer[&c.id].map(|v| format!("{} {v:.1}", c.id)))
        .collect();
    let close = if top.inseparable_from.is_empty() {
        String::new()
    } else {
        format!(
            " Its interval overlaps {}'s: the data cannot separate them.",
            top.inseparable_from.join(", ")
        )
    };
    let _ = writeln!(
        o,
        "**{}** takes the round with {}/{}{} (95% interval {}).{close} {} models, ${:.4} spent on builds and ${:.4} on judging. Hidden tests: {} of {} implementations pass the gate.\n",
        top.implementation,
        opt(top.composite),
        num(a.composite_max),
        if parts.is_empty() {
            String::new()
        } else {
            format!(" \u{2014} {}", parts.join(", "))
        },
        interval(top.composite_ci),
        h.implementations,
        h.build_cost,
        h.judging_cost,
        h.passing,
        h.implementations,
    );
}

fn scoreboard(o: &mut String, a: &Aggregate) {
    let max = num(a.composite_max);
    let _ = writeln!(o, "## Scoreboard\n");
    let has_expert = a
        .implementations
        .iter()
        .any(|r| r.judgments.iter().any(|j| j.tier == Tier::Expert));
    let mut head = format!("| # | impl | model | total /{max} | 95% interval |");
    let mut rule = String::from("|---|---|---|---|---|");
    for c in &a.criteria {
        let _ = write!(head, " {} /{} |", c.id, num(c.max));
        rule.push_str("---|");
        if has_expert {
            let _ = write!(head, " {} expert |", c.id);
            rule.push_str("---|");
        }
    }
    let _ = writeln!(
        o,
        "{head} build | tests | hard-fail | verdict |\n{rule}---|---|---|---|"
    );
    for r in &a.implementations {
        let mut line = format!(
            "| {} | {} | `{}` | {} | {} |",
            r.rank
                .map_or_else(|| DASH.to_string(), |k| format!("{k:02}")),
            r.implementation,
            r.model_slug,
            opt(r.composite),
            interval(r.composite_ci)
        );
        for c in &a.criteria {
            let _ = write!(line, " {} |", opt(r.peer[&c.id]));
            if has_expert {
                let _ = write!(line, " {} |", opt(r.expert[&c.id]));
            }
        }
        let _ = writeln!(
            o,
            "{line} {} | {}/{} | {} | {} |",
            pass_fail(Some(r.build_ok)),
            r.tests_passed,
            r.tests_total,
            pass_fail(r.passed_hard_fail),
            str_or_dash(r.verdict.as_deref())
        );
    }
    let formula = a
        .criteria
        .iter()
        .map(|c| format!("{} \u{d7} {}", num(c.weight), c.id))
        .collect::<Vec<_>>()
        .join(" + ");
    let _ = writeln!(
        o,
        "\n<sub>total = {}; self-judgments and dropouts excluded. 95% interval: percentile bootstrap over judges ({} draws, seed {}). tests = hidden tests passed/collected; a gate passes only when tests ran and all passed. verdict = most frequent verdict over all judgments, self included, a tie going to the worse. hard-fail = majority of the peer judges that answered say every hard-fail check passes.</sub>\n",
        if a.aggregation == Aggregation::Mean {
            format!("mean over peer judgments of each judgment's weighted score ({formula})")
        } else {
            format!("rubric-weighted sum of the peer medians ({formula})")
        },
        a.bootstrap.draws,
        a.bootstrap.seed,
    );
}

fn failed_builds(o: &mut String, a: &Aggregate) {
    let failed: Vec<_> = a.implementations.iter().filter(|r| !r.build_ok).collect();
    if failed.is_empty() {
        return;
    }
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

fn agent_builds(o: &mut String, a: &Aggregate) {
    let agents: Vec<_> = a
        .implementations
        .iter()
        .filter_map(|r| r.agent.as_ref().map(|n| (r, n)))
        .collect();
    if agents.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "Agent builds (tool-calling loop, `done` verified by the visible tests):\n"
    );
    for (r, n) in agents {
        let _ = write!(
            o,
            "- **{}**: {} after {}, {}, {}",
            r.implementation,
            n.outcome,
            plural(n.steps, "step", "steps"),
            plural(n.done_rejections, "rejected `done`", "rejected `done`s"),
            plural(n.passes, "pass", "passes"),
        );
        if n.outcome != "completed"
            && let Some(why) = &r.build_reason
        {
            let _ = write!(o, " ({why})");
        }
        o.push('\n');
    }
    o.push('\n');
}

fn mean_rankings(o: &mut String, a: &Aggregate) {
    let _ = writeln!(
        o,
        "## Rankings (mean)\n\n| rank | impl | average | count | min | max |\n|---|---|---|---|---|---|"
    );
    let mut rows: Vec<_> = a
        .implementations
        .iter()
        .filter_map(|r| r.mean.as_ref().map(|m| (r, m)))
        .collect();
    rows.sort_by_key(|(_, m)| m.rank);
    for (r, m) in rows {
        let _ = writeln!(
            o,
            "| {} | {} | {:.2} | {} | {} | {} |",
            m.rank,
            r.implementation,
            m.average_score,
            m.score_count,
            num(m.min_score),
            num(m.max_score)
        );
    }
    let _ = writeln!(
        o,
        "\n<sub>average = mean of the other models' weighted scores (2 decimals); the round's average is {}.</sub>\n",
        fixed(a.avg_score, 3)
    );
}

/// Uncertainty: separability, agreement between judges, leniency, self-preference.
fn how_sure(o: &mut String, a: &Aggregate) {
    let _ = writeln!(o, "## How sure\n");
    let separable: Vec<String> = a
        .implementations
        .iter()
        .filter(|r| !r.inseparable_from.is_empty())
        .map(|r| format!("{} ~ {}", r.implementation, r.inseparable_from.join(", ")))
        .collect();
    let scored = a
        .implementations
        .iter()
        .filter(|r| r.composite.is_some())
        .count();
    if scored < 2 {
        let _ = writeln!(
            o,
            "Fewer than two implementations have a composite score ({scored}): there is no ranking to separate.\n"
        );
    } else if separable.is_empty() {
        let _ = writeln!(
            o,
            "Every implementation's interval is apart from the others: the ranking is separable.\n"
        );
    } else {
        let _ = writeln!(
            o,
            "Ranks the data cannot separate (overlapping intervals): {}.\n",
            separable.join("; ")
        );
    }
    let _ = writeln!(
        o,
        "| criterion | Krippendorff's \u{3b1} | implementations | judges |\n|---|---|---|---|"
    );
    for r in &a.alpha {
        let _ = writeln!(
            o,
            "| {} | {}{} | {} | {} |",
            r.criterion,
            fixed(r.alpha, 3),
            if r.low { " \u{26a0} below 0.667" } else { "" },
            r.implementations,
            r.judges
        );
    }
    let _ = writeln!(
        o,
        "\n<sub>\u{3b1}: interval metric over the judge \u{d7} implementation matrix, every usable judgment (self included); 1 = perfect agreement, 0 = chance. Below 0.667, conclusions are tentative.</sub>\n"
    );
    let _ = writeln!(o, "| judge | leniency | judged |\n|---|---|---|");
    for r in &a.leniency {
        let _ = writeln!(o, "| {} | {} | {} |", r.judge, signed(r.offset), r.judged);
    }
    let sp = &a.self_preference;
    let _ = writeln!(
        o,
        "\n<sub>leniency = mean of (the judge's total \u{2212} the implementation's peer total) over the peers it judged; + = generous.</sub>\n\nSelf-preference: {} of {} judges rate their own implementation above their peers' total ({} below); mean \u{394} {}.\n",
        sp.above,
        sp.judges,
        sp.below,
        signed(sp.mean_delta)
    );
}

fn cost(o: &mut String, a: &Aggregate) {
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
            tokens_k(r.total_tokens)
        );
    }
    let _ = writeln!(
        o,
        "\n<sub>cost = recorded token usage \u{d7} the model's price table (cache reads at their own price), over all samples. wall = the representative sample's build time, floored to seconds.</sub>\n"
    );
}

fn self_bias(o: &mut String, a: &Aggregate) {
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
        "\n<sub>\u{394} = the model's score of its own implementation \u{2212} the peer median; + = rates itself above its peers; \u{2014} where the self-judgment is missing.</sub>\n"
    );
}

/// The first criterion's id, which the judge ranking and the agreement table are about.
fn first_criterion(a: &Aggregate) -> &str {
    a.criteria.first().map_or("score", |c| c.id.as_str())
}

fn judge_ranking(o: &mut String, a: &Aggregate) {
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
        "\n<sub>each judge's top three implementations by its own {} score, descending, ties broken by name; \u{2014} where it gave nothing.</sub>\n",
        first_criterion(a)
    );
}

fn agreement(o: &mut String, a: &Aggregate) {
    let first = first_criterion(a);
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
            fixed(r.stdev, 2),
            r.judges
        );
    }
    let _ = writeln!(
        o,
        "\n<sub>over every judgment with a {first} score, self included; stdev is the sample standard deviation (n \u{2212} 1), 2 decimals.</sub>\n"
    );
}

fn per_implementation(o: &mut String, a: &Aggregate) {
    let _ = writeln!(o, "## Per implementation\n");
    for r in &a.implementations {
        let _ = writeln!(
            o,
            "### {} (`{}`, blind label {})\n",
            r.implementation, r.model_slug, r.label
        );
        if let Some(path) = &r.run_path {
            let _ = writeln!(o, "`{path}`\n");
        }
        if !r.build_ok {
            let _ = writeln!(
                o,
                "Build failed: {}\n",
                r.build_reason.as_deref().unwrap_or("unknown")
            );
            continue;
        }
        judgments(o, a, r);
        hidden_tests(o, r);
    }
}

/// One implementation's judgments, a row each.
fn judgments(o: &mut String, a: &Aggregate, r: &ImplRow) {
    let heads: Vec<&str> = a.criteria.iter().map(|c| c.id.as_str()).collect();
    let _ = writeln!(
        o,
        "| judge | tier | {} | total | hard-fail | verdict | note |",
        heads.join(" | ")
    );
    let _ = writeln!(o, "|---|---|{}---|---|---|---|", "---|".repeat(heads.len()));
    for j in &r.judgments {
        let scores: Vec<String> = a
            .criteria
            .iter()
            .map(|c| opt(j.scores.get(&c.id).copied().flatten()))
            .collect();
        let note = match (&j.note, &j.dropout) {
            (Some(n), _) => short_dots(n, 90),
            (None, Some(d)) if j.infrastructure && d.starts_with(BUDGET_LABEL) => {
                format!("{DASH} ({})", short_dots(d, 60))
            }
            (None, Some(d)) if j.infrastructure => {
                format!("{DASH} (infrastructure: {})", short_dots(d, 60))
            }
            (None, Some(d)) => format!("{DASH} (dropout: {})", short_dots(d, 60)),
            _ => DASH.to_string(),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} |",
            j.judge,
            tier_name(j.tier),
            scores.join(" | "),
            opt(j.composite),
            pass_fail(j.hard_fail_pass),
            str_or_dash(j.verdict.as_deref()),
            note.replace('|', "\\|")
        );
    }
}

/// One implementation's hidden tests, passed or not.
fn hidden_tests(o: &mut String, r: &ImplRow) {
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

fn cost_efficiency(o: &mut String, a: &Aggregate) {
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
            or_dash(r.loc),
            wall(r.wall_ms),
            tokens_k(r.tokens),
            r.cost_usd,
            r.tests_passed,
            cost_per_test(r.cost_usd, r.tests_passed)
        );
    }
    let _ = writeln!(
        o,
        "\n<sub>loc = non-blank, non-comment lines of the produced sources. $/test = the representative build's cost / hidden tests passed, 4 decimals.</sub>\n"
    );
}

fn judging_cost(o: &mut String, a: &Aggregate) {
    let _ = writeln!(
        o,
        "## Judging cost\n\n| judge | tier | model | judgments | dropouts | tokens | wall | cost |\n|---|---|---|---|---|---|---|---|"
    );
    for r in &a.judging_cost {
        let (t, w, c) = if r.measured {
            (
                tokens_k(r.tokens),
                wall(r.wall_ms),
                format!("${:.4}", r.cost_usd),
            )
        } else {
            (DASH.to_string(), DASH.to_string(), DASH.to_string())
        };
        let _ = writeln!(
            o,
            "| {} | {} | `{}` | {} | {} | {t} | {w} | {c} |",
            r.judge,
            tier_name(r.tier),
            r.model_slug,
            r.judgments,
            r.dropouts
        );
    }
    let _ = writeln!(
        o,
        "\n<sub>measured per judge over its judgments, repair turns included; \u{2014} where the source did not measure it.</sub>\n"
    );
}

/// Which sandbox ran each gate (none for imported rounds, which do not say).
fn sandboxes_markdown(o: &mut String, a: &Aggregate) {
    if a.sandboxes.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "## Sandboxes\n\n| sandbox | isolation | gates |\n|---|---|---|"
    );
    for u in &a.sandboxes {
        let _ = writeln!(
            o,
            "| {} | {}{} | {} |",
            u.sandbox,
            if u.isolated { "" } else { "\u{26a0} " },
            isolation_text(&u.sandbox),
            gates_text(a, &u.gates)
        );
    }
    let _ = writeln!(
        o,
        "\n<sub>where each gate ran the hidden tests, as its own gate.json records it; a gate cached from an earlier run keeps the sandbox it ran in (`pipe run --force` on the gate stage re-runs it).</sub>\n"
    );
}

fn problems_markdown(o: &mut String, a: &Aggregate) {
    let problems: Vec<_> = a.problems.iter().filter(|p| p.kind != "budget").collect();
    if !problems.is_empty() {
        let _ = writeln!(o, "## Infrastructure problems\n");
        for p in problems {
            let _ = writeln!(
                o,
                "- `{}` ({}): {}",
                p.node,
                p.kind,
                short_dots(&p.message, 200)
            );
        }
        o.push('\n');
    }
}

/// A suite's sections: the models by pass rate with pass@k, then every task's results.
fn suite_markdown(o: &mut String, s: &Suite) {
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    if let Some(top) = s.models.first() {
        let _ = writeln!(
            o,
            "**{}** passes {} of {} implementations ({}) over {} tasks \u{d7} {} sample(s).\n",
            top.model,
            top.passed,
            top.implementations,
            pct(top.pass_rate),
            s.tasks.len(),
            s.samples
        );
    }
    let _ = writeln!(o, "## Pass rates\n");
    let ks: String = s.ks.iter().fold(String::new(), |mut o, k| {
        let _ = write!(o, " pass@{k} |");
        o
    });
    let judged = s.composite_max.map(num);
    let peer_head = judged
        .as_ref()
        .map_or(String::new(), |max| format!(" peer score /{max} |"));
    let _ = writeln!(
        o,
        "| model | slug | passed | pass rate |{ks}{peer_head} tasks solved | tests | failed builds | cost | $/pass |"
    );
    let _ = writeln!(
        o,
        "|---|---|---|---|{}{}---|---|---|---|---|",
        "---|".repeat(s.ks.len()),
        if judged.is_some() { "---|" } else { "" }
    );
    for m in &s.models {
        let ks: String = s.ks.iter().fold(String::new(), |mut o, k| {
            let v = m.pass_at.get(k).map_or(DASH.to_string(), |v| pct(*v));
            let _ = write!(o, " {v} |");
            o
        });
        let peer = if judged.is_some() {
            format!(" {} |", opt(m.peer_score))
        } else {
            String::new()
        };
        let _ = writeln!(
            o,
            "| {} | `{}` | {}/{} | {} |{ks}{peer} {}/{} | {}/{} | {} | ${:.4} | {} |",
            m.model,
            m.slug,
            m.passed,
            m.implementations,
            pct(m.pass_rate),
            m.tasks_solved,
            s.tasks.len(),
            m.tests_passed,
            m.tests_total,
            m.builds_failed,
            m.cost_usd,
            usd4(m.cost_per_pass_usd),
        );
    }
    let _ = writeln!(
        o,
        "\n<sub>pass rate: implementations (task \u{d7} sample) whose hidden tests all passed; a failed build counts as a fail. pass@k: the unbiased estimator 1 \u{2212} C(n\u{2212}c, k) / C(n, k) of Chen et al. (2021) per task (n samples, c passing), averaged over tasks.</sub>\n"
    );
    if judged.is_some() {
        let _ = writeln!(
            o,
            "<sub>peer score: the mean over the model's built implementations (task \u{d7} sample) of each one's composite, the rubric's aggregation over its peer judges (self-judgments and dropouts excluded).</sub>\n"
        );
    }
    per_task(o, s);
}

/// Every task's results: samples passing per model (and their mean peer score).
fn per_task(o: &mut String, s: &Suite) {
    let judged = s.composite_max.is_some();
    let _ = writeln!(o, "## Per task\n");
    let heads: String = s.model_order.iter().fold(String::new(), |mut o, m| {
        let _ = write!(o, " {m} |");
        o
    });
    let _ = writeln!(o, "| task |{heads}");
    let _ = writeln!(o, "|---|{}", "---|".repeat(s.model_order.len()));
    for r in &s.per_task {
        let cells: String = r
            .passed
            .iter()
            .enumerate()
            .fold(String::new(), |mut o, (i, c)| {
                match r.peer_score.get(i) {
                    Some(score) => {
                        let _ = write!(o, " {c}/{} \u{b7} {} |", s.samples, opt(*score));
                    }
                    None => {
                        let _ = write!(o, " {c}/{} |", s.samples);
                    }
                }
                o
            });
        let _ = writeln!(o, "| {} |{cells}", r.task);
    }
    if judged {
        o.push_str("\n<sub>samples whose hidden tests all passed, of the samples run \u{b7} their mean peer score.</sub>\n\n");
    } else {
        o.push_str("\n<sub>samples whose hidden tests all passed, of the samples run.</sub>\n\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::UnmeteredRow;

    #[test]
    fn unmetered_builds_are_named_with_where_their_usage_came_from() {
        let mut o = String::new();
        unmetered_markdown(&mut o, &[]);
        assert_eq!(o, "", "a round without unmetered builds says nothing");
        let rows = vec![
            UnmeteredRow {
                model: "ann".into(),
                sample: 1,
                task: None,
                usage_source: "file".into(),
            },
            UnmeteredRow {
                model: "bob".into(),
                sample: 2,
                task: Some("adder".into()),
                usage_source: "<script>".into(),
            },
        ];
        unmetered_markdown(&mut o, &rows);
        insta::assert_snapshot!(o);
    }
}
