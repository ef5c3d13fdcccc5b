//! The plan: the validated pipeline expanded into a sealed petgraph DAG of nodes, one per unit of
//! work (a build sample, a gate run, one judgment, the aggregate), each with its cache key.

pub mod key;
pub mod subject;

pub use subject::Subject;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;

use crate::base::names::SafeName;
use crate::config::{Pipeline, Stage, StageKind};
use key::KeyInput;

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// Readable and unique: `build:alpha#1` (`build:humaneval-0/alpha#1` in a suite),
    /// `judge:glm->alpha#1`, `aggregate`.
    pub id: String,
    pub stage: SafeName,
    pub kind: &'static str,
    pub subject: Subject,
    /// The node's directory, relative to the round directory: `nodes/` and safe names only.
    pub dir: PathBuf,
    /// blake3 of everything that can change the node's result.
    pub key: String,
    /// When true the node runs once its dependencies have finished in any state (the aggregate
    /// works over whatever upstream produced); otherwise a failed dependency skips it.
    pub tolerant: bool,
}

/// A node graph under construction.
pub struct PlanBuilder {
    graph: DiGraph<Node, ()>,
    by_stage: BTreeMap<String, Vec<NodeIndex>>,
    /// Per-implementation nodes by stage, then by the implementation's position in the round's
    /// list (a build's one node, a judge stage's one per judge); round nodes by stage.
    by_impl: std::collections::HashMap<String, Vec<Vec<NodeIndex>>>,
    rounds: BTreeMap<String, NodeIndex>,
    /// Each node's key input and recording, by node index, until `seal` computes the keys.
    inputs: Vec<(KeyInput, Option<PathBuf>)>,
    memo: key::Memo,
}

/// (task in a suite, model, sample).
type Impl = (Option<SafeName>, SafeName, u32);

/// The sealed plan: nodes in a DAG, a topological order, and cache keys computed.
#[derive(Debug)]
pub struct Plan {
    graph: DiGraph<Node, ()>,
    order: Vec<NodeIndex>,
    by_id: std::collections::HashMap<String, NodeIndex>,
}

impl Plan {
    /// Expands a pipeline into nodes.
    pub fn build(p: &Pipeline) -> Self {
        let mut b = PlanBuilder {
            graph: DiGraph::new(),
            by_stage: BTreeMap::new(),
            by_impl: std::collections::HashMap::new(),
            rounds: BTreeMap::new(),
            inputs: Vec::new(),
            memo: key::Memo::default(),
        };
        // A suite expands task by task; a round of one task keeps ids without the task.
        let tasks: Vec<Option<SafeName>> = if p.is_suite() {
            p.tasks.iter().map(|t| Some(t.name.clone())).collect()
        } else {
            vec![None]
        };
        let impls: Vec<Impl> = tasks
            .iter()
            .flat_map(|t| {
                p.models.iter().flat_map(move |m| {
                    (1..=p.round.samples).map(move |s| (t.clone(), m.id.clone(), s))
                })
            })
            .collect();
        let builds = build_upstream(p);
        for (i, stage) in p.stages.iter().enumerate() {
            let build = builds[i].map(|j| p.stages[j].name.as_str());
            b.expand(p, stage, build, &impls);
        }
        b.seal()
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Nodes in dependency order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.order.iter().map(|i| &self.graph[*i])
    }

    /// Positions (in [`Self::nodes`] order) of each node's dependencies.
    pub fn dep_positions(&self) -> Vec<Vec<usize>> {
        let pos: BTreeMap<NodeIndex, usize> = self
            .order
            .iter()
            .enumerate()
            .map(|(p, i)| (*i, p))
            .collect();
        self.order
            .iter()
            .map(|i| {
                let mut d: Vec<usize> = self
                    .graph
                    .neighbors_directed(*i, Direction::Incoming)
                    .map(|n| pos[&n])
                    .collect();
                d.sort_unstable();
                d
            })
            .collect()
    }

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.by_id.get(id).map(|ix| &self.graph[*ix])
    }

    /// Direct dependencies of a node, sorted by id.
    pub fn deps(&self, id: &str) -> Vec<&Node> {
        let Some(ix) = self.by_id.get(id) else {
            return Vec::new();
        };
        let mut d: Vec<&Node> = self
            .graph
            .neighbors_directed(*ix, Direction::Incoming)
            .map(|n| &self.graph[n])
            .collect();
        d.sort_by(|a, b| a.id.cmp(&b.id));
        d
    }
}

impl PlanBuilder {
    /// Adds a node; `imp` is the position of its implementation in the round's list, for a node
    /// about one.
    fn add(
        &mut self,
        p: &Pipeline,
        stage: &Stage,
        subject: Subject,
        imp: Option<usize>,
        deps: Vec<NodeIndex>,
    ) {
        let id = node_id(&stage.name, &subject);
        let dir = node_dir(&stage.name, &subject);
        // The key waits for `seal`: it needs the upstream keys and the node's recording, read
        // there for all nodes at once.
        self.inputs.push((
            key::input_for(p, stage, &subject, Vec::new(), &mut self.memo),
            key::recording_path(p, stage, &subject),
        ));
        let key = String::new();
        let tolerant = matches!(stage.kind, StageKind::Aggregate);
        let next = NodeIndex::new(self.graph.node_count());
        match imp {
            Some(i) => {
                let nodes = self.by_impl.entry(stage.name.to_string()).or_default();
                if nodes.len() <= i {
                    nodes.resize_with(i + 1, Vec::new);
                }
                nodes[i].push(next);
            }
            None => {
                self.rounds.insert(stage.name.to_string(), next);
            }
        }
        let ix = self.graph.add_node(Node {
            id,
            stage: stage.name.clone(),
            kind: stage.kind_name(),
            subject,
            dir,
            key,
            tolerant,
        });
        for d in deps {
            self.graph.add_edge(d, ix, ());
        }
        self.by_stage
            .entry(stage.name.to_string())
            .or_default()
            .push(ix);
    }

    /// The nodes of `stage` about the implementation at position `imp` (or the stage's round
    /// node).
    fn impl_nodes(&self, stage: &str, imp: usize) -> &[NodeIndex] {
        match self.by_impl.get(stage) {
            Some(v) => v.get(imp).map_or(&[], Vec::as_slice),
            None => self.rounds.get(stage).map_or(&[], std::slice::from_ref),
        }
    }

    fn expand(&mut self, p: &Pipeline, stage: &Stage, build: Option<&str>, impls: &[Impl]) {
        let per_impl_deps = |b: &Self, imp: usize| {
            let mut deps: Vec<NodeIndex> = Vec::new();
            let mut seen: HashSet<NodeIndex> = HashSet::new();
            for n in stage.needs.iter().map(String::as_str).chain(build) {
                for &d in b.impl_nodes(n, imp) {
                    if seen.insert(d) {
                        deps.push(d);
                    }
                }
            }
            deps
        };
        match &stage.kind {
            StageKind::Build(_) | StageKind::Gate(_) | StageKind::Command(_) => {
                for (i, imp) in impls.iter().enumerate() {
                    let deps = if matches!(stage.kind, StageKind::Build(_)) {
                        Vec::new()
                    } else {
                        per_impl_deps(self, i)
                    };
                    let (task, model, sample) = imp.clone();
                    let subject = Subject::Impl {
                        task,
                        model,
                        sample,
                    };
                    self.add(p, stage, subject, Some(i), deps);
                }
            }
            StageKind::Judge(_) => {
                for judge in &p.models {
                    for (i, imp) in impls.iter().enumerate() {
                        let deps = per_impl_deps(self, i);
                        let (task, model, sample) = imp.clone();
                        let subject = Subject::Judgment {
                            judge: judge.id.clone(),
                            task,
                            model,
                            sample,
                        };
                        self.add(p, stage, subject, Some(i), deps);
                    }
                }
            }
            StageKind::Aggregate | StageKind::Publish(_) => {
                let mut deps: Vec<NodeIndex> = Vec::new();
                let names: Vec<&str> = if matches!(stage.kind, StageKind::Aggregate) {
                    p.upstream_of(stage)
                } else {
                    stage.needs.iter().map(String::as_str).collect()
                };
                for name in names {
                    deps.extend(self.by_stage.get(name).into_iter().flatten().copied());
                }
                self.add(p, stage, Subject::Round, None, deps);
            }
        }
    }

    /// Freezes the graph. Stages are expanded in dependency order and a node only points at nodes
    /// added before it, so insertion order is a topological order (and a readable one).
    fn seal(mut self) -> Plan {
        let order: Vec<NodeIndex> = self.graph.node_indices().collect();
        // Recordings are read on every core (a round of 10,000 replayed nodes reads as many
        // files), then keys are computed in insertion order, which is a topological order: a
        // node is added after its dependencies.
        let paths: Vec<Option<&Path>> = self.inputs.iter().map(|(_, p)| p.as_deref()).collect();
        let digests = read_recordings(&paths);
        let inputs = std::mem::take(&mut self.inputs);
        for ((ix, (mut input, _)), recording) in order.iter().zip(inputs).zip(digests) {
            let mut upstream: Vec<String> = self
                .graph
                .neighbors_directed(*ix, Direction::Incoming)
                .map(|d| self.graph[d].key.clone())
                .collect();
            upstream.sort();
            input.upstream = upstream;
            input.recording = recording;
            self.graph[*ix].key = key::node_key(&input);
        }
        debug_assert!(self.graph.edge_indices().all(|e| {
            let (a, b) = self.graph.edge_endpoints(e).expect("edge exists");
            a < b
        }));
        let by_id = order
            .iter()
            .map(|ix| (self.graph[*ix].id.clone(), *ix))
            .collect();
        Plan {
            graph: self.graph,
            order,
            by_id,
        }
    }
}

/// The digest of each recording (none where there is no path), read on every core.
#[allow(clippy::ref_option_ref)] // the items of a slice of paths, borrowed by `chunks`
fn read_recordings(paths: &[Option<&Path>]) -> Vec<Option<String>> {
    let read = |p: &Option<&Path>| -> Option<String> { p.as_deref().map(key::recording_digest) };
    let threads = crate::sandbox::default_slots().clamp(1, 8);
    let chunk = paths.len().div_ceil(threads).max(256);
    if paths.len() <= chunk {
        return paths.iter().map(read).collect();
    }
    std::thread::scope(|s| {
        let parts: Vec<_> = paths
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(read).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().expect("reading recordings does not panic"))
            .collect()
    })
}

/// Per stage of `p` (in its dependency order), the position of a build stage upstream of it, if
/// any: one pass over the stages, each taking its needs' answers. (The loader has checked that a
/// stage working per implementation has exactly one build upstream.)
fn build_upstream(p: &Pipeline) -> Vec<Option<usize>> {
    let position: std::collections::HashMap<&str, usize> = p
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut out: Vec<Option<usize>> = Vec::with_capacity(p.stages.len());
    for s in &p.stages {
        let found = s.needs.iter().find_map(|n| {
            let j = *position.get(n.as_str())?;
            if matches!(p.stages[j].kind, StageKind::Build(_)) {
                Some(j)
            } else {
                out.get(j).copied().flatten()
            }
        });
        out.push(found);
    }
    out
}

pub fn node_id(stage: &str, subject: &Subject) -> String {
    match subject {
        Subject::Impl {
            task: None,
            model,
            sample,
        } => format!("{stage}:{model}#{sample}"),
        Subject::Impl {
            task: Some(task),
            model,
            sample,
        } => format!("{stage}:{task}/{model}#{sample}"),
        Subject::Judgment {
            judge,
            task: None,
            model,
            sample,
        } => format!("{stage}:{judge}->{model}#{sample}"),
        Subject::Judgment {
            judge,
            task: Some(task),
            model,
            sample,
        } => format!("{stage}:{judge}->{task}/{model}#{sample}"),
        Subject::Round => stage.to_string(),
    }
}

/// `nodes/<stage>/...`: built from safe names and numbers only, so it never leaves the round.
fn node_dir(stage: &SafeName, subject: &Subject) -> PathBuf {
    let base = PathBuf::from("nodes").join(stage);
    match subject {
        Subject::Impl {
            task,
            model,
            sample,
        } => match task {
            Some(t) => base.join(t),
            None => base,
        }
        .join(model)
        .join(sample.to_string()),
        Subject::Judgment {
            judge,
            task,
            model,
            sample,
        } => match task {
            Some(t) => base.join(judge).join(t),
            None => base.join(judge),
        }
        .join(format!("{model}-{sample}")),
        Subject::Round => base,
    }
}
