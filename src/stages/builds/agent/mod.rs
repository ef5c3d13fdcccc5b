//! Build, `agent` harness: a tool-calling loop over the chat API. The model reads, writes and
//! runs code in a workspace pipe holds, and ends the build by calling `done`, which is a gate,
//! not its word: pipe runs the task's visible verification in the sandbox and accepts only when a
//! JUnit report says tests really ran and all passed. Every tool call is executed by pipe (file
//! tools on the workspace, strictly confined; `run` and `done` as sandbox jobs); the model never
//! touches the host.
//!
//! Outcomes: `completed` (a `done` accepted, or the end-of-pass probe passed: a pass that changed
//! the workspace and ran out of context or steps is verified), `stagnated` (the
//! workspace fingerprint did not change for `stagnation_steps` steps), `budget` (steps, wall
//! time, or context in the last pass ran out), `fault` (the endpoint failed after its retries).
//! A pass that runs out of context starts again with a fresh context on the same workspace when
//! passes remain (the notes file carries the agent's memory across).
//!
//! Writes `prompt.md`, `transcript.jsonl` (every message, tool call and result, usage per step),
//! `files/` and `build.json`.

pub mod tools;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use self::tools::{ToolError, Workspace};
use crate::base::fsutil;
use crate::base::junit::{self, TestOutcome};
use crate::config::harness::{system_prompt, tool_specs};
use crate::config::task::{AgentTask, Task};
use crate::config::{AgentSettings, Harness, ModelConfig};
use crate::provider::{CallSite, ChatRequest, ChatResponse, Message, ProviderError, ToolCall};
use crate::sandbox::Job;
use crate::stages::builds::report::{
    AgentReport, BuildOutcome, BuildReport, Verification, Written, write_implementation,
};
use crate::stages::outputs::{BUILD_JSON, PROMPT_MD, TRANSCRIPT_JSONL};
use crate::stages::{NodeCtx, NodeError, io, write_output, write_text};
use crate::vocab::Usage;

/// One line of `transcript.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    /// A message of the conversation; assistant messages carry the step's usage.
    Message {
        pass: u32,
        step: Option<u32>,
        #[serde(flatten)]
        message: Message,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        latency_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        finish_reason: Option<String>,
    },
    /// A tool call pipe executed, and what it answered.
    Tool {
        pass: u32,
        step: u32,
        id: String,
        name: String,
        arguments: String,
        result: String,
        refused: bool,
        duration_ms: u64,
    },
    /// Something the loop decided: a pass started or ended, a budget ran out, a probe ran.
    Event { pass: u32, step: u32, text: String },
}

/// Stagnation: how many steps in a row left the workspace fingerprint as it was.
#[derive(Debug)]
pub struct Stagnation {
    last: String,
    unchanged: u32,
    limit: u32,
}

impl Stagnation {
    pub fn new(start: String, limit: u32) -> Self {
        Self {
            last: start,
            unchanged: 0,
            limit,
        }
    }

    /// Observes the fingerprint after a step; true when the build has stagnated.
    pub fn step(&mut self, fingerprint: String) -> bool {
        if fingerprint == self.last {
            self.unchanged += 1;
        } else {
            self.unchanged = 0;
            self.last = fingerprint;
        }
        self.unchanged >= self.limit
    }
}

/// The context a step used: the endpoint's count of its input and output, or, when it reports
/// none, an estimate over the conversation.
pub fn context_tokens(usage: Usage, messages: &[Message]) -> u64 {
    if usage.input_tokens > 0 {
        usage.input_tokens + usage.output_tokens
    } else {
        estimate_tokens(messages)
    }
}

/// What ended the build.
enum End {
    Completed(&'static str),
    Stagnated,
    Budget(&'static str),
    Fault(String),
}

struct Loop<'a> {
    ctx: &'a NodeCtx,
    model: &'a ModelConfig,
    settings: &'a AgentSettings,
    agent: &'a AgentTask,
    ws: Workspace<'a>,
    transcript: Vec<Entry>,
    report: AgentReport,
    usage: Usage,
    /// Model-call latency and attempts, summed over the steps.
    latency_ms: u64,
    attempts: u32,
    throttled_ms: u64,
    pass: u32,
    step: u32,
}

pub async fn run(
    ctx: &NodeCtx,
    dir: &Path,
    model: &ModelConfig,
    settings: &AgentSettings,
    prompt: String,
) -> Result<Vec<PathBuf>, NodeError> {
    let task = ctx.task();
    let agent = task.agent.as_ref().ok_or_else(|| {
        NodeError::Configuration(format!(
            "model `{}` builds with harness `agent`, but task `{}` declares no [agent] table",
            model.id, task.name
        ))
    })?;
    let holder = tempfile::Builder::new()
        .prefix("pipe-agent-")
        .tempdir()
        .map_err(|e| NodeError::Infrastructure(format!("agent workspace: {e}")))?;
    let root = seed_workspace(holder.path(), task, agent)?;
    let mut outputs = vec![write_text(dir, PROMPT_MD, &prompt)?];
    let mut l = Loop {
        ctx,
        model,
        settings,
        agent,
        ws: Workspace {
            root,
            task,
            notes_file: settings.notes_file.clone(),
        },
        transcript: Vec::new(),
        report: AgentReport::default(),
        usage: Usage::default(),
        latency_ms: 0,
        attempts: 0,
        throttled_ms: 0,
        pass: 0,
        step: 0,
    };
    let started = Instant::now();
    let end = l.drive(&prompt, started).await?;
    l.report.wall_secs = started.elapsed().as_secs_f64();

    let (mut outcome, mut reason) = end_outcome(&end, settings, &mut l.report);
    // A fault leaves no implementation: the build did not finish for reasons not the model's.
    let mut written = Written::default();
    let mut rejected = Vec::new();
    if outcome != BuildOutcome::Fault {
        let mut kept = Vec::new();
        for rel in l.ws.implementation() {
            let bytes = std::fs::read(l.ws.root.join(&rel)).map_err(io(&rel))?;
            kept.push((rel, bytes));
        }
        match write_implementation(dir, task, &kept)? {
            Ok(w) => written = w,
            Err((r, why)) => {
                outcome = BuildOutcome::Rejected;
                reason = Some(why);
                rejected.push(r);
            }
        }
    }
    outputs.extend(written.outputs);
    let mut jsonl = String::new();
    for e in &l.transcript {
        jsonl.push_str(&serde_json::to_string(e).expect("entries serialise"));
        jsonl.push('\n');
    }
    outputs.push(write_text(dir, TRANSCRIPT_JSONL, &jsonl)?);
    let wall_ms = started.elapsed().as_millis() as u64;
    let report = BuildReport {
        exit_code: None,
        usage_source: None,
        reported_cost_usd: None,
        reported_usage: None,
        gateway: None,
        sandbox: None,
        harness: Harness::Agent,
        outcome,
        model: model.id.to_string(),
        model_slug: model.model.clone(),
        sample: match &ctx.node.subject {
            crate::plan::Subject::Impl { sample, .. } => *sample,
            _ => 0,
        },
        usage: l.usage,
        cost_usd: model.price.cost(l.usage),
        wall_ms,
        latency_ms: l.latency_ms,
        attempts: l.attempts,
        throttled_ms: l.throttled_ms,
        loc: written.loc,
        files: written.files,
        rejected,
        reason,
        agent: Some(l.report),
    };
    outputs.push(write_output(dir, BUILD_JSON, &report)?);
    Ok(outputs)
}

/// The agent's workspace under `holder`: the task's starter files, and its visible tests under
/// their name.
fn seed_workspace(holder: &Path, task: &Task, agent: &AgentTask) -> Result<PathBuf, NodeError> {
    let root = holder.join("ws");
    let seed = |from: &Path, to: &Path| {
        fsutil::copy_tree(from, to).map_err(|e| {
            NodeError::Infrastructure(format!(
                "seeding the agent workspace from {}: {e}",
                from.display()
            ))
        })
    };
    std::fs::create_dir_all(&root).map_err(io(&root))?;
    if let Some(w) = &task.workspace_dir {
        seed(w, &root)?;
    }
    if let (Some(v), Some(name)) = (&agent.visible_dir, &agent.visible_name) {
        seed(v, &root.join(name))?;
    }
    Ok(root)
}

/// The build's outcome for how the loop ended, and why when it is not completed; notes in the
/// agent's report what completed it or which budget ran out.
fn end_outcome(
    end: &End,
    settings: &AgentSettings,
    report: &mut AgentReport,
) -> (BuildOutcome, Option<String>) {
    match end {
        End::Completed(by) => {
            report.completed_by = Some((*by).to_string());
            (BuildOutcome::Completed, None)
        }
        End::Stagnated => (
            BuildOutcome::Stagnated,
            Some(format!(
                "the workspace did not change for {} steps",
                settings.stagnation_steps
            )),
        ),
        End::Budget(what) => {
            report.budget = Some((*what).to_string());
            (
                BuildOutcome::Budget,
                Some(format!(
                    "the {what} budget ran out before a verified `done`"
                )),
            )
        }
        End::Fault(message) => (BuildOutcome::Fault, Some(message.clone())),
    }
}

impl Loop<'_> {
    fn event(&mut self, text: impl Into<String>) {
        self.transcript.push(Entry::Event {
            pass: self.pass,
            step: self.step,
            text: text.into(),
        });
    }

    fn message(&mut self, messages: &mut Vec<Message>, m: Message) {
        self.transcript.push(Entry::Message {
            pass: self.pass,
            step: None,
            message: m.clone(),
            usage: None,
            latency_ms: None,
            finish_reason: None,
        });
        messages.push(m);
    }

    fn end_pass(&mut self, how: &str) {
        self.report.pass_ends.push(how.to_string());
        self.event(format!("pass {} ends: {how}", self.pass));
    }

    async fn drive(&mut self, prompt: &str, started: Instant) -> Result<End, NodeError> {
        let system = system_prompt(self.ctx.task(), self.agent, self.settings);
        let mut stagnation = Stagnation::new(self.ws.fingerprint(), self.settings.stagnation_steps);
        loop {
            self.pass += 1;
            self.report.passes = self.pass;
            self.event(format!("pass {} starts", self.pass));
            let pass_start_fp = self.ws.fingerprint();
            let mut messages = Vec::new();
            self.message(&mut messages, Message::system(system.clone()));
            let user = if self.pass == 1 {
                prompt.to_string()
            } else {
                format!(
                    "{prompt}\n\n---\nThis is pass {} of {}: a fresh context on the same workspace. \
                     The work of earlier passes is in the files; your notes are in `{}` (read them first).",
                    self.pass, self.settings.passes, self.settings.notes_file
                )
            };
            self.message(&mut messages, Message::user(user));
            let pass_end = self
                .one_pass(&mut messages, started, &mut stagnation)
                .await?;
            // The end-of-pass probe: a pass that changed the workspace but ran out of context or
            // steps without a verified `done` is verified now; passing completes the build.
            let probe = matches!(
                pass_end,
                PassEnd::Context | PassEnd::Stop(End::Budget("steps"), _)
            ) && self.ws.fingerprint() != pass_start_fp;
            let how = match &pass_end {
                PassEnd::Stop(_, how) => *how,
                PassEnd::Context => "context",
            };
            if probe {
                let v = self.verify().await?;
                self.event(format!("end-of-pass probe: {}", verification_text(&v)));
                let passed = v.passed;
                self.report.last_verify = Some(v);
                if passed {
                    self.end_pass(&format!("{how}, then probe"));
                    return Ok(End::Completed("probe"));
                }
            }
            self.end_pass(how);
            match pass_end {
                PassEnd::Stop(end, _) => return Ok(end),
                PassEnd::Context if self.pass >= self.settings.passes => {
                    return Ok(End::Budget("context"));
                }
                PassEnd::Context => {}
            }
        }
    }

    /// One pass: call the model, execute its tool calls, repeat until a budget, `done`,
    /// stagnation or a full context ends it.
    async fn one_pass(
        &mut self,
        messages: &mut Vec<Message>,
        started: Instant,
        stagnation: &mut Stagnation,
    ) -> Result<PassEnd, NodeError> {
        let wall = Duration::from_secs(self.settings.wall_secs);
        loop {
            if self.step >= self.settings.max_steps {
                return Ok(PassEnd::Stop(End::Budget("steps"), "steps"));
            }
            let Some(remaining) = wall.checked_sub(started.elapsed()) else {
                return Ok(PassEnd::Stop(End::Budget("wall"), "wall"));
            };
            let response = match self.call(messages, remaining).await? {
                Ok(r) => r,
                Err(end) => return Ok(end),
            };
            if self.run_tools(messages, &response.tool_calls).await? {
                return Ok(PassEnd::Stop(End::Completed("done"), "done"));
            }
            if stagnation.step(self.ws.fingerprint()) {
                return Ok(PassEnd::Stop(End::Stagnated, "stagnated"));
            }
            let context = context_tokens(response.usage, messages);
            self.report.context_peak = self.report.context_peak.max(context);
            if context >= self.settings.max_context_tokens {
                return Ok(PassEnd::Context);
            }
        }
    }

    /// One step's model call within `remaining` of the wall budget, its answer added to the
    /// conversation; `Err` the end of the pass when the wall budget or the endpoint fails.
    async fn call(
        &mut self,
        messages: &mut Vec<Message>,
        remaining: Duration,
    ) -> Result<Result<ChatResponse, PassEnd>, NodeError> {
        let request = ChatRequest {
            model: self.model.model.clone(),
            messages: messages.clone(),
            sampling: self.model.sampling.clone(),
            json_schema: None,
            tools: tool_specs(),
            tool_choice: None,
        };
        let site = CallSite {
            stage: self.ctx.node.stage.clone(),
            model: self.model.id.clone(),
            subject: self.ctx.node.subject.call_subject().unwrap_or_default(),
            turn: self.step as usize,
        };
        let notify = self.ctx.notify();
        let call = self
            .ctx
            .services
            .providers
            .chat(&self.model.provider, &site, &request, &notify);
        let response = tokio::select! {
            r = tokio::time::timeout(remaining, call) => r,
            () = self.ctx.cancel.cancelled() => return Err(NodeError::Cancelled),
        };
        let Ok(response) = response else {
            return Ok(Err(PassEnd::Stop(End::Budget("wall"), "wall")));
        };
        let response = match response {
            Ok(r) => r,
            Err(ProviderError::Infrastructure { usage, message, .. }) => {
                self.usage.add(usage);
                let text = format!("the endpoint failed at step {}: {message}", self.step + 1);
                self.event(text.clone());
                return Ok(Err(PassEnd::Stop(End::Fault(text), "fault")));
            }
            Err(e) => return Err(e.into()),
        };
        self.step += 1;
        self.report.steps = self.step;
        self.usage.add(response.usage);
        self.latency_ms += response.latency_ms;
        self.attempts += response.attempts;
        self.throttled_ms += response.throttled_ms;
        let assistant =
            Message::assistant_calls(response.content.clone(), response.tool_calls.clone());
        self.transcript.push(Entry::Message {
            pass: self.pass,
            step: Some(self.step),
            message: assistant.clone(),
            usage: Some(response.usage),
            latency_ms: Some(response.latency_ms),
            finish_reason: response.finish_reason.clone(),
        });
        messages.push(assistant);
        Ok(Ok(response))
    }

    /// Executes a step's tool calls in order, each result added to the conversation; true when
    /// one of them completed the build (later calls are then not run).
    async fn run_tools(
        &mut self,
        messages: &mut Vec<Message>,
        calls: &[ToolCall],
    ) -> Result<bool, NodeError> {
        let mut completed = false;
        if calls.is_empty() {
            self.message(
                messages,
                Message::user(
                    "No tool was called. Continue through the tools; call `done` when the visible tests pass.",
                ),
            );
        }
        for call in calls {
            if completed {
                // The build is over; later calls of the same turn are not executed.
                self.tool_result(
                    messages,
                    call,
                    "not run: the build is complete".into(),
                    false,
                    0,
                );
                continue;
            }
            let t = Instant::now();
            let (text, refused, done) = self.execute(call).await?;
            let ms = t.elapsed().as_millis() as u64;
            self.tool_result(messages, call, text, refused, ms);
            if done {
                completed = true;
            }
        }
        Ok(completed)
    }

    fn tool_result(
        &mut self,
        messages: &mut Vec<Message>,
        call: &ToolCall,
        text: String,
        refused: bool,
        duration_ms: u64,
    ) {
        self.transcript.push(Entry::Tool {
            pass: self.pass,
            step: self.step,
            id: call.id.clone(),
            name: call.function.name.clone(),
            arguments: call.function.arguments.clone(),
            result: text.clone(),
            refused,
            duration_ms,
        });
        messages.push(Message::tool(call.id.clone(), text));
    }

    /// Executes one tool call: (the text the model gets, refused, a `done` that was accepted).
    async fn execute(&mut self, call: &ToolCall) -> Result<(String, bool, bool), NodeError> {
        let name = call.function.name.as_str();
        *self.report.tool_calls.entry(name.to_string()).or_default() += 1;
        let args: serde_json::Value = if call.function.arguments.trim().is_empty() {
            serde_json::json!({})
        } else {
            match serde_json::from_str(&call.function.arguments) {
                Ok(v) => v,
                Err(e) => {
                    return Ok((
                        format!("error: the arguments are not a JSON object: {e}"),
                        false,
                        false,
                    ));
                }
            }
        };
        let s = |key: &str| -> Result<String, ToolError> {
            args.get(key)
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| ToolError::Failed(format!("`{key}` (a string) is missing")))
        };
        let result = match name {
            "list_dir" => {
                let path = args
                    .get("path")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or(".");
                self.ws.list_dir(path)
            }
            "read_file" => s("path").and_then(|p| self.ws.read_file(&p)),
            "write_file" => s("path").and_then(|p| self.ws.write_file(&p, &s("content")?)),
            "edit_file" => s("path").and_then(|p| self.ws.edit_file(&p, &s("old")?, &s("new")?)),
            "run" => {
                let argv = match args.get("command") {
                    Some(serde_json::Value::Array(items)) => items
                        .iter()
                        .map(|v| v.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>(),
                    Some(serde_json::Value::String(text)) => Some(tools::split_words(text)),
                    _ => None,
                };
                match argv {
                    None => Err(ToolError::Failed(
                        "`command` must be an array of strings".into(),
                    )),
                    Some(argv) => self.run_command(&argv).await?,
                }
            }
            "done" => {
                let v = self.verify().await?;
                let passed = v.passed;
                let text = if passed {
                    format!("done accepted: {}", verification_text(&v))
                } else {
                    self.report.done_rejections += 1;
                    format!(
                        "done rejected: {}. Fix the implementation and call done again.",
                        verification_text(&v)
                    )
                };
                self.report.last_verify = Some(v);
                return Ok((text, false, passed));
            }
            other => Err(ToolError::Failed(format!(
                "unknown tool `{other}`; the tools are list_dir, read_file, write_file, edit_file, run, done"
            ))),
        };
        Ok(match result {
            Ok(text) => (text, false, false),
            Err(e) => {
                let refused = matches!(e, ToolError::Refused(_));
                if refused {
                    self.report.refusals += 1;
                }
                (e.text(), refused, false)
            }
        })
    }

    /// A sandbox job over a copy of the workspace.
    fn job(&self, script: &str, collect: Vec<String>) -> Job {
        workspace_job(
            self.ctx.task(),
            &self.ws.root,
            script,
            Duration::from_secs(self.settings.run_timeout_secs),
            collect,
        )
    }

    async fn run_command(&self, argv: &[String]) -> Result<Result<String, ToolError>, NodeError> {
        if argv.is_empty() {
            return Ok(Err(ToolError::Failed("`command` is empty".into())));
        }
        if !self.agent.allow.iter().any(|p| argv.starts_with(p)) {
            let allowed: BTreeSet<String> = self.agent.allow.iter().map(|p| p.join(" ")).collect();
            return Ok(Err(ToolError::Refused(format!(
                "`{}` is not an allowed command; allowed prefixes: {}",
                argv.join(" "),
                allowed.into_iter().collect::<Vec<_>>().join("; ")
            ))));
        }
        let script = argv
            .iter()
            .map(|a| tools::quote_strict(a))
            .collect::<Vec<_>>()
            .join(" ");
        let r = self
            .ctx
            .services
            .sandbox
            .run(&self.job(&script, Vec::new()), &self.ctx.cancel)
            .await?;
        let mut text = format!(
            "exit {}{}\n",
            r.exit_code
                .map_or_else(|| "none".to_string(), |c| c.to_string()),
            if r.timed_out { " (timed out)" } else { "" }
        );
        push_output(&mut text, "stdout", &r.stdout, r.stdout_dropped);
        push_output(&mut text, "stderr", &r.stderr, r.stderr_dropped);
        Ok(Ok(text))
    }

    /// Runs the task's visible verification on the workspace.
    async fn verify(&self) -> Result<Verification, NodeError> {
        Ok(verify(
            &self.ctx.services.sandbox,
            self.ctx.task(),
            &self.ws.root,
            Duration::from_secs(self.settings.run_timeout_secs),
            &self.ctx.cancel,
        )
        .await?)
    }
}

/// A sandbox job over a copy of the workspace `root`, run from its top, with `$PIPE_JUNIT` set.
fn workspace_job(
    task: &Task,
    root: &Path,
    script: &str,
    timeout: Duration,
    collect: Vec<String>,
) -> Job {
    let mut env = BTreeMap::new();
    env.insert("PYTEST_DISABLE_PLUGIN_AUTOLOAD".into(), "1".into());
    env.insert("PYTHONDONTWRITEBYTECODE".into(), "1".into());
    Job {
        inputs: vec![("ws".into(), root.to_path_buf())],
        script: format!(
            "mkdir -p \"$PIPE_WORK/out\" && export PIPE_JUNIT=\"$PIPE_WORK/out/junit.xml\" && cd \"$PIPE_WORK/ws\" && {script}"
        ),
        env,
        timeout,
        output_limit: 8 * 1024,
        collect,
        python: task.python_requirements.clone(),
        network: false,
        collect_dir: None,
        gateway: None,
        image: None,
        limits: crate::sandbox::JobLimits::default(),
    }
}

/// Runs the task's visible verification (`[agent] verify`) on the workspace `root` in the
/// sandbox. Passes only when its JUnit report lists at least one test, every test passed, and
/// the command exited 0. (`pipe check-task` runs it on the reference solution too.)
pub async fn verify(
    sandbox: &crate::sandbox::Sandbox,
    task: &Task,
    root: &Path,
    timeout: Duration,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<Verification, crate::sandbox::SandboxError> {
    let Some(agent) = &task.agent else {
        return Ok(Verification {
            passed: false,
            tests_passed: 0,
            tests_total: 0,
            exit_code: None,
            reason: Some(format!("task `{}` declares no [agent] verify", task.name)),
        });
    };
    let script = agent
        .verify
        .iter()
        .map(|a| crate::sandbox::shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    let junit_rel = "out/junit.xml".to_string();
    let job = workspace_job(task, root, &script, timeout, vec![junit_rel.clone()]);
    let r = sandbox.run(&job, cancel).await?;
    let cases = match r.files.get(&junit_rel).map(|x| junit::parse(x)) {
        Some(Ok(cases)) => Ok(cases),
        Some(Err(e)) => Err(format!("its JUnit report is unreadable: {e}")),
        None if r.timed_out => Err(format!(
            "it timed out after {}s before reporting",
            timeout.as_secs()
        )),
        None => Err(format!(
            "it exited {:?} without writing a JUnit report (no test ran)",
            r.exit_code
        )),
    };
    let mut v = Verification {
        passed: false,
        tests_passed: 0,
        tests_total: 0,
        exit_code: r.exit_code,
        reason: None,
    };
    match cases {
        Err(why) => v.reason = Some(why),
        Ok(cases) => {
            v.tests_total = cases.len();
            v.tests_passed = cases
                .iter()
                .filter(|c| c.outcome == TestOutcome::Passed)
                .count();
            let failing: Vec<String> = cases
                .iter()
                .filter(|c| c.outcome != TestOutcome::Passed)
                .map(|c| {
                    let msg = c.message.lines().next().unwrap_or("").trim().to_string();
                    if msg.is_empty() {
                        c.id.clone()
                    } else {
                        format!("{} ({msg})", c.id)
                    }
                })
                .collect();
            if cases.is_empty() {
                v.reason = Some("its JUnit report lists no test: nothing ran".into());
            } else if !failing.is_empty() {
                let mut why = format!(
                    "{} of {} tests did not pass: {}",
                    failing.len(),
                    cases.len(),
                    failing.join("; ")
                );
                let tail: String = tail_lines(&r.stdout, 30);
                if !tail.is_empty() {
                    let _ = write!(why, "\n--- output (end) ---\n{tail}");
                }
                v.reason = Some(why);
            } else if r.exit_code != Some(0) {
                v.reason = Some(format!(
                    "every test passed but the command exited {:?}",
                    r.exit_code
                ));
            } else {
                v.passed = true;
            }
        }
    }
    Ok(v)
}

enum PassEnd {
    Stop(End, &'static str),
    Context,
}

fn verification_text(v: &Verification) -> String {
    match (&v.reason, v.passed) {
        (_, true) => format!(
            "{} of {} visible tests passed",
            v.tests_passed, v.tests_total
        ),
        (Some(why), false) => format!("the visible verification failed: {why}"),
        (None, false) => "the visible verification failed".into(),
    }
}

fn push_output(text: &mut String, name: &str, body: &str, dropped: u64) {
    if body.is_empty() {
        return;
    }
    let _ = writeln!(text, "--- {name} ---\n{body}");
    if dropped > 0 {
        let _ = writeln!(text, "[{dropped} more bytes cut]");
    }
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// About four characters a token, over every message and tool call.
pub fn estimate_tokens(messages: &[Message]) -> u64 {
    let chars: usize = messages
        .iter()
        .map(|m| {
            m.content.len()
                + m.tool_calls.as_ref().map_or(0, |calls| {
                    calls
                        .iter()
                        .map(|c| c.function.name.len() + c.function.arguments.len())
                        .sum()
                })
        })
        .sum();
    (chars / 4) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_count_text_and_tool_arguments() {
        let m = vec![
            Message::user("x".repeat(400)),
            Message::assistant_calls("", vec![ToolCall::new("c", "run", "y".repeat(397))]),
        ];
        assert_eq!(estimate_tokens(&m), 200);
    }

    #[test]
    fn stagnation_counts_unchanged_steps_in_a_row() {
        let mut s = Stagnation::new("a".into(), 2);
        assert!(!s.step("a".into()));
        assert!(!s.step("b".into()), "a change resets the count");
        assert!(!s.step("b".into()));
        assert!(s.step("b".into()));
        let mut one = Stagnation::new("a".into(), 1);
        assert!(one.step("a".into()));
    }

    #[test]
    fn context_is_the_reported_usage_or_an_estimate() {
        let m = vec![Message::user("x".repeat(4000))];
        let reported = Usage {
            input_tokens: 900,
            output_tokens: 100,
            cache_read_tokens: 800,
        };
        assert_eq!(context_tokens(reported, &m), 1000);
        assert_eq!(context_tokens(Usage::default(), &m), 1000);
        assert_eq!(context_tokens(Usage::default(), &[]), 0);
    }

    #[test]
    fn every_tool_has_an_object_schema() {
        let names: Vec<String> = tool_specs()
            .iter()
            .map(|t| {
                assert_eq!(t["function"]["parameters"]["type"], "object");
                t["function"]["name"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "list_dir",
                "read_file",
                "write_file",
                "edit_file",
                "run",
                "done"
            ]
        );
    }

    #[test]
    fn verification_texts_say_why() {
        let mut v = Verification {
            passed: false,
            tests_passed: 0,
            tests_total: 0,
            exit_code: Some(5),
            reason: Some("its JUnit report lists no test: nothing ran".into()),
        };
        assert!(verification_text(&v).contains("nothing ran"));
        v.passed = true;
        v.tests_passed = 3;
        v.tests_total = 3;
        assert_eq!(verification_text(&v), "3 of 3 visible tests passed");
    }
}
