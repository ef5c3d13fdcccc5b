//! Which node may start next: a pure state machine over the plan's dependency positions, driven
//! by the executor ([`super::run`]) as nodes finish and their records are written.
//!
//! The rules:
//! - A node is ready when each of its dependencies has finished (a cached one counts as
//!   finished from the start). Ready nodes are taken lowest plan position first.
//! - At most `jobs` nodes run at once. While that many run, nothing is decided (not even a skip).
//! - A ready node with a dependency that did not finish successfully (failed, skipped,
//!   cancelled) is skipped, unless it is tolerant (the aggregate, which reports the holes); a
//!   skip takes no job slot and finishes the node at once.
//! - A node that ran and left a record to write releases its ordinary dependents at once (they
//!   read only its outputs, which are written) and its tolerant ones once the record is written
//!   ([`Scheduler::written`]: they read records). A node without a record releases every
//!   dependent at once.

use std::collections::BTreeSet;

/// Where a node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Waiting,
    Running,
    /// Over; `ok` when it succeeded (ran or was cached), so its dependents may use it.
    Finished {
        ok: bool,
    },
}

/// What the executor is to do with a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Start the node (it now counts against the jobs bound).
    Start(usize),
    /// The node is skipped, finished already: `upstream` is the first dependency (in dependency
    /// order) that did not finish successfully.
    Skip { node: usize, upstream: usize },
}

/// Which dependents a finished node releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Those that read only its outputs (its outputs are written; its record is queued).
    Eager,
    /// Those that read its record too (tolerant nodes: the aggregate), once it is written.
    Tolerant,
    /// Every one (a node without a record to wait for).
    All,
}

/// One node as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Positions of its dependencies.
    pub deps: Vec<usize>,
    /// Runs even when a dependency failed, and waits for its dependencies' records.
    pub tolerant: bool,
    /// Has to run; `false` for a node whose stored result stands (it starts finished).
    pub runs: bool,
}

#[derive(Debug, Clone)]
pub struct Scheduler {
    entries: Vec<Entry>,
    dependents: Vec<Vec<usize>>,
    states: Vec<State>,
    /// Dependencies still to release, per node; a waiting node is ready at zero.
    remaining: Vec<usize>,
    ready: BTreeSet<usize>,
    jobs: usize,
    running: usize,
}

impl Scheduler {
    /// A scheduler over `entries` in plan order, running at most `jobs` (at least one) at once.
    pub fn new(entries: Vec<Entry>, jobs: usize) -> Self {
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); entries.len()];
        for (i, e) in entries.iter().enumerate() {
            for &d in &e.deps {
                dependents[d].push(i);
            }
        }
        let states: Vec<State> = entries
            .iter()
            .map(|e| {
                if e.runs {
                    State::Waiting
                } else {
                    State::Finished { ok: true }
                }
            })
            .collect();
        let remaining: Vec<usize> = entries
            .iter()
            .map(|e| {
                e.deps
                    .iter()
                    .filter(|d| !matches!(states[**d], State::Finished { .. }))
                    .count()
            })
            .collect();
        let ready = (0..entries.len())
            .filter(|&i| states[i] == State::Waiting && remaining[i] == 0)
            .collect();
        Self {
            entries,
            dependents,
            states,
            remaining,
            ready,
            jobs: jobs.max(1),
            running: 0,
        }
    }

    pub fn state(&self, i: usize) -> State {
        self.states[i]
    }

    /// Nodes started and not yet finished (nor abandoned).
    pub fn running(&self) -> usize {
        self.running
    }

    /// The next node to start or skip, or `None` when the jobs bound is reached or no node is
    /// ready (one may become ready as running nodes finish).
    pub fn next_step(&mut self) -> Option<Step> {
        if self.running >= self.jobs {
            return None;
        }
        let i = self.ready.pop_first()?;
        let entry = &self.entries[i];
        let upstream = entry
            .deps
            .iter()
            .copied()
            .find(|&d| self.states[d] == State::Finished { ok: false });
        if let Some(upstream) = upstream
            && !entry.tolerant
        {
            self.states[i] = State::Finished { ok: false };
            self.release(i, Release::All);
            return Some(Step::Skip { node: i, upstream });
        }
        self.states[i] = State::Running;
        self.running += 1;
        Some(Step::Start(i))
    }

    /// A running node is over (`ok`: it succeeded); `which` of its dependents it releases now.
    pub fn finished(&mut self, i: usize, ok: bool, which: Release) {
        debug_assert_eq!(self.states[i], State::Running, "node {i} was not running");
        self.running -= 1;
        self.states[i] = State::Finished { ok };
        self.release(i, which);
    }

    /// The record of a finished node is written: its tolerant dependents may start.
    pub fn written(&mut self, i: usize) {
        self.release(i, Release::Tolerant);
    }

    /// A running node was aborted and will never finish: it no longer takes a job slot.
    pub fn abandon(&mut self, i: usize) {
        if self.states[i] == State::Running {
            self.running -= 1;
        }
    }

    /// `i` finished: its waiting dependents (those `which` selects) have one dependency fewer.
    fn release(&mut self, i: usize, which: Release) {
        for &j in &self.dependents[i] {
            let wanted = match which {
                Release::Eager => !self.entries[j].tolerant,
                Release::Tolerant => self.entries[j].tolerant,
                Release::All => true,
            };
            if !wanted {
                continue;
            }
            self.remaining[j] -= 1;
            if self.remaining[j] == 0 && self.states[j] == State::Waiting {
                self.ready.insert(j);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(deps: &[usize]) -> Entry {
        Entry {
            deps: deps.to_vec(),
            tolerant: false,
            runs: true,
        }
    }

    fn tolerant(deps: &[usize]) -> Entry {
        Entry {
            tolerant: true,
            ..entry(deps)
        }
    }

    fn cached(deps: &[usize]) -> Entry {
        Entry {
            runs: false,
            ..entry(deps)
        }
    }

    /// Every step the scheduler takes until it has nothing to say.
    fn drain(s: &mut Scheduler) -> Vec<Step> {
        std::iter::from_fn(|| s.next_step()).collect()
    }

    fn starts(steps: &[Step]) -> Vec<usize> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Start(i) => Some(*i),
                Step::Skip { .. } => None,
            })
            .collect()
    }

    /// Runs the whole DAG, finishing running nodes lowest first, every node with its record
    /// written at once; `fails` lists the nodes that fail. Returns the steps in order.
    fn run_all(entries: Vec<Entry>, jobs: usize, fails: &[usize]) -> Vec<Step> {
        let n = entries.len();
        let mut s = Scheduler::new(entries, jobs);
        let mut steps = Vec::new();
        let mut running: BTreeSet<usize> = BTreeSet::new();
        loop {
            for step in drain(&mut s) {
                if let Step::Start(i) = step {
                    running.insert(i);
                }
                steps.push(step);
            }
            assert!(s.running() <= jobs);
            let Some(i) = running.pop_first() else { break };
            s.finished(i, !fails.contains(&i), Release::Eager);
            s.written(i);
        }
        for i in 0..n {
            assert!(
                matches!(s.state(i), State::Finished { .. }),
                "node {i} never finished: {:?}",
                s.state(i)
            );
        }
        steps
    }

    #[test]
    fn a_node_is_ready_once_its_dependencies_have_finished() {
        // 0 -> 1 -> 2, and 3 on its own.
        let mut s = Scheduler::new(vec![entry(&[]), entry(&[0]), entry(&[1]), entry(&[])], 8);
        assert_eq!(drain(&mut s), [Step::Start(0), Step::Start(3)]);
        assert_eq!(s.state(1), State::Waiting);
        s.finished(0, true, Release::All);
        assert_eq!(drain(&mut s), [Step::Start(1)]);
        s.finished(1, true, Release::All);
        assert_eq!(drain(&mut s), [Step::Start(2)]);
    }

    #[test]
    fn cached_nodes_start_finished_and_release_their_dependents() {
        let mut s = Scheduler::new(
            vec![cached(&[]), entry(&[0]), cached(&[]), entry(&[1, 2])],
            8,
        );
        assert_eq!(s.state(0), State::Finished { ok: true });
        assert_eq!(drain(&mut s), [Step::Start(1)]);
        s.finished(1, true, Release::All);
        assert_eq!(drain(&mut s), [Step::Start(3)]);
    }

    #[test]
    fn a_failed_dependency_skips_its_dependents_and_theirs() {
        // 0 fails; 1 depends on it, 2 on 1; 3 is independent.
        let steps = run_all(
            vec![entry(&[]), entry(&[0]), entry(&[1]), entry(&[])],
            4,
            &[0],
        );
        assert_eq!(
            steps,
            [
                Step::Start(0),
                Step::Start(3),
                Step::Skip {
                    node: 1,
                    upstream: 0
                },
                Step::Skip {
                    node: 2,
                    upstream: 1
                },
            ]
        );
    }

    #[test]
    fn a_tolerant_node_runs_despite_a_failed_dependency_after_its_records_are_written() {
        // 0 fails, 1 succeeds, 2 (the aggregate) depends on both; 3 is ordinary and needs 1.
        let mut s = Scheduler::new(
            vec![entry(&[]), entry(&[]), tolerant(&[0, 1]), entry(&[1])],
            8,
        );
        assert_eq!(drain(&mut s), [Step::Start(0), Step::Start(1)]);
        s.finished(0, false, Release::Eager);
        s.finished(1, true, Release::Eager);
        // The ordinary dependent starts at once; the tolerant one waits for the records.
        assert_eq!(drain(&mut s), [Step::Start(3)]);
        s.written(0);
        assert_eq!(drain(&mut s), []);
        s.written(1);
        assert_eq!(drain(&mut s), [Step::Start(2)]);
    }

    #[test]
    fn a_node_without_a_record_releases_tolerant_dependents_at_once() {
        let mut s = Scheduler::new(vec![entry(&[]), tolerant(&[0])], 8);
        assert_eq!(drain(&mut s), [Step::Start(0)]);
        s.finished(0, false, Release::All);
        assert_eq!(drain(&mut s), [Step::Start(1)]);
    }

    #[test]
    fn no_more_than_jobs_run_at_once_and_a_full_house_decides_nothing() {
        // Five independent nodes and one whose dependency (0) fails.
        let mut s = Scheduler::new(
            vec![
                entry(&[]),
                entry(&[]),
                entry(&[]),
                entry(&[]),
                entry(&[]),
                entry(&[0]),
            ],
            2,
        );
        assert_eq!(drain(&mut s), [Step::Start(0), Step::Start(1)]);
        assert_eq!(s.running(), 2);
        s.finished(0, false, Release::All);
        // One slot free: 2 starts; 5 is ready (to skip) but comes after it, and the bound is hit.
        assert_eq!(drain(&mut s), [Step::Start(2)]);
        s.finished(1, true, Release::All);
        assert_eq!(drain(&mut s), [Step::Start(3)]);
        s.finished(2, true, Release::All);
        assert_eq!(
            drain(&mut s),
            [
                Step::Start(4),
                // The bound is reached: the skip waits for a free slot.
            ]
        );
        s.finished(3, true, Release::All);
        assert_eq!(
            drain(&mut s),
            [Step::Skip {
                node: 5,
                upstream: 0
            }]
        );
        assert_eq!(s.running(), 1);
        s.abandon(4);
        assert_eq!(s.running(), 0);
    }

    #[test]
    fn ready_nodes_are_taken_lowest_plan_position_first() {
        // 1 is ready from the start, 2 to 4 once 0 finishes: one at a time, lowest first.
        let mut s = Scheduler::new(
            vec![
                entry(&[]),
                entry(&[]),
                entry(&[0]),
                entry(&[0]),
                entry(&[0]),
            ],
            1,
        );
        assert_eq!(drain(&mut s), [Step::Start(0)]);
        s.finished(0, true, Release::All);
        assert_eq!(drain(&mut s), [Step::Start(1)]);
        s.finished(1, true, Release::All);
        assert_eq!(drain(&mut s), [Step::Start(2)]);
        s.finished(2, true, Release::All);
        assert_eq!(drain(&mut s), [Step::Start(3)]);
        // The same DAG run twice takes the same steps.
        let dag = || {
            vec![
                entry(&[]),
                entry(&[]),
                entry(&[0]),
                entry(&[0, 1]),
                entry(&[1]),
            ]
        };
        assert_eq!(run_all(dag(), 2, &[]), run_all(dag(), 2, &[]));
    }

    #[test]
    fn a_diamond_runs_its_join_once_after_both_branches() {
        //   0
        //  / \
        // 1   2
        //  \ /
        //   3
        let diamond = || vec![entry(&[]), entry(&[0]), entry(&[0]), entry(&[1, 2])];
        let steps = run_all(diamond(), 4, &[]);
        assert_eq!(
            steps,
            [
                Step::Start(0),
                Step::Start(1),
                Step::Start(2),
                Step::Start(3)
            ]
        );
        let mut s = Scheduler::new(diamond(), 4);
        drain(&mut s);
        s.finished(0, true, Release::All);
        assert_eq!(drain(&mut s), [Step::Start(1), Step::Start(2)]);
        s.finished(2, true, Release::All);
        assert_eq!(drain(&mut s), [], "the join waits for its other branch");
        s.finished(1, true, Release::All);
        assert_eq!(drain(&mut s), [Step::Start(3)]);
        // One failed branch skips the join, naming the first failed dependency.
        let steps = run_all(diamond(), 4, &[2]);
        assert_eq!(
            steps.last(),
            Some(&Step::Skip {
                node: 3,
                upstream: 2
            })
        );
        assert_eq!(starts(&steps), [0, 1, 2]);
    }
}
