//! `pipe status`: per node done, failed, pending or stale, and why.

use std::collections::BTreeSet;
use std::path::Path;

use crate::cli::common::load;
use crate::cli::exit::{EXIT_INVALID, EXIT_OK};
use crate::config::Pipeline;
use crate::config::load::Purpose;
use crate::exec::{self, reason_text};
use crate::plan::Plan;
use crate::store::{RoundStore, Status};

/// `pipe status`: loads the pipeline and prints each node's state.
pub fn status(pipeline: &Path, out: &Path, json: bool) -> i32 {
    let Some(p) = load(pipeline, Purpose::Validate, json) else {
        return EXIT_INVALID;
    };
    print_status(&p, out, json)
}

/// Why a done node is stale, naming what changed: its inputs (`rubric changed`), the upstream
/// nodes whose keys changed (`upstream build:ann#1 changed`) or that run again.
fn stale_why(
    plan: &Plan,
    store: &RoundStore,
    recorded: &[exec::Stored],
    reasons: &[Option<crate::exec::outstanding::Reason>],
    (i, reason): (usize, crate::exec::outstanding::Reason),
) -> String {
    use crate::exec::outstanding::{Reason, Recorded};
    let nodes: Vec<&crate::plan::Node> = plan.nodes().collect();
    let deps = &plan.dep_positions()[i];
    let named = |ds: Vec<usize>, what: &str| {
        let mut ids: Vec<&str> = ds.iter().map(|d| nodes[*d].id.as_str()).collect();
        ids.sort_unstable();
        let more = ids.len().saturating_sub(3);
        ids.truncate(3);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        format!("upstream {}{more} {what}", ids.join(", "))
    };
    match reason {
        Reason::KeyChanged => {
            let Some(inputs) = store.recorded_inputs(nodes[i]) else {
                return reason_text(reason).to_string();
            };
            let mut parts: Vec<String> = Vec::new();
            for field in nodes[i].inputs.changed_from(&inputs) {
                if field != "upstream" {
                    parts.push(format!("{field} changed"));
                    continue;
                }
                let changed: Vec<usize> = deps
                    .iter()
                    .copied()
                    .filter(|d| match &recorded[*d].recorded {
                        Recorded::Done { key } | Recorded::Changed { key } => *key != nodes[*d].key,
                        Recorded::Missing => true,
                    })
                    .collect();
                parts.push(if changed.is_empty() {
                    "upstream changed".to_string()
                } else {
                    named(changed, "changed")
                });
            }
            if parts.is_empty() {
                reason_text(reason).to_string()
            } else {
                parts.join(", ")
            }
        }
        Reason::UpstreamRuns => {
            let runs: Vec<usize> = deps
                .iter()
                .copied()
                .filter(|d| reasons[*d].is_some())
                .collect();
            named(runs, "re-runs")
        }
        _ => reason_text(reason).to_string(),
    }
}

fn print_status(p: &Pipeline, out: &Path, json: bool) -> i32 {
    let store = RoundStore::new(out, &p.round.id);
    let plan = Plan::build(p);
    let recorded = exec::recorded(&plan, &store);
    let reasons = exec::outstanding_of(&plan, &recorded, &BTreeSet::new());
    let mut rows = Vec::new();
    for (i, n) in plan.nodes().enumerate() {
        let (state, why) = match (&recorded[i].record, reasons[i]) {
            (Some(r), None) if r.status == Status::Done => ("done", String::new()),
            (Some(r), Some(crate::exec::outstanding::Reason::OutputsChanged))
                if r.status == Status::Done =>
            {
                let changed = &recorded[i].changed;
                let shown = changed
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                let more = changed.len().saturating_sub(5);
                let more = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                ("stale", format!("outputs changed: {shown}{more}"))
            }
            (Some(r), Some(reason)) if r.status == Status::Done => (
                "stale",
                stale_why(&plan, &store, &recorded, &reasons, (i, reason)),
            ),
            (Some(r), _) => (
                "failed",
                r.failure
                    .as_ref()
                    .map(|f| f.message.clone())
                    .unwrap_or_default(),
            ),
            (None, _) => ("pending", "not run yet".to_string()),
        };
        rows.push(serde_json::json!({"id": n.id, "stage": n.stage, "state": state, "why": why, "key": n.key}));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"round": p.round.id, "round_dir": store.root, "nodes": rows})
            )
            .expect("json")
        );
    } else {
        for r in &rows {
            println!(
                "{:<8} {}{}",
                r["state"].as_str().unwrap_or(""),
                r["id"].as_str().unwrap_or(""),
                r["why"]
                    .as_str()
                    .filter(|w| !w.is_empty())
                    .map(|w| format!("  ({w})"))
                    .unwrap_or_default()
            );
        }
        let count = |s: &str| rows.iter().filter(|r| r["state"] == s).count();
        println!(
            "{}: {} done, {} stale, {} failed, {} pending",
            p.round.id,
            count("done"),
            count("stale"),
            count("failed"),
            count("pending")
        );
    }
    EXIT_OK
}
