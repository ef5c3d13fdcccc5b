//! Pipeline file -> validated [`Pipeline`], with every problem reported at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use petgraph::algo::kosaraju_scc;
use petgraph::graph::DiGraph;

use super::check::{kind_of, section};
use super::fields::fields_of;
use super::raw::{
    RawAgentSettings, RawAggregateStage, RawBuildStage, RawCommandHarness, RawCommandStage,
    RawGateStage, RawJudgeStage, RawModel, RawProvider, RawPublishStage, RawRound, RawStageKind,
    RawTop,
};
use super::{
    AgentSettings, BuildStage, CommandHarness, CommandStage, GateStage, Harness, JudgeStage,
    ModelConfig, Pipeline, ProviderConfig, ProviderKind, PublishFormat, PublishStage, Round, Stage,
    StageKind, Template,
};
use crate::base::diag::{Diag, did_you_mean};
use crate::base::limits;
use crate::base::names::{NameError, SafeName, shown};
use crate::config::rubric::Rubric;
use crate::config::task::Task;
use crate::config::templates::{self, BuildCtx, CommandCtx, JudgeCtx};
use crate::sandbox::SandboxChoice;
use crate::source::{KeyPath, SourceDoc};
use crate::vocab::{Price, Sampling};

/// Default first backoff ceiling of an openai provider, in milliseconds.
pub const DEFAULT_RETRY_BASE_MS: u64 = 1000;
/// Default longest backoff of an openai provider, in milliseconds.
pub const DEFAULT_RETRY_MAX_MS: u64 = 60_000;

/// When the pipeline is loaded for a run, a missing API-key variable is an error; for `validate`
/// it is a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Validate,
    Run,
}

/// Loads and validates a pipeline file. `Err` holds every error found (and the warnings);
/// `Ok` carries the warnings in [`Pipeline::warnings`].
pub fn load(file: &Path, purpose: Purpose) -> Result<Pipeline, Vec<Diag>> {
    let doc = SourceDoc::load(file).map_err(|d| vec![d])?;
    let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut l = Loader {
        doc: &doc,
        dir,
        diags: Vec::new(),
        purpose,
    };
    let pipeline = l.pipeline();
    if let Some(p) = &pipeline {
        l.diags.extend(plan_too_large(&doc, p));
    }
    let has_errors = l.diags.iter().any(Diag::is_error);
    match pipeline {
        Some(mut p) if !has_errors => {
            p.warnings = l.diags;
            Ok(p)
        }
        _ => Err(l.diags),
    }
}

/// A round whose plan would pass [`MAX_PLAN_NODES`](limits::MAX_PLAN_NODES) nodes or
/// [`MAX_PLAN_EDGES`](limits::MAX_PLAN_EDGES) edges is refused before it is expanded (10,000
/// models judging each other are 100,000,000 judgments), pointing at the stage that makes most.
fn plan_too_large(doc: &SourceDoc, p: &Pipeline) -> Option<Diag> {
    let size = super::size::size(p);
    let (what, count, limit) = if size.nodes > limits::MAX_PLAN_NODES {
        ("nodes", size.nodes, limits::MAX_PLAN_NODES)
    } else if size.edges > limits::MAX_PLAN_EDGES {
        (
            "dependencies between nodes",
            size.edges,
            limits::MAX_PLAN_EDGES,
        )
    } else {
        return None;
    };
    let (stage, nodes) = &size.largest;
    Some(
        doc.error_at(
            &root().key("stages").key(stage),
            format!(
                "this round expands to {count} {what}, over pipe's limit of {limit}; stage `{stage}` alone makes {nodes} nodes ({} models, {} samples, {} task(s))",
                p.models.len(),
                p.round.samples,
                p.tasks.len()
            ),
            true,
        )
        .help("pipe plans every node of a round before it runs any: split the round into several pipelines (fewer models, samples or tasks each)"),
    )
}

struct Loader<'a> {
    doc: &'a SourceDoc,
    dir: PathBuf,
    diags: Vec<Diag>,
    purpose: Purpose,
}

fn root() -> KeyPath {
    KeyPath::root()
}

impl Loader<'_> {
    fn err(&mut self, path: &KeyPath, message: impl Into<String>) -> &mut Diag {
        self.diags.push(self.doc.error_at(path, message, false));
        self.diags.last_mut().expect("just pushed")
    }

    /// Proves a name from the file safe; an unsafe one is a located error saying why, with the
    /// rule and `why` the name must be safe (`on_key`: the name is a key, like a stage's).
    fn safe_name(
        &mut self,
        at: &KeyPath,
        what: &str,
        name: &str,
        on_key: bool,
        why: &str,
    ) -> Option<SafeName> {
        match SafeName::new(name) {
            Ok(n) => Some(n),
            Err(e) => {
                let d = self
                    .doc
                    .error_at(
                        at,
                        format!("{what} `{}` is not a safe name: {e}", shown(name)),
                        on_key,
                    )
                    .help(format!("{why}: {}", NameError::RULE));
                self.diags.push(d);
                None
            }
        }
    }

    fn pipeline(&mut self) -> Option<Pipeline> {
        if !self.doc.value.is_object() {
            self.err(&root(), "a pipeline file must be a table of sections");
            return None;
        }
        self.diags.extend(self.doc.non_finite_errors());
        // Unknown top-level sections; `round` missing is reported here too.
        section::<RawTop>(self.doc, &root(), "the pipeline file", &mut self.diags);
        let round = self.round();
        let providers = self.providers();
        let models = self.models(&providers);
        let stages = self.stages();
        let tasks = round.as_ref().and_then(|(_, dirs)| self.tasks(dirs));
        if let (Some(stages), Some(tasks)) = (&stages, &tasks) {
            for task in tasks {
                self.check_agent(&models, stages, task);
            }
        }
        let (round, _) = round?;
        let mut stages = stages?;
        let tasks = tasks?;
        if tasks.len() > 1 {
            self.suite_checks(&mut stages);
        }
        Some(Pipeline::new(
            self.doc.file.clone(),
            round,
            providers,
            models,
            stages,
            tasks,
        ))
    }

    fn round(&mut self) -> Option<(Round, Vec<(KeyPath, String)>)> {
        let at = root().key("round");
        let raw: RawRound = section(self.doc, &at, "[round]", &mut self.diags)?;
        let mut ok = true;
        let name = self.safe_name(
            &at.key("name"),
            "round name",
            &raw.name,
            false,
            "the round's directory is out/<name>-<date>",
        );
        let date = match raw.date {
            Some(d) => {
                let date = crate::base::names::date(&d);
                if date.is_none() {
                    self.err(
                        &at.key("date"),
                        format!("date `{}` is not a date", shown(&d)),
                    )
                    .help = Some("write it as YYYY-MM-DD".into());
                }
                date
            }
            None => SafeName::new(jiff::Zoned::now().date().to_string()).ok(),
        };
        let id = match (&name, &date) {
            (Some(name), Some(date)) => match SafeName::joined(name, date) {
                Ok(id) => Some(id),
                Err(e) => {
                    self.err(
                        &at.key("name"),
                        format!("the round id `{name}-{date}` is not a safe name: {e}"),
                    )
                    .help = Some(format!(
                        "the round's directory is out/<name>-<date>: shorten the name to {} bytes",
                        crate::base::names::MAX_NAME_BYTES - date.len() - 1
                    ));
                    None
                }
            },
            _ => None,
        };
        ok &= id.is_some();
        let samples = raw.samples.unwrap_or(1);
        if samples == 0 {
            self.err(&at.key("samples"), "samples must be at least 1");
            ok = false;
        }
        if let Some(r) = raw.representative_sample
            && (r == 0 || r > samples)
        {
            self.err(
                &at.key("representative_sample"),
                format!("representative_sample {r} is not a sample of this round (1..={samples})"),
            );
            ok = false;
        }
        let sandbox = match raw.sandbox.as_deref() {
            None | Some("local") => SandboxChoice::Local,
            Some("docker") => SandboxChoice::Docker,
            Some("unisolated") => SandboxChoice::Unisolated,
            Some("auto") => SandboxChoice::Auto,
            Some(other) => {
                let help = did_you_mean(other, SandboxChoice::NAMES);
                self.err(&at.key("sandbox"), format!("unknown sandbox `{other}`"))
                    .help = help;
                ok = false;
                SandboxChoice::Local
            }
        };
        let unisolated_fallback = raw.unisolated_fallback.unwrap_or(false);
        if unisolated_fallback && sandbox != SandboxChoice::Auto {
            let set = if raw.sandbox.is_some() {
                format!("`sandbox = \"{}\"`", sandbox.name())
            } else {
                "`sandbox = \"local\"` (the default)".to_string()
            };
            self.err(
                &at.key("unisolated_fallback"),
                format!("`unisolated_fallback` applies to `sandbox = \"auto\"` only, not to {set}"),
            )
            .help = Some(match sandbox {
                SandboxChoice::Unisolated => {
                    "`sandbox = \"unisolated\"` never isolates: remove `unisolated_fallback`".into()
                }
                _ => "`local` requires bubblewrap and `docker` the engine, never falling back: remove `unisolated_fallback`, or set `sandbox = \"auto\"` to fall back to no isolation where neither works".into(),
            });
            ok = false;
        }
        let tasks = match (raw.task, raw.tasks) {
            (Some(t), None) => vec![(at.key("task"), t)],
            (None, Some(ts)) if !ts.is_empty() => ts
                .into_iter()
                .enumerate()
                .map(|(i, t)| (at.key("tasks").index(i), t))
                .collect(),
            (None, Some(_)) => {
                self.err(&at.key("tasks"), "`tasks` is empty").help = Some(
                    "name task directories or globs, e.g. tasks = [\"../tasks/humaneval/*\"]"
                        .into(),
                );
                ok = false;
                Vec::new()
            }
            (Some(_), Some(_)) => {
                self.err(
                    &at.key("tasks"),
                    "a round names `task` or `tasks`, not both",
                )
                .help = Some("keep `tasks` and move the single task into its list".into());
                ok = false;
                Vec::new()
            }
            (None, None) => {
                self.err(&at, "the round names no task").help = Some(
                    "add `task = \"../tasks/NAME\"` (or `tasks = [...]` for a suite) to [round]"
                        .into(),
                );
                ok = false;
                Vec::new()
            }
        };
        let (Some(name), Some(date), Some(id)) = (name, date, id) else {
            return None;
        };
        ok.then_some((
            Round {
                name,
                date,
                id,
                samples,
                sandbox,
                unisolated_fallback,
                representative_sample: raw.representative_sample,
                description: raw.description,
            },
            tasks,
        ))
    }

    fn providers(&mut self) -> BTreeMap<String, ProviderConfig> {
        let mut out = BTreeMap::new();
        let at = root().key("providers");
        let Some(value) = self.doc.get(&at) else {
            return out;
        };
        let Some(map) = value.as_object() else {
            let msg = format!(
                "[providers] must be a table of named providers, found {}",
                kind_of(value)
            );
            self.err(&at, msg);
            return out;
        };
        for name in map.keys() {
            let p = at.key(name);
            let Some(raw) = section::<RawProvider>(
                self.doc,
                &p,
                &format!("provider `{name}`"),
                &mut self.diags,
            ) else {
                continue;
            };
            let kind = match raw.kind.as_str() {
                "openai" => {
                    let Some(base_url) = raw.base_url.clone() else {
                        self.err(
                            &p,
                            format!("provider `{name}` of kind openai needs `base_url`"),
                        )
                        .help = Some("e.g. base_url = \"https://openrouter.ai/api/v1\"".into());
                        continue;
                    };
                    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                        self.err(
                            &p.key("base_url"),
                            format!("base_url `{base_url}` is not an http(s) URL"),
                        );
                    }
                    if let Some(var) = &raw.api_key_env {
                        self.check_key_var(&p.key("api_key_env"), var);
                    }
                    for (key, set) in [
                        ("delay_ms", raw.delay_ms.is_some()),
                        ("delay_jitter_ms", raw.delay_jitter_ms.is_some()),
                    ] {
                        if set {
                            self.err(&p.key(key), format!("`{key}` is for replay providers"))
                                .help = Some("an openai provider's latency is the endpoint's own: remove the key".into());
                        }
                    }
                    let (retry_base_ms, retry_max_ms) = self.retry_backoff(&p, &raw);
                    self.timeout(&p.key("timeout_secs"), raw.timeout_secs, "one model call");
                    ProviderKind::OpenAi {
                        base_url,
                        api_key_env: raw.api_key_env.clone(),
                        timeout_secs: raw.timeout_secs.unwrap_or(600),
                        max_retries: raw.max_retries.unwrap_or(5),
                        retry_base_ms,
                        retry_max_ms,
                    }
                }
                "replay" => {
                    let Some(rel) = raw.recordings.clone() else {
                        self.err(&p, format!("provider `{name}` of kind replay needs `recordings`")).help =
                            Some("the directory a `pipe run --record DIR` wrote, relative to the pipeline file".into());
                        continue;
                    };
                    let dir = self.dir.join(&rel);
                    if !dir.is_dir() {
                        self.err(
                            &p.key("recordings"),
                            format!("recordings directory `{rel}` not found"),
                        );
                    }
                    let delay_ms = raw.delay_ms.unwrap_or(0);
                    let jitter_ms = raw.delay_jitter_ms.unwrap_or(0);
                    if jitter_ms > delay_ms {
                        self.err(
                            &p.key("delay_jitter_ms"),
                            format!(
                                "delay_jitter_ms {jitter_ms} is larger than delay_ms {delay_ms}"
                            ),
                        )
                        .help =
                            Some("a latency of delay_ms +- delay_jitter_ms must stay >= 0".into());
                    }
                    ProviderKind::Replay {
                        recordings: dir,
                        delay_ms,
                        jitter_ms,
                    }
                }
                other => {
                    let help = did_you_mean(other, ["openai", "replay"]);
                    self.err(&p.key("kind"), format!("unknown provider kind `{other}`"))
                        .help = help;
                    continue;
                }
            };
            if raw.max_concurrency == Some(0) {
                self.err(
                    &p.key("max_concurrency"),
                    "max_concurrency must be at least 1",
                );
            }
            out.insert(
                name.clone(),
                ProviderConfig {
                    name: name.clone(),
                    kind,
                    max_concurrency: raw.max_concurrency.unwrap_or(4).max(1) as usize,
                },
            );
        }
        out
    }

    /// `retry_base_ms` and `retry_max_ms` of an openai provider, defaults filled in: both at
    /// least 1, and the base no longer than the cap.
    fn retry_backoff(&mut self, p: &KeyPath, raw: &RawProvider) -> (u64, u64) {
        let base = raw.retry_base_ms.unwrap_or(DEFAULT_RETRY_BASE_MS);
        let max = raw.retry_max_ms.unwrap_or(DEFAULT_RETRY_MAX_MS);
        let mut ok = true;
        for (key, value) in [("retry_base_ms", base), ("retry_max_ms", max)] {
            if value == 0 {
                self.err(&p.key(key), format!("{key} must be at least 1"))
                    .help =
                    Some("a wait in milliseconds; leave the key out for the default".into());
                ok = false;
            }
        }
        if ok && base > max {
            // Point at whichever of the two the file sets (the base when it sets both).
            let (key, message) = match (raw.retry_base_ms, raw.retry_max_ms) {
                (_, None) => (
                    "retry_base_ms",
                    format!("retry_base_ms {base} exceeds retry_max_ms ({max}, the default)"),
                ),
                (None, Some(_)) => (
                    "retry_max_ms",
                    format!("retry_max_ms {max} is below retry_base_ms ({base}, the default)"),
                ),
                (Some(_), Some(_)) => (
                    "retry_base_ms",
                    format!("retry_base_ms {base} exceeds retry_max_ms {max}"),
                ),
            };
            self.err(&p.key(key), message).help = Some(
                "the first backoff (retry_base_ms) must not be longer than the longest (retry_max_ms)"
                    .into(),
            );
        }
        (base, max)
    }

    fn check_key_var(&mut self, at: &KeyPath, var: &str) {
        if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
            return;
        }
        let message = format!("the API key variable `{var}` is not set");
        let help = format!(
            "export {var}=... before `pipe run` (the key is read from the environment only)"
        );
        let d = match self.purpose {
            Purpose::Validate => self.doc.warning_at(at, message, false),
            Purpose::Run => self.doc.error_at(at, message, false),
        };
        self.diags.push(d.help(help));
    }

    fn models(&mut self, providers: &BTreeMap<String, ProviderConfig>) -> Vec<ModelConfig> {
        let at = root().key("models");
        let mut out: Vec<ModelConfig> = Vec::new();
        let Some(value) = self.doc.get(&at) else {
            self.err(&root(), "the pipeline has no models").help =
                Some("add at least one [[models]] entry".into());
            return out;
        };
        let Some(items) = value.as_array() else {
            let msg = format!(
                "`models` must be an array of tables ([[models]]), found {}",
                kind_of(value)
            );
            self.err(&at, msg);
            return out;
        };
        // Each id's first position, for duplicates.
        let mut seen: HashMap<String, usize> = HashMap::new();
        for i in 0..items.len() {
            let p = at.index(i);
            self.unknown_price_keys(&p.key("price"));
            let Some(raw) = section::<RawModel>(self.doc, &p, "a model", &mut self.diags) else {
                continue;
            };
            let id = self.safe_name(
                &p.key("id"),
                "model id",
                &raw.id,
                false,
                "the id names the model's node directories and recordings; the endpoint's name goes in `model`",
            );
            if let Some(&first) = seen.get(&raw.id) {
                self.err(&p.key("id"), format!("duplicate model id `{}`", raw.id))
                    .help = Some(format!(
                    "model ids must be unique within a round; `models[{first}]` already uses `{}`",
                    raw.id
                ));
            } else {
                seen.insert(raw.id.clone(), out.len());
            }
            if !providers.contains_key(&raw.provider)
                && self
                    .doc
                    .get(&root().key("providers").key(&raw.provider))
                    .is_none()
            {
                let help = did_you_mean(&raw.provider, providers.keys().map(String::as_str));
                self.err(
                    &p.key("provider"),
                    format!(
                        "model `{}` uses unknown provider `{}`",
                        raw.id, raw.provider
                    ),
                )
                .help = help.or_else(|| Some("define it under [providers.NAME]".into()));
            }
            let price = raw.price.unwrap_or_default();
            for (field, v) in [
                ("input", Some(price.input)),
                ("output", Some(price.output)),
                ("cache_read", price.cache_read),
            ] {
                if let Some(v) = v
                    && !(v.is_finite() && v >= 0.0)
                {
                    self.err(
                        &p.key("price").key(field),
                        format!("price.{field} is negative ({v})"),
                    )
                    .help = Some("prices are USD per million tokens, zero or more".into());
                }
            }
            if let Some(t) = raw.temperature
                && !(0.0..=2.0).contains(&t)
            {
                self.err(
                    &p.key("temperature"),
                    format!("temperature {t} is outside the range 0 to 2"),
                );
            }
            let harness = raw
                .harness
                .as_deref()
                .and_then(|h| self.harness(&p.key("harness"), h));
            let Some(id) = id else { continue };
            out.push(ModelConfig {
                id,
                provider: raw.provider,
                model: raw.model,
                price,
                sampling: Sampling {
                    temperature: raw.temperature,
                    seed: raw.seed,
                    max_tokens: raw.max_tokens,
                },
                harness,
            });
        }
        if items.is_empty() {
            self.err(&at, "the pipeline has no models");
        }
        out
    }

    /// `Price` ignores keys it does not know; a misspelt `inptu` would silently price at zero.
    fn unknown_price_keys(&mut self, at: &KeyPath) {
        let Some(serde_json::Value::Object(price)) = self.doc.get(at) else {
            return;
        };
        let known = fields_of::<Price>();
        for key in price.keys().filter(|k| !known.contains(&k.as_str())) {
            let d = self
                .doc
                .error_at(
                    &at.key(key),
                    format!("unknown key `{key}` in a price"),
                    true,
                )
                .help_opt(did_you_mean(key, known.iter().copied()));
            self.diags.push(d);
        }
    }

    fn file(&mut self, at: &KeyPath, rel: &str, what: &str) -> Option<PathBuf> {
        let path = self.dir.join(rel);
        if path.is_file() {
            Some(path)
        } else {
            let dir = if self.dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                &self.dir
            };
            self.err(at, format!("{what} `{rel}` not found")).help = Some(format!(
                "paths are relative to the pipeline file's directory (`{}`)",
                dir.display()
            ));
            None
        }
    }

    fn template<S: serde::Serialize>(
        &mut self,
        at: &KeyPath,
        rel: &str,
        sample: &S,
    ) -> Option<Template> {
        let path = self.file(at, rel, "prompt template")?;
        let text = match limits::read_text(&path, limits::MAX_TEMPLATE_BYTES, "a prompt template") {
            Ok(t) => t,
            Err(limits::ReadError::Io { source, .. }) => {
                self.err(at, format!("cannot read prompt template `{rel}`: {source}"));
                return None;
            }
            Err(e) => {
                self.err(at, format!("prompt template `{rel}`: {}", e.detail()));
                return None;
            }
        };
        let template = Template { path, text };
        if let Some(mut d) = templates::check(&template, sample) {
            // The error is located in the template; say which key of the pipeline uses it.
            let used = format!("`{at}` uses this template");
            d.help = Some(match d.help.take() {
                Some(h) => format!("{h} ({used})"),
                None => used,
            });
            self.diags.push(d);
            return None;
        }
        Some(template)
    }

    fn stages(&mut self) -> Option<Vec<Stage>> {
        let at = root().key("stages");
        let Some(value) = self.doc.get(&at) else {
            self.err(&root(), "the pipeline has no stages").help =
                Some("add [stages.build], [stages.gate], ...".into());
            return None;
        };
        let Some(map) = value.as_object() else {
            let msg = format!(
                "[stages] must be a table of named stages, found {}",
                kind_of(value)
            );
            self.err(&at, msg);
            return None;
        };
        let names: Vec<String> = map.keys().cloned().collect();
        let known: HashSet<&str> = names.iter().map(String::as_str).collect();
        let mut stages = Vec::new();
        let mut ok = true;
        for name in &names {
            let p = at.key(name);
            let safe = self.safe_name(
                &p,
                "stage name",
                name,
                true,
                "a stage's name is its directory under out/<round>/nodes/",
            );
            match (self.stage(&p, name, &names, &known), safe) {
                (Some(s), Some(_)) => stages.push(s),
                _ => ok = false,
            }
        }
        if !ok {
            return None;
        }
        let sorted = self.order(stages)?;
        self.check_shape(&sorted);
        Some(sorted)
    }

    fn stage(
        &mut self,
        p: &KeyPath,
        name: &str,
        names: &[String],
        known: &HashSet<&str>,
    ) -> Option<Stage> {
        let kind = match self.doc.get(p).and_then(|v| v.get("kind")) {
            Some(serde_json::Value::String(k)) => RawStageKind { kind: k.clone() },
            Some(other) => {
                let msg = format!(
                    "stage `{name}`: `kind` must be a string, found {}",
                    kind_of(other)
                );
                self.err(&p.key("kind"), msg);
                return None;
            }
            None => {
                self.err(p, format!("stage `{name}` has no `kind`")).help = Some(format!(
                    "set kind to one of {}",
                    StageKind::NAMES.join(", ")
                ));
                return None;
            }
        };
        let what = format!("stage `{name}`");
        let d = &mut self.diags;
        let (needs, kind) = match kind.kind.as_str() {
            "build" => {
                let r: RawBuildStage = section(self.doc, p, &what, d)?;
                let harness = match r.harness.as_deref() {
                    None => Some(Harness::SingleShot),
                    Some(h) => self.harness(&p.key("harness"), h),
                };
                let agent = self.agent_settings(&p.key("agent"), r.agent.is_some());
                let prompt = self.template(&p.key("prompt"), &r.prompt, &BuildCtx::sample());
                let command = harness.map(|h| self.command_harness(p, h));
                (
                    r.needs,
                    StageKind::Build(BuildStage {
                        prompt: prompt?,
                        harness: harness?,
                        command: command?.ok()?,
                        agent: agent.as_ref()?.0.clone(),
                        agent_prompt: agent?.1,
                    }),
                )
            }
            "gate" => {
                let r: RawGateStage = section(self.doc, p, &what, d)?;
                self.timeout(
                    &p.key("timeout_secs"),
                    r.timeout_secs,
                    "one run of the hidden tests",
                );
                (
                    r.needs,
                    StageKind::Gate(GateStage {
                        timeout_secs: r.timeout_secs,
                        repeat: r.repeat,
                    }),
                )
            }
            "judge" => {
                let r: RawJudgeStage = section(self.doc, p, &what, d)?;
                let rubric = self
                    .file(&p.key("rubric"), &r.rubric, "rubric")
                    .and_then(|f| match Rubric::load(&f) {
                        Ok(r) => Some(r),
                        Err(ds) => {
                            self.diags.extend(ds);
                            None
                        }
                    });
                let prompt = match &rubric {
                    Some(rb) => self.template(&p.key("prompt"), &r.prompt, &JudgeCtx::sample(rb)),
                    None => self
                        .file(&p.key("prompt"), &r.prompt, "prompt template")
                        .and(None),
                };
                (
                    r.needs,
                    StageKind::Judge(JudgeStage {
                        prompt: prompt?,
                        rubric: Box::new(rubric?),
                        max_impl_bytes: r.max_impl_bytes.unwrap_or(60_000),
                    }),
                )
            }
            "aggregate" => {
                let r: RawAggregateStage = section(self.doc, p, &what, d)?;
                (r.needs, StageKind::Aggregate)
            }
            "publish" => {
                let r: RawPublishStage = section(self.doc, p, &what, d)?;
                let mut formats = Vec::new();
                for (i, f) in r
                    .formats
                    .unwrap_or_else(|| {
                        vec![
                            "markdown".into(),
                            "json".into(),
                            "dataset".into(),
                            "html".into(),
                        ]
                    })
                    .iter()
                    .enumerate()
                {
                    match f.as_str() {
                        "markdown" => formats.push(PublishFormat::Markdown),
                        "json" => formats.push(PublishFormat::Json),
                        "dataset" => formats.push(PublishFormat::Dataset),
                        "html" => formats.push(PublishFormat::Html),
                        other => {
                            let help = did_you_mean(other, PublishFormat::NAMES);
                            self.err(
                                &p.key("formats").index(i),
                                format!("unknown publish format `{other}`"),
                            )
                            .help = help;
                        }
                    }
                }
                (r.needs, StageKind::Publish(PublishStage { formats }))
            }
            "command" => {
                let r: RawCommandStage = section(self.doc, p, &what, d)?;
                if r.command.trim().is_empty() {
                    self.err(&p.key("command"), "command is empty");
                }
                self.timeout(&p.key("timeout_secs"), r.timeout_secs, "the command");
                (
                    r.needs,
                    StageKind::Command(CommandStage {
                        command: r.command,
                        timeout_secs: r.timeout_secs.unwrap_or(300),
                    }),
                )
            }
            other => {
                let help = did_you_mean(other, StageKind::NAMES);
                self.err(
                    &p.key("kind"),
                    format!("stage `{name}` has unknown kind `{other}`"),
                )
                .help = help;
                return None;
            }
        };
        let mut ok = true;
        for (i, need) in needs.iter().enumerate() {
            if need == name {
                self.err(
                    &p.key("needs").index(i),
                    format!("stage `{name}` needs itself"),
                )
                .help = Some("a stage cannot depend on its own output".into());
                ok = false;
            } else if !known.contains(need.as_str()) {
                let help = did_you_mean(need, names.iter().map(String::as_str));
                self.err(
                    &p.key("needs").index(i),
                    format!("stage `{name}` needs unknown stage `{need}`"),
                )
                .help = help;
                ok = false;
            }
        }
        ok.then_some(())?;
        Some(Stage {
            name: SafeName::new(name).ok()?,
            needs,
            kind,
        })
    }

    /// The `command` table of a build stage: required by `harness = "command"` (with an explicit
    /// `network`), refused with any other harness. `None` when it is wrong (reported).
    fn command_harness(
        &mut self,
        stage: &KeyPath,
        harness: Harness,
    ) -> Result<Option<Box<CommandHarness>>, ()> {
        let at = stage.key("command");
        let present = self.doc.get(&at).is_some();
        if harness != Harness::Command {
            if present {
                self.err(&at, "a `command` table is read only by the command harness")
                    .help =
                    Some("set `harness = \"command\"` on this stage, or remove the table".into());
                return Err(());
            }
            return Ok(None);
        }
        if !present {
            self.err(
                &stage.key("harness"),
                "`harness = \"command\"` needs a `command` table saying what to run",
            )
            .help = Some(format!(
                "add [{at}] with `run = \"...\"` (the agent CLI's command line) and `network = true`"
            ));
            return Err(());
        }
        let raw: RawCommandHarness =
            section(self.doc, &at, "the command harness", &mut self.diags).ok_or(())?;
        let mut ok = true;
        let network = raw.network.unwrap_or_else(|| {
            self.err(
                &at,
                "the command harness must say whether its command gets network: `network` is missing",
            )
            .help = Some(
                "an agent CLI reaches its model over the network: add `network = true` to open the \
                 build sandbox's network (the gate stays offline), or `network = false`"
                    .into(),
            );
            ok = false;
            false
        });
        let run = Template {
            path: self.doc.file.clone(),
            text: raw.run,
        };
        if run.text.trim().is_empty() {
            self.err(&at.key("run"), "run is empty").help = Some(
                "the agent CLI's command line, e.g. `opencode run \"$(cat $PIPE_PROMPT)\"`".into(),
            );
            ok = false;
        } else if let Some(d) = templates::check(&run, &CommandCtx::sample()) {
            self.err(
                &at.key("run"),
                format!("in the run template: {}", d.message),
            )
            .help = Some(d.help.unwrap_or_else(|| {
                "the run template can use `model.id`, `model.slug`, `model.provider`, \
                 `model.base_url`, `task.name` and `sample`"
                    .into()
            }));
            ok = false;
        }
        ok &= self.timeout(
            &at.key("timeout_secs"),
            raw.timeout_secs,
            "the agent command",
        );
        ok &= self.pass_through_env(&at.key("env"), &raw.env);
        if let Some(usage) = &raw.usage
            && !is_plain_relative(usage)
        {
            self.err(
                &at.key("usage"),
                format!("usage `{usage}` must be a path inside the workspace"),
            )
            .help = Some(
                "a relative path without `..`, e.g. `usage.json`; the CLI writes it in its working directory"
                    .into(),
            );
            ok = false;
        }
        let mut tools = None;
        let mut tools_digests = BTreeMap::new();
        if let Some(rel) = &raw.tools {
            let dir = self.dir.join(rel);
            let listed = if dir.is_dir() {
                crate::base::fsutil::list_files(&dir).and_then(|files| {
                    files
                        .into_iter()
                        .map(|f| {
                            let digest = crate::base::fsutil::hash_file(&dir.join(&f))?;
                            Ok((f.display().to_string(), digest))
                        })
                        .collect::<std::io::Result<BTreeMap<_, _>>>()
                })
            } else {
                Err(std::io::Error::other("not a directory"))
            };
            match listed {
                Ok(d) => {
                    tools_digests = d;
                    tools = Some(dir);
                }
                Err(e) => {
                    self.err(
                        &at.key("tools"),
                        format!("tools directory `{rel}` cannot be read: {e}"),
                    )
                    .help = Some(
                        "a directory relative to the pipeline file, copied to $PIPE_WORK/tools"
                            .into(),
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            return Err(());
        }
        Ok(Some(Box::new(CommandHarness {
            run,
            network,
            timeout_secs: raw
                .timeout_secs
                .unwrap_or(CommandHarness::DEFAULT_TIMEOUT_SECS),
            env: raw.env,
            usage: raw.usage,
            tools,
            tools_digests,
        })))
    }

    /// The names of host variables a command harness passes into its sandbox: well-formed, not
    /// one the sandbox sets itself, set on this host (a warning at `validate`, an error at `run`).
    fn pass_through_env(&mut self, at: &KeyPath, names: &[String]) -> bool {
        let mut ok = true;
        for (i, name) in names.iter().enumerate() {
            let here = at.index(i);
            let well_formed = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !well_formed {
                self.err(&here, format!("`{name}` is not a variable name"))
                    .help = Some(
                    "env lists the NAMES of host variables (letters, digits, `_`), e.g. \"OPENROUTER_API_KEY\""
                        .into(),
                );
                ok = false;
            } else if name.starts_with("PIPE_") || RESERVED_ENV.contains(&name.as_str()) {
                self.err(&here, format!("`{name}` is set by the sandbox itself"))
                    .help = Some(format!(
                    "the sandbox sets {} and every PIPE_* variable; remove `{name}`",
                    RESERVED_ENV.join(", ")
                ));
                ok = false;
            } else if names[..i].contains(name) {
                self.err(&here, format!("`{name}` is listed twice"));
                ok = false;
            } else if std::env::var_os(name).is_none_or(|v| v.is_empty()) {
                let message =
                    format!("the variable `{name}` (passed to the agent command) is not set");
                let help = format!(
                    "export {name}=... before `pipe run` (the value is read from the environment only)"
                );
                let d = match self.purpose {
                    Purpose::Validate => self.doc.warning_at(&here, message, false),
                    Purpose::Run => {
                        ok = false;
                        self.doc.error_at(&here, message, false)
                    }
                };
                self.diags.push(d.help(help));
            }
        }
        ok
    }

    /// Orders stages so each comes after its needs; names any cycle (`a -> b -> a`).
    fn order(&mut self, stages: Vec<Stage>) -> Option<Vec<Stage>> {
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

    /// A timeout in seconds: at least 1 (a zero timeout kills every run at once, or for a model
    /// call means none at all) and at most [`MAX_TIMEOUT_SECS`](limits::MAX_TIMEOUT_SECS).
    /// False when it is set and out of range (reported).
    fn timeout(&mut self, at: &KeyPath, secs: Option<u64>, what: &str) -> bool {
        let Some(secs) = secs else {
            return true;
        };
        let max = limits::MAX_TIMEOUT_SECS;
        if (1..=max).contains(&secs) {
            return true;
        }
        let key = match at.0.last() {
            Some(crate::source::Seg::Key(k)) => k.clone(),
            _ => "timeout".into(),
        };
        self.err(
            at,
            format!("`{key}` is {secs}; it must be between 1 and {max} seconds"),
        )
        .help = Some(format!(
            "the seconds {what} may take before it is stopped; leave the key out for the default"
        ));
        false
    }

    /// Checks that stages are wired in a way the executor can expand. `stages` are in dependency
    /// order, so one pass carries what lies upstream of each: up to two of its build stages (one
    /// is right, two are enough to say why more are wrong) and whether an aggregate is there.
    fn check_shape(&mut self, stages: &[Stage]) {
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
    fn check_stage_shape(&mut self, s: &Stage, builds: &[usize], aggregate: bool, all: &[Stage]) {
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

    fn harness(&mut self, at: &KeyPath, name: &str) -> Option<Harness> {
        let h = Harness::parse(name);
        if h.is_none() {
            let help = did_you_mean(name, Harness::NAMES)
                .unwrap_or_else(|| format!("the harnesses are {}", Harness::NAMES.join(", ")));
            self.err(at, format!("unknown harness `{name}`")).help = Some(help);
        }
        h
    }

    /// `[stages.<build>.agent]`: the settings and the agent's prompt template (when set). Every
    /// bad value is its own located error; `None` when any is bad.
    fn agent_settings(
        &mut self,
        at: &KeyPath,
        present: bool,
    ) -> Option<(AgentSettings, Option<Template>)> {
        let mut settings = AgentSettings::default();
        if !present {
            return Some((settings, None));
        }
        let what = "the agent settings";
        let raw = section::<RawAgentSettings>(self.doc, at, what, &mut self.diags)?;
        let mut ok = true;
        let mut int = |l: &mut Self, key: &str, v: Option<i64>, min: i64, max: i64, unit: &str| {
            let v = v?;
            if (min..=max).contains(&v) {
                Some(v)
            } else {
                l.err(
                    &at.key(key),
                    format!("`{key}` is {v}; it must be between {min} and {max}{unit}"),
                )
                .help = Some(format!(
                    "set `{key}` in the range, or remove it for the default"
                ));
                ok = false;
                None
            }
        };
        if let Some(v) = int(self, "max_steps", raw.max_steps, 1, 10_000, " model calls") {
            settings.max_steps = v as u32;
        }
        if let Some(v) = int(
            self,
            "max_context_tokens",
            raw.max_context_tokens,
            1_000,
            10_000_000,
            " tokens",
        ) {
            settings.max_context_tokens = v as u64;
        }
        if let Some(v) = int(self, "wall_secs", raw.wall_secs, 1, 86_400, " seconds") {
            settings.wall_secs = v as u64;
        }
        if let Some(v) = int(
            self,
            "stagnation_steps",
            raw.stagnation_steps,
            1,
            10_000,
            " steps",
        ) {
            settings.stagnation_steps = v as u32;
        }
        if let Some(v) = int(self, "passes", raw.passes, 1, 100, "") {
            settings.passes = v as u32;
        }
        if let Some(v) = int(
            self,
            "run_timeout_secs",
            raw.run_timeout_secs,
            1,
            3_600,
            " seconds",
        ) {
            settings.run_timeout_secs = v as u64;
        }
        if let Some(n) = raw.notes_file {
            let path = Path::new(&n);
            let plain = !n.is_empty()
                && path
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if plain {
                settings.notes_file = n;
            } else {
                self.err(
                    &at.key("notes_file"),
                    format!("`notes_file` `{n}` is not a plain relative path in the workspace"),
                )
                .help = Some("name a file like `NOTES.md`: no `/` at the start, no `..`".into());
                ok = false;
            }
        }
        let prompt = match raw.prompt {
            None => None,
            Some(rel) => {
                let t = self.template(&at.key("prompt"), &rel, &BuildCtx::sample());
                ok &= t.is_some();
                t
            }
        };
        ok.then_some((settings, prompt))
    }

    /// A model that builds with the agent harness needs a task that says how `done` verifies.
    fn check_agent(&mut self, models: &[ModelConfig], stages: &[Stage], task: &Task) {
        if task.agent.is_some() {
            return;
        }
        let mut any_build = false;
        for s in stages {
            let StageKind::Build(BuildStage { harness, .. }) = &s.kind else {
                continue;
            };
            any_build = true;
            if *harness == Harness::Agent {
                let at = root().key("stages").key(&s.name).key("harness");
                self.no_agent_task(&at, &format!("build stage `{}`", s.name), task);
            }
        }
        for (i, m) in models.iter().enumerate() {
            if any_build && m.harness == Some(Harness::Agent) {
                let at = root().key("models").index(i).key("harness");
                self.no_agent_task(&at, &format!("model `{}`", m.id), task);
            }
        }
    }

    fn no_agent_task(&mut self, at: &KeyPath, who: &str, task: &Task) {
        let msg = format!(
            "{who} builds with harness `agent`, but task `{}` declares no [agent] table",
            task.name
        );
        self.err(at, msg).help = Some(format!(
            "add `[agent]` with `verify = [...]` (a command writing JUnit XML to $PIPE_JUNIT) to {}",
            task.file.display()
        ));
    }

    /// Every task the round names, globs expanded, in a stable order.
    fn tasks(&mut self, entries: &[(KeyPath, String)]) -> Option<Vec<Task>> {
        let mut tasks: Vec<Task> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut ok = true;
        for (at, entry) in entries {
            let dirs = match expand_task_glob(&self.dir, entry) {
                Ok(d) => d,
                Err(message) => {
                    self.err(at, message).help = Some(
                        "a glob may use `*`, `?`, `[...]` and `**`, relative to the pipeline file"
                            .into(),
                    );
                    ok = false;
                    continue;
                }
            };
            if dirs.is_empty() {
                self.err(
                    at,
                    format!("`{entry}` matches no task directory (one holding task.toml)"),
                )
                .help = Some("paths are relative to the pipeline file".into());
                ok = false;
            }
            for dir in dirs {
                match self.task(at, entry, &dir) {
                    Some(t) => {
                        if let Some(prev) = by_name.get(t.name.as_str()).map(|&i| &tasks[i]) {
                            let msg = format!(
                                "task name `{}` is used by both {} and {}",
                                t.name,
                                prev.dir.display(),
                                t.dir.display()
                            );
                            self.err(at, msg).help =
                                Some("task names identify results: give each task its own `name` in task.toml".into());
                            ok = false;
                        } else {
                            by_name.insert(t.name.to_string(), tasks.len());
                            tasks.push(t);
                        }
                    }
                    None => ok = false,
                }
            }
        }
        if tasks.len() > 1 {
            let first = &tasks[0];
            if let Some(other) = tasks.iter().find(|t| t.image != first.image) {
                let msg = format!(
                    "tasks `{}` and `{}` ask for different sandbox images (`{}`, `{}`)",
                    first.name, other.name, first.image, other.image
                );
                self.err(&root().key("round").key("tasks"), msg).help =
                    Some("a round runs in one sandbox image: split the suite by image".into());
                ok = false;
            }
        }
        ok.then_some(tasks)
    }

    fn task(&mut self, at: &KeyPath, entry: &str, dir: &Path) -> Option<Task> {
        match Task::load(dir) {
            Ok(t) => Some(t),
            Err(ds) => {
                if dir.is_dir() {
                    self.diags.extend(ds);
                } else {
                    let key = if at.to_string() == "round.task" {
                        "`round.task`"
                    } else {
                        "each entry of `round.tasks`"
                    };
                    self.err(at, format!("task directory `{entry}` not found"))
                        .help = Some(format!(
                        "{key} is relative to the pipeline file and names a directory with task.toml"
                    ));
                }
                None
            }
        }
    }

    /// What a round of several tasks cannot have (yet): report formats built around one task. A
    /// publish stage that names no formats gets a suite's.
    fn suite_checks(&mut self, stages: &mut [Stage]) {
        let at = root().key("stages");
        for s in stages {
            if let StageKind::Publish(PublishStage { formats }) = &mut s.kind
                && self.doc.get(&at.key(&s.name).key("formats")).is_none()
            {
                *formats = vec![PublishFormat::Markdown, PublishFormat::Json];
            }
            if let StageKind::Publish(PublishStage { formats }) = &s.kind
                && let Some(f) = formats
                    .iter()
                    .find(|f| matches!(f, PublishFormat::Dataset | PublishFormat::Html))
            {
                let name = serde_json::to_value(f)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                self.err(
                    &at.key(&s.name).key("formats"),
                    format!("format `{name}` describes a round of one task"),
                )
                .help = Some(
                    "a suite publishes `markdown` and `json` (per-task results, pass rates, pass@k, peer scores)".into(),
                );
            }
        }
    }
}

/// The task directories an entry of `round.task(s)` names: the directory itself, or every
/// directory holding a task.toml that the glob matches, in natural order (`x-2` before `x-10`).
fn expand_task_glob(base: &Path, entry: &str) -> Result<Vec<PathBuf>, String> {
    let is_glob = |s: &str| s.contains(['*', '?', '[', '{']);
    if !is_glob(entry) {
        return Ok(vec![base.join(entry)]);
    }
    let parts: Vec<&str> = entry.split('/').collect();
    let fixed = parts.iter().take_while(|p| !is_glob(p)).count();
    let root = parts[..fixed]
        .iter()
        .fold(base.to_path_buf(), |acc, p| acc.join(p));
    let pattern = parts[fixed..].join("/");
    let matcher = globset::GlobBuilder::new(&pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("`{entry}` is not a valid glob: {e}"))?
        .compile_matcher();
    let depth = if pattern.contains("**") {
        usize::MAX
    } else {
        parts.len() - fixed
    };
    let mut found: Vec<PathBuf> = walkdir::WalkDir::new(&root)
        .min_depth(1)
        .max_depth(depth)
        .follow_links(true)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_dir())
        .filter(|e| {
            e.path()
                .strip_prefix(&root)
                .is_ok_and(|rel| matcher.is_match(rel))
        })
        .filter(|e| e.path().join("task.toml").is_file())
        .map(walkdir::DirEntry::into_path)
        .collect();
    found.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    Ok(found)
}

/// Compares strings with runs of digits compared as numbers.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let chunks = |s: &str| -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let d = c.is_ascii_digit();
            match out.last_mut() {
                Some((ld, run)) if *ld == d => run.push(c),
                _ => out.push((d, c.to_string())),
            }
        }
        out
    };
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(&cb) {
        let o = match (x.0, y.0) {
            (true, true) => {
                let (tx, ty) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty))
            }
            _ => x.1.cmp(&y.1),
        };
        if o.is_ne() {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

/// Variables the sandbox sets for every job; a command harness cannot pass its own.
const RESERVED_ENV: [&str; 4] = ["PATH", "HOME", "TMPDIR", "LANG"];

/// A relative path of plain components (no root, no `..`, no `.`), not empty.
fn is_plain_relative(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads the mini fixture with one extra `openai` provider whose body is `provider`;
    /// returns the pipeline's openai settings, or the errors.
    fn with_provider(provider: &str) -> Result<ProviderKind, Vec<Diag>> {
        let (_dir, file) = mini_copy();
        let text = std::fs::read_to_string(&file).unwrap().replacen(
            "[[models]]",
            &format!(
                "[providers.api]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n{provider}\n\n[[models]]"
            ),
            1,
        );
        std::fs::write(&file, text).unwrap();
        load(&file, Purpose::Validate).map(|p| p.providers["api"].kind.clone())
    }

    /// The mini fixture's build stage with `lines` added to its table; the build's kind.
    fn with_build(lines: &str) -> Result<StageKind, Vec<Diag>> {
        let (_dir, file) = mini_copy();
        let text = std::fs::read_to_string(&file).unwrap().replacen(
            "prompt = \"build.md.j2\"\n",
            &format!("prompt = \"build.md.j2\"\n{lines}\n"),
            1,
        );
        std::fs::write(&file, text).unwrap();
        load(&file, Purpose::Validate).map(|p| p.stage("build").unwrap().kind.clone())
    }

    fn build_errors(lines: &str) -> Vec<(String, String)> {
        with_build(lines)
            .expect_err("the pipeline must be refused")
            .into_iter()
            .filter(Diag::is_error)
            .map(|d| (d.path, d.message))
            .collect()
    }

    #[test]
    fn the_command_table_goes_with_the_command_harness_only() {
        let StageKind::Build(BuildStage {
            harness, command, ..
        }) = with_build(
            "harness = \"command\"\n[stages.build.command]\nrun = \"agent {{ model.slug }}\"\nnetwork = false",
        )
        .unwrap()
        else {
            panic!("not a build")
        };
        assert_eq!(harness, Harness::Command);
        let command = command.unwrap();
        assert!(!command.network);
        assert_eq!(command.timeout_secs, CommandHarness::DEFAULT_TIMEOUT_SECS);
        assert_eq!(
            build_errors("harness = \"command\""),
            [(
                "stages.build.harness".to_string(),
                "`harness = \"command\"` needs a `command` table saying what to run".to_string()
            )]
        );
        assert_eq!(
            build_errors("[stages.build.command]\nrun = \"agent\"\nnetwork = true"),
            [(
                "stages.build.command".to_string(),
                "a `command` table is read only by the command harness".to_string()
            )]
        );
        assert_eq!(
            build_errors(
                "harness = \"command\"\n[stages.build.command]\nrun = \" \"\nnetwork = true\ntimeout_secs = 0"
            ),
            [
                (
                    "stages.build.command.run".to_string(),
                    "run is empty".to_string()
                ),
                (
                    "stages.build.command.timeout_secs".to_string(),
                    "`timeout_secs` is 0; it must be between 1 and 86400 seconds".to_string()
                ),
            ]
        );
    }

    /// A copy of the mini fixture round; returns its directory (kept alive) and pipeline file.
    fn mini_copy() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mini");
        for entry in walkdir::WalkDir::new(&fixture) {
            let entry = entry.unwrap();
            let dest = dir
                .path()
                .join(entry.path().strip_prefix(&fixture).unwrap());
            if entry.file_type().is_dir() {
                std::fs::create_dir_all(dest).unwrap();
            } else {
                std::fs::copy(entry.path(), dest).unwrap();
            }
        }
        let file = dir.path().join("pipeline.toml");
        (dir, file)
    }

    fn backoff_of(kind: &ProviderKind) -> (u64, u64) {
        match kind {
            ProviderKind::OpenAi {
                retry_base_ms,
                retry_max_ms,
                ..
            } => (*retry_base_ms, *retry_max_ms),
            ProviderKind::Replay { .. } => panic!("not openai"),
        }
    }

    fn errors(provider: &str) -> Vec<(String, usize, String)> {
        let diags = with_provider(provider).expect_err("the pipeline must be refused");
        diags
            .into_iter()
            .filter(Diag::is_error)
            .map(|d| (d.path, d.line, d.message))
            .collect()
    }

    #[test]
    fn retry_backoff_defaults_and_settings() {
        assert_eq!(
            backoff_of(&with_provider("").unwrap()),
            (DEFAULT_RETRY_BASE_MS, DEFAULT_RETRY_MAX_MS)
        );
        assert_eq!(
            backoff_of(&with_provider("retry_base_ms = 250\nretry_max_ms = 250").unwrap()),
            (250, 250)
        );
        assert_eq!(
            backoff_of(&with_provider("retry_max_ms = 5000").unwrap()),
            (DEFAULT_RETRY_BASE_MS, 5000)
        );
    }

    #[test]
    fn retry_backoff_errors_are_located() {
        // The provider table starts on line 10 of the edited fixture: its settings on 13 and 14.
        assert_eq!(
            errors("retry_base_ms = 0\nretry_max_ms = 0"),
            [
                (
                    "providers.api.retry_base_ms".to_string(),
                    13,
                    "retry_base_ms must be at least 1".to_string()
                ),
                (
                    "providers.api.retry_max_ms".to_string(),
                    14,
                    "retry_max_ms must be at least 1".to_string()
                ),
            ]
        );
        assert_eq!(
            errors("retry_base_ms = 500\nretry_max_ms = 100"),
            [(
                "providers.api.retry_base_ms".to_string(),
                13,
                "retry_base_ms 500 exceeds retry_max_ms 100".to_string()
            )]
        );
        assert_eq!(
            errors("retry_base_ms = 90000"),
            [(
                "providers.api.retry_base_ms".to_string(),
                13,
                "retry_base_ms 90000 exceeds retry_max_ms (60000, the default)".to_string()
            )]
        );
        assert_eq!(
            errors("retry_max_ms = 10"),
            [(
                "providers.api.retry_max_ms".to_string(),
                13,
                "retry_max_ms 10 is below retry_base_ms (1000, the default)".to_string()
            )]
        );
        assert_eq!(
            errors("retry_base_ms = -1").len(),
            1,
            "a negative wait is a type error"
        );
    }
}
