//! What still has to run: a pure function of the plan's keys, the stored records and `--force`.

/// What the store knows of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Nothing, or a failure: the node has to run.
    Missing,
    /// Finished successfully under this key.
    Done { key: String },
    /// Finished under this key, but its outputs are missing or changed since.
    Changed { key: String },
}

/// The inputs of [`outstanding`] for one node, in dependency order (dependencies first).
#[derive(Debug, Clone)]
pub struct NodeState<'a> {
    pub key: &'a str,
    /// Positions of the node's dependencies, all smaller than its own.
    pub deps: &'a [usize],
    pub recorded: &'a Recorded,
    pub forced: bool,
}

/// Why a node has to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Forced,
    NeverFinished,
    KeyChanged,
    OutputsChanged,
    UpstreamRuns,
}

/// For each node, `Some(reason)` when it has to run, `None` when its stored result stands.
///
/// A node runs when it is forced, has no successful record, has one under a different key, has
/// outputs that changed since, or depends on a node that runs (whose output will be new).
pub fn outstanding(nodes: &[NodeState<'_>]) -> Vec<Option<Reason>> {
    let mut out: Vec<Option<Reason>> = Vec::with_capacity(nodes.len());
    for n in nodes {
        let reason = if n.forced {
            Some(Reason::Forced)
        } else {
            match n.recorded {
                Recorded::Missing => Some(Reason::NeverFinished),
                Recorded::Done { key } | Recorded::Changed { key } if key != n.key => {
                    Some(Reason::KeyChanged)
                }
                Recorded::Changed { .. } => Some(Reason::OutputsChanged),
                Recorded::Done { .. } => n
                    .deps
                    .iter()
                    .any(|d| out[*d].is_some())
                    .then_some(Reason::UpstreamRuns),
            }
        };
        out.push(reason);
    }
    out
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct Case {
        keys: Vec<String>,
        deps: Vec<Vec<usize>>,
        recorded: Vec<Recorded>,
        forced: Vec<bool>,
    }

    fn case() -> impl Strategy<Value = Case> {
        (1usize..40).prop_flat_map(|n| {
            let deps = (0..n)
                .map(|i| {
                    if i == 0 {
                        Just(Vec::new()).boxed()
                    } else {
                        proptest::collection::btree_set(0..i, 0..i.min(4))
                            .prop_map(|s| s.into_iter().collect())
                            .boxed()
                    }
                })
                .collect::<Vec<_>>();
            let rec = proptest::collection::vec(0u8..4, n);
            let forced = proptest::collection::vec(proptest::bool::weighted(0.1), n);
            (deps, rec, forced).prop_map(move |(deps, rec, forced)| {
                let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
                let recorded = rec
                    .iter()
                    .enumerate()
                    .map(|(i, r)| match r {
                        0 => Recorded::Missing,
                        1 => Recorded::Done {
                            key: format!("k{i}"),
                        },
                        2 => Recorded::Done {
                            key: format!("old{i}"),
                        },
                        _ => Recorded::Changed {
                            key: format!("k{i}"),
                        },
                    })
                    .collect();
                Case {
                    keys,
                    deps,
                    recorded,
                    forced,
                }
            })
        })
    }

    fn states(c: &Case) -> Vec<NodeState<'_>> {
        (0..c.keys.len())
            .map(|i| NodeState {
                key: &c.keys[i],
                deps: &c.deps[i],
                recorded: &c.recorded[i],
                forced: c.forced[i],
            })
            .collect()
    }

    #[test]
    fn changed_outputs_run_the_node_and_its_dependents() {
        let (a, b) = (
            Recorded::Changed { key: "a".into() },
            Recorded::Done { key: "b".into() },
        );
        let out = outstanding(&[
            NodeState {
                key: "a",
                deps: &[],
                recorded: &a,
                forced: false,
            },
            NodeState {
                key: "b",
                deps: &[0],
                recorded: &b,
                forced: false,
            },
        ]);
        assert_eq!(
            out,
            [Some(Reason::OutputsChanged), Some(Reason::UpstreamRuns)]
        );
        // A changed key says so first: the outputs are replaced either way.
        let a = Recorded::Changed { key: "old".into() };
        let out = outstanding(&[NodeState {
            key: "a",
            deps: &[],
            recorded: &a,
            forced: false,
        }]);
        assert_eq!(out, [Some(Reason::KeyChanged)]);
    }

    proptest! {
        /// A node whose stored result stands is done under its current key, not forced, and
        /// none of its dependencies runs.
        #[test]
        fn skipped_nodes_are_truly_done(c in case()) {
            let out = outstanding(&states(&c));
            for i in 0..c.keys.len() {
                if out[i].is_none() {
                    prop_assert_eq!(&c.recorded[i], &Recorded::Done { key: c.keys[i].clone() });
                    prop_assert!(!c.forced[i]);
                    prop_assert!(c.deps[i].iter().all(|d| out[*d].is_none()));
                }
            }
        }

        /// Everything that never finished, changed key or is forced runs, and so does everything
        /// downstream of it.
        #[test]
        fn runs_are_closed_downstream(c in case()) {
            let out = outstanding(&states(&c));
            for i in 0..c.keys.len() {
                let must = c.forced[i] || c.recorded[i] != Recorded::Done { key: c.keys[i].clone() };
                if must { prop_assert!(out[i].is_some()); }
                if c.deps[i].iter().any(|d| out[*d].is_some()) { prop_assert!(out[i].is_some()); }
            }
        }

        /// After running what was outstanding (recording it done), nothing is outstanding.
        #[test]
        fn second_pass_runs_nothing(c in case()) {
            let out = outstanding(&states(&c));
            let mut after = c.clone();
            for i in 0..c.keys.len() {
                if out[i].is_some() { after.recorded[i] = Recorded::Done { key: c.keys[i].clone() }; }
                after.forced[i] = false;
            }
            prop_assert!(outstanding(&states(&after)).iter().all(Option::is_none));
        }

        /// Changing one node's key runs exactly that node and its descendants (when everything
        /// was done before).
        #[test]
        fn key_change_runs_exactly_the_downstream_cone(c in case(), pick in 0usize..40) {
            let n = c.keys.len();
            let pick = pick % n;
            let mut done = c.clone();
            for i in 0..n {
                done.recorded[i] = Recorded::Done { key: c.keys[i].clone() };
                done.forced[i] = false;
            }
            done.keys[pick] = "changed".into();
            let out = outstanding(&states(&done));
            let mut cone = vec![false; n];
            cone[pick] = true;
            for i in 0..n { if c.deps[i].iter().any(|d| cone[*d]) { cone[i] = true; } }
            for i in 0..n { prop_assert_eq!(out[i].is_some(), cone[i], "node {}", i); }
        }
    }
}
