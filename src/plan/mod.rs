//! The plan: the validated pipeline expanded into a sealed petgraph DAG of nodes, one per unit of
//! work (a build sample, a gate run, one judgment, the aggregate), each with its cache key.

pub mod key;
pub mod kind;
pub mod subject;
pub mod walk;

pub use kind::NodeKind;
pub use subject::Subject;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;

use crate::base::names::SafeName;
use crate::config::{Pipeline, Stage, StageKind};
use key::{InputDigests, KeyInput};
use walk::build_upstream;

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// Readable and unique: `build:alpha#1` (`build:humaneval-0/alpha#1` in a suite),
    /// `judge:glm->alpha#1`, `aggregate`.
    pub id: String,
    pub stage: SafeName,
    pub kind: NodeKind,
    pub subject: Subject,
    /// The node's directory, relative to the round directory: `nodes/` and safe names only.
    pub dir: PathBuf,
    /// blake3 of everything that can change the node's result.
    pub key: String,
    /// The digest of each input the key hashes, by field: kept in the node's record, so a stale
    /// node can say which input changed.
    pub inputs: InputDigests,
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

    /// What node `id`'s key hashes, recomputed for that node alone (the plan keeps only the
    /// digests): the same input [`Plan::build`] sealed, so its key is the node's.
    pub fn key_input(&self, p: &Pipeline, id: &str) -> Option<KeyInput> {
        let n = self.node(id)?;
        let stage = p.stage(&n.stage)?;
        let mut upstream: Vec<String> = self.deps(id).iter().map(|d| d.key.clone()).collect();
        upstream.sort();
        let mut input = key::input_for(p, stage, &n.subject, upstream, &mut key::Memo::default());
        input.recording =
            key::recording_path(p, stage, &n.subject).map(|path| key::recording_digest(&path));
        Some(input)
    }

    /// `pipe graph --explain`: the node, its key, the inputs the key hashes, and the upstream
    /// nodes whose keys it hashes, by id.
    pub fn explain(&self, p: &Pipeline, id: &str) -> Option<serde_json::Value> {
        let n = self.node(id)?;
        let input = self.key_input(p, id)?;
        let upstream: serde_json::Map<String, serde_json::Value> = self
            .deps(id)
            .iter()
            .map(|d| (d.id.clone(), serde_json::Value::String(d.key.clone())))
            .collect();
        Some(serde_json::json!({
            "node": n.id,
            "key": n.key,
            "inputs": input,
            "upstream": upstream,
        }))
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
            kind: NodeKind::of(&stage.kind),
            subject,
            dir,
            key,
            inputs: InputDigests::default(),
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
            let (key, inputs) = key::seal(&input);
            let node = &mut self.graph[*ix];
            node.key = key;
            node.inputs = inputs;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::Purpose;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    fn load(dir: &Path) -> Pipeline {
        load_file(&dir.join("pipeline.toml"))
    }

    fn load_file(file: &Path) -> Pipeline {
        crate::config::load(file, Purpose::Validate).unwrap_or_else(|d| panic!("{d:?}"))
    }

    fn ids(plan: &Plan) -> Vec<&str> {
        plan.nodes().map(|n| n.id.as_str()).collect()
    }

    fn deps(plan: &Plan, id: &str) -> Vec<String> {
        plan.deps(id).iter().map(|d| d.id.clone()).collect()
    }

    fn keys(plan: &Plan) -> BTreeMap<String, String> {
        plan.nodes()
            .map(|n| (n.id.clone(), n.key.clone()))
            .collect()
    }

    /// The ids whose keys differ between two plans of the same round.
    fn changed(a: &Plan, b: &Plan) -> Vec<String> {
        let (a, b) = (keys(a), keys(b));
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        a.iter()
            .filter(|(id, k)| b[*id] != **k)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }

    #[test]
    fn a_round_expands_into_ids_kinds_and_dependencies() {
        let p = load(&fixture("mini"));
        let plan = Plan::build(&p);
        assert_eq!(
            ids(&plan),
            [
                "build:ann#1",
                "build:bob#1",
                "gate:ann#1",
                "gate:bob#1",
                "judge:ann->ann#1",
                "judge:ann->bob#1",
                "judge:bob->ann#1",
                "judge:bob->bob#1",
                "env:ann#1",
                "env:bob#1",
                "aggregate",
                "publish",
            ]
        );
        assert_eq!(plan.len(), crate::config::size::size(&p).nodes as usize);
        let kinds: Vec<NodeKind> = plan.nodes().map(|n| n.kind).collect();
        assert_eq!(kinds[0], NodeKind::Build);
        assert_eq!(kinds[4], NodeKind::Judge);
        assert_eq!(kinds[8], NodeKind::Command);
        assert_eq!(kinds[11], NodeKind::Publish);
        assert!(deps(&plan, "build:ann#1").is_empty());
        assert_eq!(deps(&plan, "gate:bob#1"), ["build:bob#1"]);
        assert_eq!(deps(&plan, "env:ann#1"), ["build:ann#1"]);
        assert_eq!(
            deps(&plan, "judge:ann->bob#1"),
            ["build:bob#1", "gate:bob#1"]
        );
        // The aggregate follows every node upstream of it; publish only the aggregate.
        assert_eq!(deps(&plan, "aggregate").len(), 10);
        assert_eq!(deps(&plan, "publish"), ["aggregate"]);
        let agg = plan.node("aggregate").unwrap();
        assert!(agg.tolerant && agg.subject == Subject::Round);
        assert_eq!(
            plan.node("judge:bob->ann#1").unwrap().dir,
            PathBuf::from("nodes/judge/bob/ann-1")
        );
        let edges: usize = plan.dep_positions().iter().map(Vec::len).sum();
        assert!(
            edges as u64 <= crate::config::size::size(&p).edges,
            "size counts edges from above"
        );
    }

    #[test]
    fn a_suite_expands_task_by_task() {
        let p = load(&fixture("suite"));
        let plan = Plan::build(&p);
        // 3 tasks x 2 models x 3 samples: builds, gates, judgments by both models, two round nodes.
        assert_eq!(plan.len(), 18 + 18 + 36 + 2);
        assert_eq!(plan.len(), crate::config::size::size(&p).nodes as usize);
        assert_eq!(ids(&plan)[0], "build:add/ann#1");
        assert_eq!(
            deps(&plan, "judge:bob->clamp/ann#3"),
            ["build:clamp/ann#3", "gate:clamp/ann#3"]
        );
        assert_eq!(
            plan.node("gate:reverse/bob#2").unwrap().dir,
            PathBuf::from("nodes/gate/reverse/bob/2")
        );
        assert_eq!(deps(&plan, "aggregate").len(), 72);
        // Each task's nodes hash that task's files: the same model and sample differ by task.
        assert_ne!(
            plan.node("build:add/ann#1").unwrap().key,
            plan.node("build:clamp/ann#1").unwrap().key
        );
    }

    #[test]
    fn every_key_is_its_input_and_explain_shows_it() {
        let p = load(&fixture("mini"));
        let plan = Plan::build(&p);
        for n in plan.nodes() {
            let input = plan.key_input(&p, &n.id).unwrap();
            assert_eq!(
                key::seal(&input),
                (n.key.clone(), n.inputs.clone()),
                "{}",
                n.id
            );
            let v = plan.explain(&p, &n.id).unwrap();
            assert_eq!(v["node"], n.id.as_str());
            assert_eq!(v["key"], n.key.as_str());
            assert_eq!(v["inputs"]["kind"], n.kind.name());
        }
        assert!(plan.explain(&p, "nope").is_none());
    }

    /// Every key of the mini round, with the inputs it hashes: a change to any key is a reviewed
    /// change of this snapshot.
    #[test]
    fn the_keys_of_the_mini_round() {
        let p = load(&fixture("mini"));
        let plan = Plan::build(&p);
        let all: Vec<serde_json::Value> = plan
            .nodes()
            .map(|n| plan.explain(&p, &n.id).unwrap())
            .collect();
        insta::assert_yaml_snapshot!(all);
    }

    /// Every key of the shipped offline round (its replayed recordings and the atomic-write
    /// task included), node by node: a change to any of them is a reviewed change of this
    /// snapshot. The inputs of each kind are pinned by the mini round's snapshot above.
    #[test]
    fn the_keys_of_the_offline_round() {
        let offline =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/atomic-write-offline.toml");
        insta::assert_yaml_snapshot!(keys(&Plan::build(&load_file(&offline))));
    }

    /// Single-shot, command and agent builds (the agent fixture's builds run a command, the
    /// offline round's `echo` builds as an agent): every field their keys hash is named.
    #[test]
    fn every_key_field_is_named() {
        let offline =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/atomic-write-offline.toml");
        let mut fields: HashSet<&str> = HashSet::new();
        for file in [
            fixture("mini/pipeline.toml"),
            fixture("agent/pipeline.toml"),
            offline,
        ] {
            let plan = Plan::build(&load_file(&file));
            for n in plan.nodes() {
                fields.extend(n.inputs.iter().map(|(f, _)| f));
            }
        }
        assert!(!fields.contains("other"), "{fields:?}");
        assert!(
            fields.contains("command") && fields.contains("agent"),
            "{fields:?}"
        );
    }

    #[test]
    fn keys_do_not_depend_on_where_the_round_lies() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a/mini"), tmp.path().join("elsewhere/b"));
        copy_dir(&fixture("mini"), &a);
        copy_dir(&fixture("mini"), &b);
        let here = keys(&Plan::build(&load(&fixture("mini"))));
        assert_eq!(keys(&Plan::build(&load(&a))), here);
        assert_eq!(keys(&Plan::build(&load(&b))), here);
    }

    #[test]
    fn a_changed_rubric_changes_the_judges_and_what_follows_only() {
        let p = load(&fixture("mini"));
        let mut q = load(&fixture("mini"));
        for s in &mut q.stages {
            if let StageKind::Judge(j) = &mut s.kind {
                j.rubric.digest = "another rubric".into();
            }
        }
        let (a, b) = (Plan::build(&p), Plan::build(&q));
        assert_eq!(
            changed(&a, &b),
            [
                "aggregate",
                "judge:ann->ann#1",
                "judge:ann->bob#1",
                "judge:bob->ann#1",
                "judge:bob->bob#1",
                "publish",
            ]
        );
        // The judges' records name the rubric; the aggregate's too (it hashes the rubric it
        // reports, and the judges' keys).
        let n = b.node("judge:ann->bob#1").unwrap();
        let old = a.node("judge:ann->bob#1").unwrap().inputs.to_map();
        assert_eq!(n.inputs.changed_from(&old), ["rubric"]);
        let old = a.node("aggregate").unwrap().inputs.to_map();
        assert_eq!(
            b.node("aggregate").unwrap().inputs.changed_from(&old),
            ["rubric", "upstream"]
        );
        let old = a.node("publish").unwrap().inputs.to_map();
        assert_eq!(
            b.node("publish").unwrap().inputs.changed_from(&old),
            ["upstream"]
        );
    }

    #[test]
    fn the_sandbox_and_the_description_change_no_key() {
        let p = load(&fixture("mini"));
        let mut q = load(&fixture("mini"));
        q.round.sandbox = match p.round.sandbox {
            crate::sandbox::SandboxChoice::Docker => crate::sandbox::SandboxChoice::Local,
            _ => crate::sandbox::SandboxChoice::Docker,
        };
        q.round.unisolated_fallback = !p.round.unisolated_fallback;
        q.round.description = Some("another description".into());
        assert!(changed(&Plan::build(&p), &Plan::build(&q)).is_empty());
    }

    /// A command build's agent-CLI image is part of its key: another image (a changed pin)
    /// re-runs the builds; without `with` the keys are those of before the field existed (the
    /// snapshots pin them).
    #[test]
    fn the_agent_cli_image_enters_the_command_builds_keys() {
        let p = load(&fixture("agent"));
        let with_image = |image: &str| {
            let mut q = load(&fixture("agent"));
            for s in &mut q.stages {
                if let StageKind::Build(b) = &mut s.kind
                    && let Some(c) = b.command.as_deref_mut()
                {
                    c.image = Some(image.to_string());
                }
            }
            Plan::build(&q)
        };
        let (a, b) = (
            Plan::build(&p),
            with_image("pipe-sandbox/cli-qwen-code:000000000000"),
        );
        let builds: Vec<&str> = a
            .nodes()
            .filter(|n| n.id.starts_with("build:"))
            .map(|n| n.id.as_str())
            .collect();
        assert!(!builds.is_empty());
        let changed = changed(&a, &b);
        for id in &builds {
            assert!(changed.iter().any(|c| c == id), "{id} kept its key");
            let old = a.node(id).unwrap().inputs.to_map();
            assert_eq!(b.node(id).unwrap().inputs.changed_from(&old), ["command"]);
        }
        let c = with_image("pipe-sandbox/cli-qwen-code:111111111111");
        let again = self::changed(&b, &c);
        assert!(builds.iter().all(|id| again.iter().any(|c| c == id)));
    }

    #[test]
    fn a_price_changes_the_aggregate_and_publish_only() {
        let p = load(&fixture("mini"));
        let mut q = load(&fixture("mini"));
        q.models[0].price.input = 9.0;
        assert_eq!(
            changed(&Plan::build(&p), &Plan::build(&q)),
            ["aggregate", "publish"]
        );
    }
}
