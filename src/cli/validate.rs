//! `pipe validate`: every problem of a pipeline and what it names at once, or "ok".

use std::path::Path;

use crate::cli::common::load;
use crate::cli::exit::{EXIT_INVALID, EXIT_OK};
use crate::config::load::Purpose;
use crate::plan::Plan;

/// `pipe validate`: the diagnostics (as text on stderr or JSON on stdout), or the round's size.
pub fn validate(pipeline: &Path, json: bool) -> i32 {
    let Some(p) = load(pipeline, Purpose::Validate, json) else {
        return EXIT_INVALID;
    };
    let plan = Plan::build(&p);
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": true, "nodes": plan.len(), "diagnostics": p.warnings})
        );
    } else {
        println!(
            "ok: {} ({} stages, {} models, {} nodes)",
            p.round.id,
            p.stages.len(),
            p.models.len(),
            plan.len()
        );
    }
    EXIT_OK
}
