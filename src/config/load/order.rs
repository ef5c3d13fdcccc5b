//! The stages' wiring: dependency order, cycles, and which stage may need which.

use std::collections::HashMap;

use petgraph::algo::kosaraju_scc;
use petgraph::graph::DiGraph;

use super::ctx::{Loader, root};
use crate::config::{Stage, StageKind};

impl Loader<'_> {
    /// Orders stages so each comes after its needs; names any cycle (`a -> b -> a`).
    pub(super) fn order(&mut self, stages: Vec<Stage>) -> Option<Vec<Stage>> {
        let mut g = DiGraph::<usize, ()>::new();
        let idx: Vec<_> = (0..stages.len()).map(|i| g.add_node(i)).collect();
        let position: HashMap<&str, usize> = stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        for (i, s) in stages.iter().enumerate() {
            for n in &s.needs {
                if let Some(&j) = position.get(n.as_str()) {
                    g.add_edge(idx[j], idx[i], ());
                }
            }
        }
        let mut ok = true;
        // Kosaraju's walk is iterative: a chain of 20,000 stages would overflow the stack of
        // Tarjan's recursive one.
        for scc in kosaraju_scc(&g) {
            if scc.len() > 1 {
                let path = cycle_path(&stages, &scc.iter().map(|n| g[*n]).collect::<Vec<_>>());
                let cycle = path
                    .iter()
                    .map(|i| stages[*i].name.as_str())
                    .collect::<Vec<_>>()
                    .join(" -> ");
                // Point at the `needs` entry that closes the cycle: in `gate -> judge -> gate`,
                // the `"judge"` in `stages.gate.needs`.
                let start = &stages[path[0]];
                let mut at = root().key("stages").key(&start.name).key("needs");
                if let [.., before, _] = path.as_slice()
                    && let Some(i) = start.needs.iter().position(|n| *n == stages[*before].name)
                {
                    at = at.index(i);
                }
                self.err(&at, format!("cycle between stages: {cycle}")).help = Some(
                    "a stage runs after every stage it needs, so none of these can start; \
                     remove one of these `needs`"
                        .into(),
                );
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        let order = petgraph::algo::toposort(&g, None).ok()?;
        let mut slots: Vec<Option<Stage>> = stages.into_iter().map(Some).collect();
        Some(
            order
                .into_iter()
                .filter_map(|n| slots[g[n]].take())
                .collect(),
        )
    }

    /// Checks that stages are wired in a way the executor can expand. `stages` are in dependency
    /// order, so one pass carries what lies upstream of each: up to two of its build stages (one
    /// is right, two are enough to say why more are wrong) and whether an aggregate is there.
    pub(super) fn check_shape(&mut self, stages: &[Stage]) {
        let position: HashMap<&str, usize> = stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let mut builds: Vec<Vec<usize>> = Vec::with_capacity(stages.len());
        let mut aggregated: Vec<bool> = Vec::with_capacity(stages.len());
        for s in stages {
            let mut up: Vec<usize> = Vec::new();
            let mut aggregate = false;
            for j in s
                .needs
                .iter()
                .filter_map(|n| position.get(n.as_str()).copied())
            {
                let own = matches!(stages[j].kind, StageKind::Build(_)).then_some(j);
                for b in own
                    .into_iter()
                    .chain(builds.get(j).into_iter().flatten().copied())
                {
                    if up.len() < 2 && !up.contains(&b) {
                        up.push(b);
                    }
                }
                aggregate |= matches!(stages[j].kind, StageKind::Aggregate)
                    || aggregated.get(j).copied().unwrap_or(false);
            }
            self.check_stage_shape(s, &up, aggregate, stages);
            builds.push(up);
            aggregated.push(aggregate);
        }
    }

    /// The wiring of one stage, given (up to two of) the build stages upstream of it and whether
    /// an aggregate stage is upstream.
    pub(super) fn check_stage_shape(
        &mut self,
        s: &Stage,
        builds: &[usize],
        aggregate: bool,
        all: &[Stage],
    ) {
        let at = root().key("stages").key(&s.name);
        match &s.kind {
            StageKind::Build(_) if !s.needs.is_empty() => {
                self.err(
                    &at.key("needs"),
                    format!("build stage `{}` cannot need other stages", s.name),
                )
                .help = Some("a build starts from the task alone; remove `needs`".into());
            }
            StageKind::Gate(_) | StageKind::Judge(_) | StageKind::Command(_)
                if builds.len() != 1 =>
            {
                let msg = if builds.is_empty() {
                    format!(
                        "stage `{}` ({}) needs a build stage upstream",
                        s.name,
                        s.kind_name()
                    )
                } else {
                    format!(
                        "stage `{}` ({}) has more than one build stage upstream (`{}`, `{}`); it must have exactly one",
                        s.name,
                        s.kind_name(),
                        all[builds[0]].name,
                        all[builds[1]].name
                    )
                };
                self.err(&at.key("needs"), msg).help =
                    Some("add the build stage (or a stage after it) to `needs`".into());
            }
            StageKind::Publish(_) if !aggregate => {
                self.err(
                    &at.key("needs"),
                    format!(
                        "publish stage `{}` needs an aggregate stage upstream",
                        s.name
                    ),
                );
            }
            StageKind::Aggregate if builds.is_empty() => {
                self.err(
                    &at.key("needs"),
                    format!(
                        "aggregate stage `{}` has nothing to aggregate: no build upstream",
                        s.name
                    ),
                );
            }
            _ => {}
        }
    }
}

/// `build -> judge -> build` for the members of a strongly connected component, as stage
/// indices: each stage is needed by the next.
fn cycle_path(stages: &[Stage], members: &[usize]) -> Vec<usize> {
    let start = *members
        .iter()
        .min_by_key(|i| &stages[**i].name)
        .expect("non-empty");
    let position: HashMap<&str, usize> = members
        .iter()
        .map(|&m| (stages[m].name.as_str(), m))
        .collect();
    // The members that need each member.
    let mut needed_by: HashMap<usize, Vec<usize>> = HashMap::new();
    for &m in members {
        for n in &stages[m].needs {
            if let Some(&j) = position.get(n.as_str()) {
                needed_by.entry(j).or_default().push(m);
            }
        }
    }
    let mut path = vec![start];
    let mut cur = start;
    // Follow `needs` inside the component until we come back to the start.
    for _ in 0..members.len() {
        let next = needed_by
            .get(&cur)
            .into_iter()
            .flatten()
            .copied()
            .min_by_key(|m| (usize::from(*m != start), &stages[*m].name));
        let Some(next) = next else { break };
        path.push(next);
        if next == start {
            break;
        }
        cur = next;
    }
    path
}
