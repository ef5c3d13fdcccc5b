//! How large a pipeline's plan would be, counted from the validated pipeline without expanding
//! it: the loader refuses a round past the plan limit before anything is built.

use std::collections::HashMap;

use crate::config::{Pipeline, StageKind};

/// What `Plan::build` would make of a pipeline, counted without making it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Size {
    pub nodes: u64,
    /// Dependency edges, counted from above (a node's needs, each at most one node, but for the
    /// aggregate and publish nodes, which depend on every node of the stages they follow).
    pub edges: u64,
    /// The stage making the most nodes, and how many.
    pub largest: (String, u64),
}

/// Counts the nodes and edges of `p`'s plan in time linear in its stages (plus, for each
/// aggregate stage, the stages upstream of it).
pub fn size(p: &Pipeline) -> Size {
    let tasks = if p.is_suite() { p.tasks.len() } else { 1 } as u64;
    let impls = tasks
        .saturating_mul(p.models.len() as u64)
        .saturating_mul(u64::from(p.round.samples));
    let mut nodes_of: HashMap<&str, u64> = HashMap::new();
    let mut size = Size {
        nodes: 0,
        edges: 0,
        largest: (String::new(), 0),
    };
    for stage in &p.stages {
        let needs = stage.needs.len() as u64 + 1;
        let (nodes, edges) = match &stage.kind {
            StageKind::Build(_) => (impls, 0),
            StageKind::Gate(_) | StageKind::Command(_) => (impls, impls.saturating_mul(needs)),
            StageKind::Judge(_) => {
                let n = impls.saturating_mul(p.models.len() as u64);
                (n, n.saturating_mul(needs))
            }
            StageKind::Aggregate => (
                1,
                p.upstream_of(stage)
                    .iter()
                    .map(|s| nodes_of.get(s).copied().unwrap_or(0))
                    .fold(0, u64::saturating_add),
            ),
            StageKind::Publish(_) => (
                1,
                stage
                    .needs
                    .iter()
                    .map(|s| nodes_of.get(s.as_str()).copied().unwrap_or(0))
                    .fold(0, u64::saturating_add),
            ),
        };
        nodes_of.insert(stage.name.as_str(), nodes);
        size.nodes = size.nodes.saturating_add(nodes);
        size.edges = size.edges.saturating_add(edges);
        if nodes > size.largest.1 {
            size.largest = (stage.name.to_string(), nodes);
        }
    }
    size
}
