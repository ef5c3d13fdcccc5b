//! A task: the spec a build sees, the hidden tests its gate runs, the files a build may never
//! write, and how to run the tests. Read from `tasks/<name>/task.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::base::diag::Diag;
use crate::base::fsutil;
use crate::base::limits;
use crate::base::names::{NameError, SafeName, shown};
use crate::config::check::section;
use crate::source::{KeyPath, SourceDoc};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    name: String,
    spec: String,
    hidden_tests: String,
    reference: Option<String>,
    workspace: Option<String>,
    #[serde(default)]
    protected: Vec<String>,
    #[serde(default)]
    sources: Vec<String>,
    gate: Option<serde_json::Value>,
    python: Option<serde_json::Value>,
    sandbox: Option<serde_json::Value>,
    agent: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    visible_tests: Option<String>,
    verify: Vec<String>,
    #[serde(default)]
    allow: Vec<Vec<String>>,
}

/// What an agent build may run and how its `done` is verified (`[agent]` in task.toml).
#[derive(Debug, Clone, Serialize)]
pub struct AgentTask {
    /// Tests the agent sees: this task directory, copied into the workspace under `visible_name`
    /// and protected from writes.
    #[serde(skip)]
    pub visible_dir: Option<PathBuf>,
    pub visible_name: Option<String>,
    /// The `done` gate: run from the workspace root, it must write JUnit XML to `$PIPE_JUNIT`;
    /// `done` passes only when that report lists at least one test and every test passed, and
    /// the command exited 0.
    pub verify: Vec<String>,
    /// Argument-vector prefixes the `run` tool accepts; `verify` is always among them.
    pub allow: Vec<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSandbox {
    image: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGate {
    runner: Option<String>,
    command: Option<Vec<String>>,
    timeout_secs: Option<u64>,
    repeat: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPython {
    #[serde(default)]
    requirements: Vec<String>,
}

/// How the hidden tests run.
#[derive(Debug, Clone, Serialize)]
pub struct GateConfig {
    /// `pytest`: pipe runs pytest itself, isolated from the build; `command`: the task's own
    /// command, which must write JUnit XML to `$PIPE_JUNIT`.
    pub runner: Runner,
    pub command: Option<Vec<String>>,
    pub timeout_secs: u64,
    pub repeat: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runner {
    Pytest,
    Command,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub dir: PathBuf,
    pub file: PathBuf,
    /// In a suite, names the task's node directories and recordings.
    pub name: SafeName,
    pub spec: String,
    pub hidden_dir: PathBuf,
    pub reference_dir: Option<PathBuf>,
    pub workspace_dir: Option<PathBuf>,
    pub protected_patterns: Vec<String>,
    protected: GlobSet,
    sources: GlobSet,
    pub gate: GateConfig,
    pub python_requirements: Vec<String>,
    /// The Docker image the task's gate runs in.
    pub image: String,
    /// How agent builds verify `done` (none: the task supports single-shot builds only).
    pub agent: Option<AgentTask>,
    /// blake3 of every file the task holds, by role, for cache keys.
    pub digests: TaskDigests,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskDigests {
    /// What a build reads: the spec, the starter workspace, the protection rules.
    pub build: BTreeMap<String, String>,
    /// What a gate reads: the hidden tests and how they run.
    pub gate: BTreeMap<String, String>,
    /// What an agent build reads besides `build`: the visible tests and the `[agent]` table.
    pub agent: BTreeMap<String, String>,
}

impl Task {
    /// True when a build may not write `rel` (a test file, a conftest, anything pytest auto-loads).
    pub fn is_protected(&self, rel: &Path) -> bool {
        self.protected.is_match(rel)
    }

    /// True when an agent may not write `rel`: a protected file, or anything under the visible
    /// tests.
    pub fn is_protected_for_agent(&self, rel: &Path) -> bool {
        self.is_protected(rel)
            || self
                .agent
                .as_ref()
                .and_then(|a| a.visible_name.as_ref())
                .is_some_and(|v| rel.starts_with(v))
    }

    /// True when `rel` counts as source for lines-of-code figures.
    pub fn is_source(&self, rel: &Path) -> bool {
        self.sources.is_empty() || self.sources.is_match(rel)
    }

    /// Loads and checks `dir/task.toml`. Every problem is reported, located in the task file.
    pub fn load(dir: &Path) -> Result<Self, Vec<Diag>> {
        let file = dir.join("task.toml");
        if !dir.is_dir() {
            return Err(vec![Diag::error(dir, "task directory not found").help(
                "`round.task` names a directory holding task.toml, relative to the pipeline file",
            )]);
        }
        let doc = SourceDoc::load(&file).map_err(|d| vec![d])?;
        let mut diags = doc.non_finite_errors();
        let root = KeyPath::root();
        let Some(raw) = section::<RawTask>(&doc, &root, "the task file", &mut diags) else {
            return Err(diags);
        };
        let tables = Tables::read(&doc, &raw, &mut diags);
        let agent = tables
            .agent
            .as_ref()
            .map(|a| agent_task(&doc, dir, a, &mut diags));
        let name = task_name(&doc, &raw.name, &mut diags);
        let spec = read_spec(&doc, dir, &raw.spec, &mut diags);
        let hidden_dir = dir.join(&raw.hidden_tests);
        check_hidden_tests(&doc, &hidden_dir, &raw.hidden_tests, &mut diags);
        let mut optional_dir = |key: &str, value: &Option<String>| {
            value.as_ref().map(|rel| {
                let path = dir.join(rel);
                if !path.is_dir() {
                    diags.push(doc.error_at(
                        &root.key(key),
                        format!("directory `{rel}` not found"),
                        false,
                    ));
                }
                path
            })
        };
        let reference_dir = optional_dir("reference", &raw.reference);
        let workspace_dir = optional_dir("workspace", &raw.workspace);
        let protected = globs(&doc, &root.key("protected"), &raw.protected, &mut diags);
        let sources = globs(&doc, &root.key("sources"), &raw.sources, &mut diags);
        let gate = gate_config(&doc, tables.gate, &mut diags);
        let Some(name) = name.filter(|_| diags.is_empty()) else {
            return Err(diags);
        };
        let digests = TaskDigests::of(
            &doc,
            &raw,
            &spec,
            &hidden_dir,
            workspace_dir.as_deref(),
            agent.as_ref(),
        )?;
        Ok(Self {
            dir: dir.to_path_buf(),
            file,
            name,
            spec,
            hidden_dir,
            reference_dir,
            workspace_dir,
            protected_patterns: raw.protected,
            protected,
            sources,
            gate,
            python_requirements: tables.python.map(|p| p.requirements).unwrap_or_default(),
            image: tables
                .sandbox
                .and_then(|s| s.image)
                .unwrap_or_else(|| crate::sandbox::docker::DEFAULT_IMAGE.to_string()),
            agent,
            digests,
        })
    }
}

/// The optional tables of a task file, each checked against its own struct when present.
struct Tables {
    gate: Option<RawGate>,
    sandbox: Option<RawSandbox>,
    python: Option<RawPython>,
    agent: Option<RawAgent>,
}

impl Tables {
    fn read(doc: &SourceDoc, raw: &RawTask, diags: &mut Vec<Diag>) -> Self {
        let root = KeyPath::root();
        let gate = raw
            .gate
            .as_ref()
            .and_then(|_| section::<RawGate>(doc, &root.key("gate"), "[gate]", diags));
        let sandbox = raw
            .sandbox
            .as_ref()
            .and_then(|_| section::<RawSandbox>(doc, &root.key("sandbox"), "[sandbox]", diags));
        let python = raw
            .python
            .as_ref()
            .and_then(|_| section::<RawPython>(doc, &root.key("python"), "[python]", diags));
        let agent = raw
            .agent
            .as_ref()
            .and_then(|_| section::<RawAgent>(doc, &root.key("agent"), "[agent]", diags));
        Self {
            gate,
            sandbox,
            python,
            agent,
        }
    }
}

/// The task's `name`, proven safe; `None` when it is not (reported).
fn task_name(doc: &SourceDoc, name: &str, diags: &mut Vec<Diag>) -> Option<SafeName> {
    match SafeName::new(name) {
        Ok(n) => Some(n),
        Err(e) => {
            diags.push(
                doc.error_at(
                    &KeyPath::root().key("name"),
                    format!("task name `{}` is not a safe name: {e}", shown(name)),
                    false,
                )
                .help(format!(
                    "the name identifies the task's results and, in a suite, names its node directories: {}",
                    NameError::RULE
                )),
            );
            None
        }
    }
}

/// The spec's text; empty when it cannot be read (reported).
fn read_spec(doc: &SourceDoc, dir: &Path, rel: &str, diags: &mut Vec<Diag>) -> String {
    let at = KeyPath::root().key("spec");
    match limits::read_text(&dir.join(rel), limits::MAX_SPEC_BYTES, "a task's spec") {
        Ok(s) => s,
        Err(limits::ReadError::Io { source, .. }) => {
            diags.push(
                doc.error_at(&at, format!("cannot read spec `{rel}`: {source}"), false)
                    .help("`spec` is relative to the task directory (where task.toml is)"),
            );
            String::new()
        }
        Err(e) => {
            diags.push(
                doc.error_at(&at, format!("spec `{rel}`: {}", e.detail()), false)
                    .help("the spec is pasted into every build and judge prompt: keep it to what a model needs"),
            );
            String::new()
        }
    }
}

/// The hidden tests directory exists and holds files.
fn check_hidden_tests(doc: &SourceDoc, hidden_dir: &Path, rel: &str, diags: &mut Vec<Diag>) {
    let at = KeyPath::root().key("hidden_tests");
    match fsutil::list_files(hidden_dir) {
        // `list_files` answers "no files" for a missing directory: say what is really wrong.
        _ if !hidden_dir.is_dir() => diags.push(
            doc.error_at(
                &at,
                format!("hidden tests directory `{rel}` not found"),
                false,
            )
            .help("`hidden_tests` is relative to the task directory (where task.toml is)"),
        ),
        Ok(files) if files.is_empty() => diags.push(
            doc.error_at(
                &at,
                format!("the hidden tests directory `{rel}` holds no files"),
                false,
            )
            .help("a task without hidden tests cannot gate anything: add test files there"),
        ),
        Ok(_) => {}
        Err(e) => {
            diags.push(doc.error_at(&at, format!("cannot read hidden tests `{rel}`: {e}"), false));
        }
    }
}

/// `[gate]`, defaults filled in (pytest, 300 seconds, one run).
fn gate_config(doc: &SourceDoc, raw: Option<RawGate>, diags: &mut Vec<Diag>) -> GateConfig {
    let Some(g) = raw else {
        return GateConfig {
            runner: Runner::Pytest,
            command: None,
            timeout_secs: 300,
            repeat: 1,
        };
    };
    let at = KeyPath::root().key("gate");
    let runner = match g.runner.as_deref() {
        None | Some("pytest") => Runner::Pytest,
        Some("command") => Runner::Command,
        Some(other) => {
            diags.push(
                doc.error_at(
                    &at.key("runner"),
                    format!("unknown runner `{other}`"),
                    false,
                )
                .help_opt(crate::base::diag::did_you_mean(
                    other,
                    ["pytest", "command"],
                )),
            );
            Runner::Pytest
        }
    };
    if runner == Runner::Command && g.command.as_ref().is_none_or(Vec::is_empty) {
        diags.push(doc.error_at(&at, "runner `command` needs `command = [...]`", false));
    }
    if let Some(t) = g.timeout_secs
        && !(1..=limits::MAX_TIMEOUT_SECS).contains(&t)
    {
        diags.push(
            doc.error_at(
                &at.key("timeout_secs"),
                format!(
                    "`timeout_secs` is {t}; it must be between 1 and {} seconds",
                    limits::MAX_TIMEOUT_SECS
                ),
                false,
            )
            .help("the seconds one run of the hidden tests may take before it is stopped; leave the key out for the default (300)"),
        );
    }
    if g.repeat == Some(0) {
        diags.push(doc.error_at(&at.key("repeat"), "repeat must be at least 1", false));
    }
    GateConfig {
        runner,
        command: g.command,
        timeout_secs: g.timeout_secs.unwrap_or(300),
        repeat: g.repeat.unwrap_or(1).max(1),
    }
}

impl TaskDigests {
    /// The digests of what each kind of node reads of the task: the build its spec, protected
    /// list and workspace; the gate task.toml and the hidden tests; the agent its table and the
    /// visible tests.
    fn of(
        doc: &SourceDoc,
        raw: &RawTask,
        spec: &str,
        hidden_dir: &Path,
        workspace_dir: Option<&Path>,
        agent: Option<&AgentTask>,
    ) -> Result<Self, Vec<Diag>> {
        let mut digests = Self::default();
        digests.build.insert(
            raw.spec.clone(),
            blake3::hash(spec.as_bytes()).to_hex().to_string(),
        );
        digests.build.insert(
            "protected".into(),
            blake3::hash(raw.protected.join("\n").as_bytes())
                .to_hex()
                .to_string(),
        );
        digests.gate.insert(
            "task.toml".into(),
            blake3::hash(doc.text.as_bytes()).to_hex().to_string(),
        );
        add_dir(&mut digests.gate, "hidden", hidden_dir)?;
        if let Some(w) = workspace_dir {
            add_dir(&mut digests.build, "workspace", w)?;
        }
        if let Some(a) = agent {
            let table = serde_json::to_vec(a).expect("the agent table serialises");
            digests
                .agent
                .insert("[agent]".into(), blake3::hash(&table).to_hex().to_string());
            if let Some(v) = &a.visible_dir {
                add_dir(&mut digests.agent, "visible", v)?;
            }
        }
        Ok(digests)
    }
}

/// Adds the digest of every file under `d` to `map`, as `<prefix>/<relative path>`.
fn add_dir(map: &mut BTreeMap<String, String>, prefix: &str, d: &Path) -> Result<(), Vec<Diag>> {
    for rel in fsutil::list_files(d).map_err(|e| vec![Diag::error(d, e.to_string())])? {
        let hash = fsutil::hash_file(&d.join(&rel))
            .map_err(|e| vec![Diag::error(&d.join(&rel), e.to_string())])?;
        map.insert(format!("{prefix}/{}", rel.display()), hash);
    }
    Ok(())
}

fn agent_task(doc: &SourceDoc, dir: &Path, raw: &RawAgent, diags: &mut Vec<Diag>) -> AgentTask {
    let at = KeyPath::root().key("agent");
    let visible_dir = raw.visible_tests.as_ref().and_then(|rel| {
        let plain = !rel.is_empty()
            && Path::new(rel)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        let path = dir.join(rel);
        if !plain {
            diags.push(
                doc.error_at(
                    &at.key("visible_tests"),
                    format!("`visible_tests` `{rel}` is not a plain relative directory"),
                    false,
                )
                .help("name a directory of the task, like `visible`: no `/` at the start, no `..`"),
            );
            None
        } else if !path.is_dir() {
            diags.push(
                doc.error_at(
                    &at.key("visible_tests"),
                    format!("visible tests directory `{rel}` not found"),
                    false,
                )
                .help("`visible_tests` is relative to the task directory (where task.toml is)"),
            );
            None
        } else {
            Some(path)
        }
    });
    if raw.verify.is_empty() || raw.verify[0].is_empty() {
        diags.push(
            doc.error_at(&at.key("verify"), "`verify` is empty", false)
                .help("give the command as an argument vector, e.g. [\"python3\", \"-m\", \"pytest\", \"--junitxml=$PIPE_JUNIT\", \"visible\"]"),
        );
    }
    for (i, prefix) in raw.allow.iter().enumerate() {
        if prefix.is_empty() || prefix[0].is_empty() {
            diags.push(
                doc.error_at(
                    &at.key("allow").index(i),
                    "an empty command prefix would allow every command",
                    false,
                )
                .help("name at least the program, e.g. [\"python3\", \"-m\", \"pytest\"]"),
            );
        }
    }
    let mut allow = vec![raw.verify.clone()];
    allow.extend(raw.allow.iter().cloned());
    AgentTask {
        visible_dir,
        visible_name: raw.visible_tests.clone(),
        verify: raw.verify.clone(),
        allow,
    }
}

fn globs(doc: &SourceDoc, path: &KeyPath, patterns: &[String], diags: &mut Vec<Diag>) -> GlobSet {
    let mut b = GlobSetBuilder::new();
    for (i, p) in patterns.iter().enumerate() {
        match Glob::new(p) {
            Ok(g) => {
                b.add(g);
            }
            Err(e) => diags.push(doc.error_at(&path.index(i), format!("invalid glob: {e}"), false)),
        }
    }
    b.build().unwrap_or_else(|_| GlobSet::empty())
}
