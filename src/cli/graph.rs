//! `pipe graph`: the expanded node graph as text, DOT or JSON, or one node's key explained.

use std::fmt::Write as _;
use std::path::Path;

use crate::base::diag::{Diag, render_all};
use crate::cli::args::GraphFormat;
use crate::cli::common::{cwd, load};
use crate::cli::exit::{EXIT_INVALID, EXIT_OK};
use crate::config::Pipeline;
use crate::config::load::Purpose;
use crate::plan::Plan;

pub fn render_graph(plan: &Plan, format: GraphFormat) -> String {
    let mut o = String::new();
    match format {
        GraphFormat::Text => {
            for n in plan.nodes() {
                let deps: Vec<String> = plan.deps(&n.id).iter().map(|d| d.id.clone()).collect();
                if deps.is_empty() {
                    let _ = writeln!(o, "{}", n.id);
                } else {
                    let _ = writeln!(o, "{} <- {}", n.id, deps.join(", "));
                }
            }
        }
        GraphFormat::Dot => {
            o.push_str("digraph pipe {\n  rankdir=LR;\n");
            for n in plan.nodes() {
                let _ = writeln!(o, "  \"{}\" [label=\"{}\", shape=box];", n.id, n.id);
                for d in plan.deps(&n.id) {
                    let _ = writeln!(o, "  \"{}\" -> \"{}\";", d.id, n.id);
                }
            }
            o.push_str("}\n");
        }
        GraphFormat::Json => {
            let nodes: Vec<_> = plan
                .nodes()
                .map(|n| {
                    serde_json::json!({
                        "id": n.id, "stage": n.stage, "kind": n.kind,
                        "deps": plan.deps(&n.id).iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
                    })
                })
                .collect();
            o = serde_json::to_string_pretty(&serde_json::json!({"nodes": nodes})).expect("json")
                + "\n";
        }
    }
    o
}

/// `pipe graph`: the expanded node graph, or with `--explain NODE` one node's key and inputs.
pub fn graph(pipeline: &Path, format: GraphFormat, explain: Option<&str>) -> i32 {
    let json = matches!(format, GraphFormat::Json) || explain.is_some();
    let Some(p) = load(pipeline, Purpose::Validate, json) else {
        return EXIT_INVALID;
    };
    let plan = Plan::build(&p);
    if let Some(node) = explain {
        return explain_node(&p, &plan, pipeline, node);
    }
    print!("{}", render_graph(&plan, format));
    EXIT_OK
}

/// `pipe graph --explain NODE`: the node's key and the inputs it hashes, as JSON; an unknown node
/// is an error naming the closest ids.
fn explain_node(p: &Pipeline, plan: &Plan, file: &Path, node: &str) -> i32 {
    if let Some(v) = plan.explain(p, node) {
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return EXIT_OK;
    }
    let ids: Vec<&str> = plan.nodes().map(|n| n.id.as_str()).collect();
    // Ids holding what was typed (`alpha` finds alpha's nodes), else the closest id.
    let holding: Vec<String> = ids
        .iter()
        .filter(|id| id.contains(node))
        .take(5)
        .map(|id| format!("`{id}`"))
        .collect();
    let help = if holding.is_empty() {
        crate::base::diag::did_you_mean(node, ids.iter().copied())
    } else {
        Some(format!("did you mean {}?", holding.join(", ")))
    };
    let d = Diag::error(file, format!("--explain names unknown node `{node}`")).help_opt(help);
    eprint!("{}", render_all(&[d], &cwd()));
    EXIT_INVALID
}
