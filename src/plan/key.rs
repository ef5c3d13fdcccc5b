//! Cache keys. A node's key is the blake3 of a typed struct of everything that can change its
//! result ([`KeyInput`]: what every node has, and its kind's own part, [`KindInput`]); `pipe run
//! -v` prints it, `pipe graph --explain NODE` prints it with its inputs. API keys never enter it,
//! nor paths of this machine: files enter by content, under their paths inside the task.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::base::names::SafeName;
use crate::config::task::GateConfig;
use crate::config::{
    AgentSettings, BuildStage, CommandStage, GateStage, Harness, JudgeStage, Pipeline,
    PublishFormat, PublishStage, Stage, StageKind,
};
use crate::plan::kind::NodeKind;
use crate::plan::subject::Subject;
use crate::vocab::{Price, Sampling};

/// Bumped whenever the meaning of stored node outputs changes, so old records go stale.
pub const FORMAT_VERSION: u32 = 2;

/// Bumped whenever the way an implementation is laid out in a judge prompt changes: it enters
/// the judge nodes' keys, so finished judgments go stale and re-run while builds and gates stay
/// cached.
pub const LISTING_VERSION: u32 = 2;

/// Everything a node's key hashes: what every node has, and its kind's part, flattened in.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInput {
    pub format: u32,
    pub stage: SafeName,
    pub kind: NodeKind,
    pub subject: Subject,
    #[serde(flatten)]
    pub of_kind: KindInput,
    /// A replayed model's recorded exchange for this node, by content (`absent` when there is
    /// none): the recording is the model, so editing it re-runs the nodes that replay it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
    /// Upstream nodes' keys, sorted: a change upstream changes every key downstream.
    pub upstream: Vec<String>,
}

/// The part of a key that depends on the node's kind.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum KindInput {
    Build(BuildKey),
    Gate(GateKey),
    Judge(JudgeKey),
    Aggregate(AggregateKey),
    Publish(PublishKey),
    Command(CommandKey),
}

/// What identifies a model's behaviour: the endpoint's model name, sampling and provider. The
/// price is left out on purpose: costs are recomputed from recorded usage, so fixing a price does
/// not re-run builds.
#[derive(Debug, Clone, Serialize)]
pub struct ModelKey {
    pub id: SafeName,
    pub model: String,
    pub sampling: Sampling,
    pub provider: Option<ProviderKey>,
}

/// The provider behind a model: where it is called, never its key or its retry settings.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProviderKey {
    #[serde(rename = "openai")]
    OpenAi {
        base_url: String,
    },
    Replay,
}

/// A build: the harness, the model, the prompt and the task files it reads.
#[derive(Debug, Clone, Serialize)]
pub struct BuildKey {
    pub harness: Harness,
    pub model: Option<ModelKey>,
    /// The prompt template by content (for an agent build, its first message's).
    pub template: String,
    /// Task files the build reads, by path inside the task, as blake3 digests (an agent build's
    /// own under `agent/`).
    pub task: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Box<CommandHarnessKey>>,
}

/// An agent build: its budgets, and pipe's own tools and system text for the task, by digest.
#[derive(Debug, Clone, Serialize)]
pub struct AgentKey {
    pub settings: AgentSettings,
    pub harness_digest: String,
}

/// A command build: the command's settings and the names of the variables it gets, never their
/// values; the tools by content.
#[derive(Debug, Clone, Serialize)]
pub struct CommandHarnessKey {
    pub run: String,
    pub network: bool,
    pub timeout_secs: u64,
    pub env: Vec<String>,
    pub usage: Option<String>,
    pub tools: BTreeMap<String, String>,
    /// The model gateway's limits (a command without network): a limit reached ends the build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<crate::config::GatewayLimits>,
    /// The image of its agent CLIs (`with`), whose tag is a digest of every pin in it; left out
    /// without `with`, so the keys of builds without one are what they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// A gate: its limits, the task's gate settings and the files the hidden tests are made of. The
/// sandbox is where a gate runs, not what it computes: it stays out.
#[derive(Debug, Clone, Serialize)]
pub struct GateKey {
    pub timeout_secs: Option<u64>,
    pub repeat: Option<u32>,
    pub gate: GateConfig,
    pub task: BTreeMap<String, String>,
}

/// A judgment: the prompt, the rubric, the task's spec, the judge, and the listing's layout.
#[derive(Debug, Clone, Serialize)]
pub struct JudgeKey {
    pub template: String,
    /// The rubric file by content.
    pub rubric: String,
    pub task: BTreeMap<String, String>,
    pub model: Option<ModelKey>,
    pub max_impl_bytes: usize,
    pub round: SafeName,
    pub listing: u32,
}

/// The aggregate: what of the round appears in its output, beside what its upstream produced.
#[derive(Debug, Clone, Serialize)]
pub struct AggregateKey {
    pub round: RoundKey,
    /// The round's task; a suite lists every task.
    pub task: TaskNames,
    /// The models in the round's order, with the slugs and prices the numbers are made with.
    pub models: Vec<ModelEntry>,
    /// Whether every provider replays (the report says so).
    pub replayed: bool,
    /// The rubric of each judge stage upstream, by stage, by content.
    pub rubric: BTreeMap<SafeName, String>,
}

/// The round's identity as the aggregate writes it; its sandbox and description stay out.
#[derive(Debug, Clone, Serialize)]
pub struct RoundKey {
    pub id: SafeName,
    pub name: SafeName,
    pub date: SafeName,
    pub samples: u32,
    pub representative_sample: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum TaskNames {
    One(SafeName),
    Suite(Vec<SafeName>),
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelEntry {
    pub id: SafeName,
    pub slug: String,
    pub price: Price,
}

/// A publish node: the formats it writes (everything else comes from the aggregate's output).
#[derive(Debug, Clone, Serialize)]
pub struct PublishKey {
    pub formats: Vec<PublishFormat>,
}

/// A command stage: the command and its time limit.
#[derive(Debug, Clone, Serialize)]
pub struct CommandKey {
    pub command: String,
    pub timeout_secs: u64,
}

/// The fields a key hashes, by name, each with the digest of its value: what a node record keeps
/// so `pipe status` can name the input that changed. The node's identity (stage, kind, subject)
/// is its id and is left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputDigests(Vec<(&'static str, blake3::Hash)>);

/// Every field name of [`KeyInput`] and of each [`KindInput`] (the plan's tests check the list).
const FIELDS: [&str; 22] = [
    "format",
    "harness",
    "model",
    "template",
    "task",
    "agent",
    "command",
    "timeout_secs",
    "repeat",
    "gate",
    "rubric",
    "max_impl_bytes",
    "round",
    "listing",
    "models",
    "replayed",
    "formats",
    "recording",
    "upstream",
    "stage",
    "kind",
    "subject",
];

/// Fields that name the node rather than feed it.
const IDENTITY: [&str; 3] = ["stage", "kind", "subject"];

impl InputDigests {
    /// (field, hex digest), in the key's order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, String)> + '_ {
        self.0.iter().map(|(n, h)| (*n, h.to_hex().to_string()))
    }

    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter().map(|(n, h)| (n.to_string(), h)).collect()
    }

    /// The fields whose digests differ from `recorded` (a record's), in the key's order; a field
    /// only one side has counts as changed.
    pub fn changed_from(&self, recorded: &BTreeMap<String, String>) -> Vec<String> {
        let mut out: Vec<String> = self
            .iter()
            .filter(|(n, h)| recorded.get(*n) != Some(h))
            .map(|(n, _)| n.to_string())
            .collect();
        out.extend(
            recorded
                .keys()
                .filter(|k| !self.0.iter().any(|(n, _)| n == k))
                .cloned(),
        );
        out
    }
}

impl Serialize for InputDigests {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// A node's key and the digest of each field it hashes, from its input made into JSON once.
pub fn seal(input: &KeyInput) -> (String, InputDigests) {
    let value = serde_json::to_value(input).expect("key input serialises");
    let key = blake3::hash(value.to_string().as_bytes())
        .to_hex()
        .to_string();
    let mut fields = Vec::new();
    if let serde_json::Value::Object(map) = &value {
        for (name, v) in map {
            // A field missing from the list (a test checks there is none) still counts.
            let name = FIELDS.iter().find(|f| *f == name).unwrap_or(&"other");
            if !IDENTITY.contains(name) {
                fields.push((*name, blake3::hash(v.to_string().as_bytes())));
            }
        }
    }
    (key, InputDigests(fields))
}

pub fn node_key(input: &KeyInput) -> String {
    seal(input).0
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

fn model_key(p: &Pipeline, id: &str) -> Option<ModelKey> {
    let m = p.model(id)?;
    Some(ModelKey {
        id: m.id.clone(),
        model: m.model.clone(),
        sampling: m.sampling.clone(),
        provider: p.providers.get(&m.provider).map(|pr| match &pr.kind {
            crate::config::ProviderKind::OpenAi { base_url, .. } => ProviderKey::OpenAi {
                base_url: base_url.clone(),
            },
            crate::config::ProviderKind::Replay { .. } => ProviderKey::Replay,
        }),
    })
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

/// A node's key input without its upstream keys and recording (the plan adds them when it seals).
pub fn input_for(
    p: &Pipeline,
    stage: &Stage,
    subject: &Subject,
    upstream: Vec<String>,
    memo: &mut Memo,
) -> KeyInput {
    let of_kind = match &stage.kind {
        StageKind::Build(b) => KindInput::Build(build_key(p, stage, b, subject, memo)),
        StageKind::Gate(GateStage {
            timeout_secs,
            repeat,
        }) => {
            let task = p.task(subject.task());
            KindInput::Gate(GateKey {
                timeout_secs: *timeout_secs,
                repeat: *repeat,
                gate: task.gate.clone(),
                task: task.digests.gate.clone(),
            })
        }
        StageKind::Judge(j) => KindInput::Judge(judge_key(p, stage, j, subject, memo)),
        StageKind::Aggregate => KindInput::Aggregate(aggregate_key(p, stage)),
        StageKind::Publish(PublishStage { formats }) => KindInput::Publish(PublishKey {
            formats: formats.clone(),
        }),
        StageKind::Command(CommandStage {
            command,
            timeout_secs,
        }) => KindInput::Command(CommandKey {
            command: command.clone(),
            timeout_secs: *timeout_secs,
        }),
    };
    KeyInput {
        format: FORMAT_VERSION,
        stage: stage.name.clone(),
        kind: NodeKind::of(&stage.kind),
        subject: subject.clone(),
        of_kind,
        recording: None,
        upstream,
    }
}

fn build_key(
    p: &Pipeline,
    stage: &Stage,
    b: &BuildStage,
    subject: &Subject,
    memo: &mut Memo,
) -> BuildKey {
    let task = p.task(subject.task());
    let task_name = subject.task().map_or("", SafeName::as_str);
    let model = match subject {
        Subject::Impl { model, .. } => p.model(model),
        _ => None,
    };
    let harness = model.map_or(b.harness, |m| b.harness_for(m));
    let mut key = BuildKey {
        harness,
        model: model.and_then(|m| model_key(p, &m.id)),
        template: String::new(),
        task: task.digests.build.clone(),
        agent: None,
        command: None,
    };
    if harness == Harness::Agent {
        // The agent's budgets, pipe's own tools and system text, the visible tests and the
        // task's [agent] table all change what an agent build does.
        key.agent = Some(AgentKey {
            settings: b.agent.clone(),
            harness_digest: memo.get("harness", &stage.name, task_name, || {
                crate::config::harness::harness_digest(task, &b.agent)
            }),
        });
        key.template = memo.get("agent-prompt", &stage.name, "", || {
            digest(&b.agent_prompt.as_ref().unwrap_or(&b.prompt).text)
        });
        key.task.extend(
            task.digests
                .agent
                .iter()
                .map(|(k, v)| (format!("agent/{k}"), v.clone())),
        );
    } else {
        if let (Harness::Command, Some(c)) = (harness, &b.command) {
            key.command = Some(Box::new(CommandHarnessKey {
                run: c.run.text.clone(),
                network: c.network,
                timeout_secs: c.timeout_secs,
                env: c.env.clone(),
                usage: c.usage.clone(),
                tools: c.tools_digests.clone(),
                gateway: c.gateway,
                image: c.image.clone(),
            }));
        }
        key.template = memo.get("prompt", &stage.name, "", || digest(&b.prompt.text));
    }
    key
}

fn judge_key(
    p: &Pipeline,
    stage: &Stage,
    j: &JudgeStage,
    subject: &Subject,
    memo: &mut Memo,
) -> JudgeKey {
    let task_name = subject.task().map_or("", SafeName::as_str);
    let spec = memo.get("spec", task_name, "", || {
        digest(&p.task(subject.task()).spec)
    });
    JudgeKey {
        template: memo.get("prompt", &stage.name, "", || digest(&j.prompt.text)),
        rubric: j.rubric.digest.clone(),
        task: BTreeMap::from([("spec".to_string(), spec)]),
        model: match subject {
            Subject::Judgment { judge, .. } => model_key(p, judge),
            _ => None,
        },
        max_impl_bytes: j.max_impl_bytes,
        round: p.round.id.clone(),
        // The listing's layout is the prompt as much as the template is: a new layout re-runs
        // the judges, and only them (and what follows).
        listing: LISTING_VERSION,
    }
}

fn aggregate_key(p: &Pipeline, stage: &Stage) -> AggregateKey {
    let rubric = p
        .upstream_of(stage)
        .into_iter()
        .filter_map(|name| match &p.stage(name)?.kind {
            StageKind::Judge(j) => Some((p.stage(name)?.name.clone(), j.rubric.digest.clone())),
            _ => None,
        })
        .collect();
    AggregateKey {
        round: RoundKey {
            id: p.round.id.clone(),
            name: p.round.name.clone(),
            date: p.round.date.clone(),
            samples: p.round.samples,
            representative_sample: p.round.representative_sample,
        },
        // One task keeps its name here; a suite lists every task.
        task: if p.is_suite() {
            TaskNames::Suite(p.tasks.iter().map(|t| t.name.clone()).collect())
        } else {
            TaskNames::One(p.task(None).name.clone())
        },
        models: p
            .models
            .iter()
            .map(|m| ModelEntry {
                id: m.id.clone(),
                slug: m.model.clone(),
                price: m.price,
            })
            .collect(),
        replayed: p
            .providers
            .values()
            .all(|pr| matches!(pr.kind, crate::config::ProviderKind::Replay { .. })),
        rubric,
    }
}
