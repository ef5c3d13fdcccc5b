//! Cache keys. A node's key is the blake3 of a serialisable struct of everything that can change
//! its result; `pipe run -v` prints it. API keys never enter it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::base::names::SafeName;
use crate::config::{
    BuildStage, CommandStage, GateStage, Harness, JudgeStage, Pipeline, PublishStage, Stage,
    StageKind,
};
use crate::plan::subject::Subject;

/// Bumped whenever the meaning of stored node outputs changes, so old records go stale.
pub const FORMAT_VERSION: u32 = 2;

/// Bumped whenever the way an implementation is laid out in a judge prompt changes: it enters
/// the judge nodes' keys, so finished judgments go stale and re-run while builds and gates stay
/// cached.
pub const LISTING_VERSION: u32 = 2;

#[derive(Debug, Serialize)]
pub struct KeyInput {
    pub format: u32,
    pub stage: String,
    pub kind: &'static str,
    /// The stage's resolved settings.
    pub config: serde_json::Value,
    /// The model whose call produces this node's result (the builder or the judge).
    pub model: Option<serde_json::Value>,
    pub subject: Subject,
    /// Task files the stage reads, by path, as blake3 digests.
    pub task: BTreeMap<String, String>,
    pub template: Option<String>,
    pub rubric: Option<String>,
    /// A replayed model's recorded exchange for this node, by content (`absent` when there is
    /// none): the recording is the model, so editing it re-runs the nodes that replay it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
    /// Upstream nodes' keys, sorted: a change upstream changes every key downstream.
    pub upstream: Vec<String>,
}

pub fn node_key(input: &KeyInput) -> String {
    let bytes = serde_json::to_vec(input).expect("key input serialises");
    blake3::hash(&bytes).to_hex().to_string()
}

fn digest(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

/// Digests many nodes share (a stage's template, a task's spec, an agent harness), computed once
/// per plan: a template of a megabyte is hashed once, not once per node.
#[derive(Debug, Default)]
pub struct Memo {
    digests: HashMap<(&'static str, String, String), String>,
}

impl Memo {
    /// The digest named `what` of (`a`, `b`), from `compute` the first time.
    fn get(
        &mut self,
        what: &'static str,
        a: &str,
        b: &str,
        compute: impl FnOnce() -> String,
    ) -> String {
        self.digests
            .entry((what, a.to_string(), b.to_string()))
            .or_insert_with(compute)
            .clone()
    }
}

fn model_part(p: &Pipeline, id: &str) -> Option<serde_json::Value> {
    let m = p.model(id)?;
    let provider = p.providers.get(&m.provider);
    // What identifies the model's behaviour: the endpoint's model name and sampling. The price is
    // left out on purpose: costs are recomputed from recorded usage, so fixing a price does not
    // re-run builds.
    Some(serde_json::json!({
        "id": m.id,
        "model": m.model,
        "sampling": m.sampling,
        "provider": provider.map(|pr| match &pr.kind {
            crate::config::ProviderKind::OpenAi { base_url, .. } => serde_json::json!({"kind": "openai", "base_url": base_url}),
            crate::config::ProviderKind::Replay { .. } => serde_json::json!({"kind": "replay"}),
        }),
    }))
}

/// Where a replayed model's exchange for this node lies (read by [`recording_digest`]); none
/// for a live model.
fn exchange_of(p: &Pipeline, stage: &Stage, model: &str, subject: &Subject) -> Option<PathBuf> {
    let m = p.model(model)?;
    let crate::config::ProviderKind::Replay { recordings, .. } =
        &p.providers.get(&m.provider)?.kind
    else {
        return None;
    };
    let site = crate::provider::CallSite {
        stage: stage.name.clone(),
        model: m.id.clone(),
        subject: subject.call_subject()?,
        turn: 0,
    };
    crate::provider::replay::exchange_path(recordings, &site).ok()
}

/// The recording a node replays, if its model is replayed: the builder's exchange for a build
/// that calls a model (not an agent CLI), the judge's for a judgment.
pub fn recording_path(p: &Pipeline, stage: &Stage, subject: &Subject) -> Option<PathBuf> {
    match (&stage.kind, subject) {
        (StageKind::Build(BuildStage { harness, .. }), Subject::Impl { model, .. }) => {
            let m = p.model(model)?;
            (m.harness.unwrap_or(*harness) != Harness::Command)
                .then(|| exchange_of(p, stage, model, subject))
                .flatten()
        }
        (StageKind::Judge(_), Subject::Judgment { judge, .. }) => {
            exchange_of(p, stage, judge, subject)
        }
        _ => None,
    }
}

/// A recording by content, `absent` when there is no file: the value of [`KeyInput::recording`].
pub fn recording_digest(path: &Path) -> String {
    std::fs::read(path).map_or_else(
        |_| "absent".to_string(),
        |bytes| blake3::hash(&bytes).to_hex().to_string(),
    )
}

pub fn input_for(
    p: &Pipeline,
    stage: &Stage,
    subject: &Subject,
    upstream: Vec<String>,
    memo: &mut Memo,
) -> KeyInput {
    let task_name = subject.task().map_or("", SafeName::as_str);
    let mut input = KeyInput {
        format: FORMAT_VERSION,
        stage: stage.name.to_string(),
        kind: stage.kind_name(),
        config: serde_json::Value::Null,
        model: None,
        subject: subject.clone(),
        task: BTreeMap::new(),
        template: None,
        rubric: None,
        recording: None,
        upstream,
    };
    match &stage.kind {
        StageKind::Build(BuildStage {
            prompt,
            harness,
            agent,
            agent_prompt,
            command,
        }) => {
            let model = match subject {
                Subject::Impl { model, .. } => p.model(model),
                _ => None,
            };
            let harness = model.map_or(*harness, |m| m.harness.unwrap_or(*harness));
            input.task.clone_from(&p.task(subject.task()).digests.build);
            if harness == Harness::Agent {
                // The agent's budgets, pipe's own tools and system text, the visible tests and
                // the task's [agent] table all change what an agent build does.
                input.config = serde_json::json!({
                    "harness": harness,
                    "agent": agent,
                    "harness_digest": memo.get("harness", &stage.name, task_name, || {
                        crate::config::harness::harness_digest(p.task(subject.task()), agent)
                    }),
                });
                input.template = Some(memo.get("agent-prompt", &stage.name, "", || {
                    digest(&agent_prompt.as_ref().unwrap_or(prompt).text)
                }));
                input.task.extend(
                    p.task(subject.task())
                        .digests
                        .agent
                        .iter()
                        .map(|(k, v)| (format!("agent/{k}"), v.clone())),
                );
            } else {
                input.config = serde_json::json!({"harness": harness});
                if let Some(c) = command {
                    // The command's settings and the names of the variables it gets, never their
                    // values; the tools by content.
                    input.config["command"] = serde_json::json!({
                        "run": c.run.text,
                        "network": c.network,
                        "timeout_secs": c.timeout_secs,
                        "env": c.env,
                        "usage": c.usage,
                        "tools": c.tools_digests,
                    });
                }
                input.template = Some(memo.get("prompt", &stage.name, "", || digest(&prompt.text)));
            }
            if let Subject::Impl { model, .. } = subject {
                input.model = model_part(p, model);
            }
        }
        StageKind::Gate(GateStage {
            timeout_secs,
            repeat,
        }) => {
            // The sandbox is where a gate runs, not what it computes: local and docker give the
            // same per-test results, so switching does not re-run finished gates.
            input.config = serde_json::json!({"timeout_secs": timeout_secs, "repeat": repeat, "gate": p.task(subject.task()).gate});
            input.task.clone_from(&p.task(subject.task()).digests.gate);
        }
        StageKind::Judge(JudgeStage {
            prompt,
            rubric,
            max_impl_bytes,
        }) => {
            // The listing's layout is the prompt as much as the template is: a new layout
            // re-runs the judges, and only them (and what follows).
            input.config = serde_json::json!({
                "max_impl_bytes": max_impl_bytes,
                "round": p.round.id,
                "listing": LISTING_VERSION,
            });
            input.template = Some(memo.get("prompt", &stage.name, "", || digest(&prompt.text)));
            input.rubric = Some(rubric.digest.clone());
            let spec = memo.get("spec", task_name, "", || {
                digest(&p.task(subject.task()).spec)
            });
            input.task.insert("spec".into(), spec);
            if let Subject::Judgment { judge, .. } = subject {
                input.model = model_part(p, judge);
            }
        }
        StageKind::Aggregate => {
            // One task keeps its name here (and so its keys); a suite lists every task.
            let tasks = if p.is_suite() {
                serde_json::json!(p.tasks.iter().map(|t| &t.name).collect::<Vec<_>>())
            } else {
                serde_json::json!(p.task(None).name)
            };
            let prices: BTreeMap<&str, _> =
                p.models.iter().map(|m| (m.id.as_str(), m.price)).collect();
            let slugs: BTreeMap<&str, &str> = p
                .models
                .iter()
                .map(|m| (m.id.as_str(), m.model.as_str()))
                .collect();
            // The round's settings that reach the aggregate's numbers and text; the sandbox is
            // where gates ran, read from the gates' own outputs, so it stays out of the key.
            let mut round = serde_json::to_value(&p.round).expect("round serialises");
            if let Some(r) = round.as_object_mut() {
                r.remove("sandbox");
            }
            input.config = serde_json::json!({
                "prices": prices, "slugs": slugs, "round": round, "task": tasks,
                "representative_sample": p.round.representative_sample,
            });
        }
        StageKind::Publish(PublishStage { formats }) => {
            input.config = serde_json::json!({"formats": formats});
        }
        StageKind::Command(CommandStage {
            command,
            timeout_secs,
        }) => {
            input.config = serde_json::json!({"command": command, "timeout_secs": timeout_secs});
        }
    }
    input
}
