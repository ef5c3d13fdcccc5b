//! What a round's kept results cost: the starting point of its spending caps.

use crate::config::Pipeline;
use crate::plan::{NodeKind, Plan};
use crate::provider::budget::Budget;
use crate::stages::builds::report::BuildReport;
use crate::stages::judge::Judgment;
use crate::stages::outputs::{BUILD_JSON, JUDGMENT_JSON};
use crate::store::{RoundStore, Status};

/// Counts into `budget` the cost of every build and judgment whose done record holds for the
/// node's current key (what this run reuses instead of paying again), by the current price
/// table. An output that cannot be read counts nothing: its node runs again and pays then.
pub fn seed(budget: &Budget, plan: &Plan, store: &RoundStore, p: &Pipeline) {
    for n in plan.nodes() {
        if !matches!(n.kind, NodeKind::Build | NodeKind::Judge) {
            continue;
        }
        let Some(record) = store.record(n) else {
            continue;
        };
        if record.status != Status::Done || record.key != n.key {
            continue;
        }
        let read = |file: &str| std::fs::read(store.node_dir(n).join(file)).ok();
        let (model, usd) = if n.kind == NodeKind::Build {
            let Some(b) =
                read(BUILD_JSON).and_then(|b| serde_json::from_slice::<BuildReport>(&b).ok())
            else {
                continue;
            };
            let price = p.model(&b.model).map(|m| m.price).unwrap_or_default();
            let usd = b.cost_at(price);
            (b.model, usd)
        } else {
            let Some(j) =
                read(JUDGMENT_JSON).and_then(|b| serde_json::from_slice::<Judgment>(&b).ok())
            else {
                continue;
            };
            let price = p.model(&j.judge).map(|m| m.price).unwrap_or_default();
            (j.judge, price.cost(j.usage))
        };
        budget.seed(&model, usd);
    }
}
