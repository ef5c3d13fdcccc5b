//! The executor: runs a sealed plan on tokio. A node starts when its dependencies have finished;
//! `--jobs` bounds how many run at once (providers bound their own concurrency); a failed node
//! skips its dependents while independent work goes on; a stopping signal (Ctrl-C, SIGTERM,
//! SIGHUP: [`crate::base::interrupt`]) stops scheduling, cancels running nodes with a deadline, and
//! leaves the store consistent.
//!
//! The decisions are pure and tested on their own: [`outstanding`] says which nodes must run,
//! [`scheduler`] which may start next. This file is the async driver around them (tasks, the
//! record committer, the signal), and [`log`] the JSON-lines run log it writes.

pub mod keep;
pub mod log;
pub mod outstanding;
pub mod progress;
pub mod scheduler;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::exec::keep::Keeper;
use crate::exec::outstanding::{NodeState, Reason, Recorded, outstanding};
use crate::exec::progress::Progress;
use crate::exec::scheduler::{Entry, Release, Scheduler, Step};
use crate::plan::{Node, NodeKind, Plan};
use crate::results::{self, ResultStore};
use crate::stages::{self, NodeCtx, NodeError, Services};
use crate::store::{
    Committer, Failure, FailureKind, NodeRecord, PendingRecord, RECORD_FORMAT, RoundStore, Status,
    StoreError,
};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub jobs: usize,
    /// Stages to re-run with everything downstream.
    pub force: BTreeSet<String>,
    /// How long running nodes get to stop after Ctrl-C.
    pub cancel_deadline: Duration,
    /// The result store: nodes about to run are restored from it when it holds their result,
    /// and executed nodes' results are kept in it. None: every node that must run runs.
    pub results: Option<Arc<ResultStore>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Executed,
    Cached,
    /// Its result came from the result store instead of being computed.
    Restored,
    Failed,
    Skipped,
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Executed => "executed",
            Self::Cached => "cached",
            Self::Restored => "restored",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    pub id: String,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub duration_ms: u64,
    pub key: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub round: String,
    pub round_dir: PathBuf,
    pub executed: usize,
    pub cached: usize,
    pub restored: usize,
    pub failed: usize,
    pub skipped: usize,
    pub interrupted: bool,
    pub wall_ms: u64,
    pub nodes: Vec<NodeReport>,
}

pub fn reason_text(r: Reason) -> &'static str {
    match r {
        Reason::Forced => "forced",
        Reason::NeverFinished => "not done yet",
        Reason::KeyChanged => "inputs changed",
        Reason::OutputsChanged => "outputs changed",
        Reason::UpstreamRuns => "upstream re-runs",
    }
}

/// What the store holds of one node.
#[derive(Debug, Clone)]
pub struct Stored {
    pub recorded: Recorded,
    pub record: Option<NodeRecord>,
    /// Outputs of a done record that are missing or changed (see [`RoundStore::changed_outputs`]).
    pub changed: Vec<String>,
}

/// What the store says of each node, in plan order. A done record is verified against its
/// outputs, on every core: a file check is a `stat`, and a digest only where the times moved.
pub fn recorded(plan: &Plan, store: &RoundStore) -> Vec<Stored> {
    let nodes: Vec<&Node> = plan.nodes().collect();
    let read = |n: &Node| match store.load(n) {
        (Some(r), changed) if r.status == Status::Done => {
            let key = r.key.clone();
            Stored {
                recorded: if changed.is_empty() {
                    Recorded::Done { key }
                } else {
                    Recorded::Changed { key }
                },
                record: Some(r),
                changed,
            }
        }
        (other, _) => Stored {
            recorded: Recorded::Missing,
            record: other,
            changed: Vec::new(),
        },
    };
    let threads = crate::sandbox::default_slots().clamp(1, 8);
    let chunk = nodes.len().div_ceil(threads).max(256);
    if nodes.len() <= chunk {
        return nodes.into_iter().map(read).collect();
    }
    std::thread::scope(|s| {
        let parts: Vec<_> = nodes
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|n| read(n)).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().expect("reading records does not panic"))
            .collect()
    })
}

/// Which nodes must run, in plan order.
pub fn plan_outstanding(
    plan: &Plan,
    store: &RoundStore,
    force: &BTreeSet<String>,
) -> Vec<Option<Reason>> {
    outstanding_of(plan, &recorded(plan, store), force)
}

/// Which nodes must run, given what the store holds of each ([`recorded`]).
pub fn outstanding_of(
    plan: &Plan,
    rec: &[Stored],
    force: &BTreeSet<String>,
) -> Vec<Option<Reason>> {
    let deps = plan.dep_positions();
    let states: Vec<NodeState<'_>> = plan
        .nodes()
        .enumerate()
        .map(|(i, n)| NodeState {
            key: &n.key,
            deps: &deps[i],
            recorded: &rec[i].recorded,
            forced: force.contains(n.stage.as_str()),
        })
        .collect();
    outstanding(&states)
}

/// Runs the plan's outstanding nodes (see [`plan_outstanding`]) and says what became of each.
/// Everything it does is logged inside a `run` span (see [`log`]).
pub async fn run(
    plan: Arc<Plan>,
    store: Arc<RoundStore>,
    services: Arc<Services>,
    opts: &RunOptions,
    cancel: CancellationToken,
    round_id: &str,
) -> Result<Summary, StoreError> {
    let run = log::run_id();
    let span = tracing::info_span!("run", run = %run, round = %round_id);
    let driver = span.in_scope(|| Driver::new(plan, store, &services, opts, cancel, run));
    let result = driver.drive(round_id).instrument(span.clone()).await;
    if let Err(e) = &result {
        span.in_scope(|| tracing::error!(error = %e, "run failed"));
    }
    result
}

/// A node's task returns its result, the record to commit (none when interrupted), its wall
/// time in milliseconds, and whether it was restored from the result store.
type Ran = (
    Result<Vec<PathBuf>, NodeError>,
    Option<PendingRecord>,
    u64,
    bool,
);

/// What the driver wakes up for.
enum Wake {
    /// A node's task returned (or panicked).
    Joined(Option<Result<(tokio::task::Id, Ran), tokio::task::JoinError>>),
    /// The committer wrote a node's record, or failed to.
    Written(usize, Result<(), StoreError>),
    /// A stopping signal.
    Interrupted,
    /// The running nodes' time to stop after the signal is over.
    Deadline,
}

/// A node in flight.
struct Running {
    node: usize,
    span: tracing::Span,
    since: Instant,
    /// The results its upstream handed it ([`results::upstream_digest`]); none when one of them
    /// has none (it failed), and then its result is not kept.
    upstream: Option<String>,
}

/// The async side of the executor: spawns what the [`Scheduler`] says may start, collects what
/// the tasks return, hands records to the [`Committer`] and handles the stopping signal.
struct Driver<'a> {
    start: Instant,
    plan: Arc<Plan>,
    store: Arc<RoundStore>,
    services: Arc<Services>,
    opts: &'a RunOptions,
    cancel: CancellationToken,
    run: String,
    nodes: Vec<Node>,
    reasons: Vec<Option<Reason>>,
    deps: Vec<Vec<usize>>,
    /// Each node's result once it is known ([`results::result_digest`]): a cached node's from
    /// its record, a node that ran from the record it made; none while it has not finished or
    /// when it failed.
    digests: Vec<Option<String>>,
    /// Nodes that may be restored from the result store: neither they nor any node upstream were
    /// forced (an upstream that runs is fine: the entry must match the results it hands on).
    restorable: Vec<bool>,
    keeper: Option<Keeper>,
    sched: Scheduler,
    reports: Vec<Option<NodeReport>>,
    progress: Arc<Progress>,
    set: JoinSet<Ran>,
    tasks: HashMap<tokio::task::Id, Running>,
    // A node that ran is finished when its task returns; its record goes to the committer.
    // Dependents that read records (tolerant ones: the aggregate) wait for its acknowledgement.
    committer: Committer<usize>,
    acks: tokio::sync::mpsc::UnboundedReceiver<(usize, Result<(), StoreError>)>,
    committing: usize,
    interrupted: bool,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<'a> Driver<'a> {
    /// Reads the store, decides what runs, sets up progress and the committer, logs the start.
    fn new(
        plan: Arc<Plan>,
        store: Arc<RoundStore>,
        services: &Services,
        opts: &'a RunOptions,
        cancel: CancellationToken,
        run: String,
    ) -> Self {
        let start = Instant::now();
        let nodes: Vec<Node> = plan.nodes().cloned().collect();
        let stored = recorded(&plan, &store);
        let reasons = outstanding_of(&plan, &stored, &opts.force);
        let deps = plan.dep_positions();
        let digests = stored
            .iter()
            .zip(&reasons)
            .map(|(s, r)| match (&s.record, r) {
                (Some(rec), None) => Some(results::result_digest(&rec.outputs)),
                _ => None,
            })
            .collect();
        let restorable = restorable(&reasons, &deps, opts.results.is_some());
        let reports = nodes
            .iter()
            .zip(&reasons)
            .map(|(n, r)| r.is_none().then(|| report(n, Outcome::Cached, None, 0)))
            .collect();
        let runs: Vec<bool> = reasons.iter().map(Option::is_some).collect();
        let progress = Arc::new(Progress::new(
            &per_stage(&nodes, |i| runs[i]),
            services.quiet,
        ));
        log_start(&nodes, &runs, services, opts);
        let services = Arc::new(Services {
            progress: Some(progress.clone()),
            ..services.clone()
        });
        let entries = deps
            .iter()
            .enumerate()
            .map(|(i, deps)| Entry {
                deps: deps.clone(),
                tolerant: nodes[i].tolerant,
                runs: runs[i],
            })
            .collect();
        let keeper = opts
            .results
            .clone()
            .map(|r| Keeper::start(r, progress.clone()));
        let (ack_tx, acks) = tokio::sync::mpsc::unbounded_channel();
        let committer = Committer::start(&store.root, ack_tx);
        Self {
            start,
            plan,
            store,
            services,
            opts,
            cancel,
            run,
            nodes,
            reasons,
            deps,
            digests,
            restorable,
            keeper,
            sched: Scheduler::new(entries, opts.jobs),
            reports,
            progress,
            set: JoinSet::new(),
            tasks: HashMap::new(),
            committer,
            acks,
            committing: 0,
            interrupted: false,
            deadline: None,
        }
    }

    /// Starts what may start, waits for something to happen, until nothing runs nor waits for
    /// its record.
    async fn drive(mut self, round_id: &str) -> Result<Summary, StoreError> {
        loop {
            self.start_ready();
            if self.tasks.is_empty() && self.committing == 0 {
                break;
            }
            match self.wake().await {
                Wake::Joined(joined) => self.joined(joined)?,
                Wake::Written(i, written) => {
                    self.committing -= 1;
                    written?;
                    // The record is written: dependents that read records (the aggregate) may
                    // start.
                    self.sched.written(i);
                }
                Wake::Interrupted => self.interrupt(),
                Wake::Deadline => self.abort().await,
            }
        }
        self.finish(round_id)
    }

    /// Starts (or skips) ready nodes, lowest plan position first, up to `--jobs` at once; none
    /// once a stopping signal came.
    fn start_ready(&mut self) {
        while !self.cancel.is_cancelled() {
            match self.sched.next_step() {
                Some(Step::Start(i)) => self.start(i),
                Some(Step::Skip { node, upstream }) => self.skip(node, upstream),
                None => break,
            }
        }
    }

    /// The span of everything a node does, the provider's retries included.
    fn span(&self, i: usize) -> tracing::Span {
        let n = &self.nodes[i];
        tracing::info_span!("node", run = %self.run, id = %n.id, stage = %n.stage, kind = n.kind.name())
    }

    fn start(&mut self, i: usize) {
        let span = self.span(i);
        let reason = self.reasons[i].map(reason_text);
        span.in_scope(|| tracing::info!(reason, "node started"));
        let node = &self.nodes[i];
        self.progress.started(&node.stage, &node.id);
        let upstream: Option<Vec<(&str, &str)>> = self.deps[i]
            .iter()
            .map(|&d| Some((self.nodes[d].id.as_str(), self.digests[d].as_deref()?)))
            .collect();
        let upstream = upstream.map(results::upstream_digest);
        let restore = match (&self.opts.results, &upstream) {
            (Some(r), Some(u)) if self.restorable[i] => Some((r.clone(), u.clone())),
            _ => None,
        };
        let ctx = NodeCtx {
            plan: self.plan.clone(),
            node: node.clone(),
            store: self.store.clone(),
            services: self.services.clone(),
            cancel: self.cancel.child_token(),
        };
        let task = async move {
            let t = Instant::now();
            let (result, record, restored) = execute(ctx, restore).await;
            (result, record, t.elapsed().as_millis() as u64, restored)
        };
        let handle = self.set.spawn(task.instrument(span.clone()));
        self.tasks.insert(
            handle.id(),
            Running {
                node: i,
                span,
                since: Instant::now(),
                upstream,
            },
        );
    }

    fn skip(&mut self, i: usize, upstream: usize) {
        let upstream = &self.nodes[upstream].id;
        self.span(i)
            .in_scope(|| tracing::info!(upstream = %upstream, "node skipped"));
        let why = format!("upstream {upstream} did not finish");
        self.conclude(i, Outcome::Skipped, Some(why), 0);
    }

    /// Waits for a task to return, a record to be written, the stopping signal or its deadline.
    async fn wake(&mut self) -> Wake {
        let running = !self.tasks.is_empty();
        let deadline = &mut self.deadline;
        let armed = deadline.is_some();
        tokio::select! {
            j = self.set.join_next_with_id(), if running => Wake::Joined(j),
            Some((i, written)) = self.acks.recv(), if self.committing > 0 => Wake::Written(i, written),
            () = self.cancel.cancelled(), if !self.interrupted => Wake::Interrupted,
            () = async { deadline.as_mut().expect("armed").await }, if armed => Wake::Deadline,
        }
    }

    /// A node's task returned: conclude the node, queue its record, release its dependents.
    fn joined(
        &mut self,
        joined: Option<Result<(tokio::task::Id, Ran), tokio::task::JoinError>>,
    ) -> Result<(), StoreError> {
        let Some(joined) = joined else { return Ok(()) };
        let (id, result, record, ms, restored) = match joined {
            Ok((id, (result, record, ms, restored))) => (id, result, record, ms, restored),
            Err(e) => {
                let err = NodeError::Internal(format!("the node's task panicked: {e}"));
                (e.id(), Err(err), None, 0, false)
            }
        };
        let Running {
            node: i,
            span,
            upstream,
            ..
        } = self.tasks.remove(&id).expect("spawned");
        let (outcome, reason) = match result {
            Ok(_) if restored => (Outcome::Restored, None),
            Ok(_) => (Outcome::Executed, None),
            Err(NodeError::Cancelled) => (Outcome::Cancelled, Some("interrupted".to_string())),
            Err(NodeError::Store(e)) => return Err(e),
            Err(e @ NodeError::Budget(_)) => (Outcome::Skipped, Some(e.to_string())),
            Err(e) => (Outcome::Failed, Some(e.to_string())),
        };
        span.in_scope(|| log_finished(outcome, ms, reason.as_deref()));
        self.conclude(i, outcome, reason, ms);
        let ok = matches!(outcome, Outcome::Executed | Outcome::Restored);
        if let Some(record) = record.as_ref().filter(|_| ok) {
            self.digests[i] = Some(results::result_digest(&record.record.outputs));
            if let (Some(keeper), Some(upstream), Outcome::Executed) =
                (&self.keeper, upstream, outcome)
            {
                let node = &self.nodes[i];
                let entry = results::Entry::of(&record.record, &node.stage, upstream);
                keeper.keep(entry, self.store.node_dir(node));
            }
        } else {
            self.digests[i] = None;
        }
        if let Some(record) = record {
            // Dependents that read only outputs start now, while the record waits for its group
            // commit: the commit is off the critical path. Should a crash keep a dependent's
            // record and lose this one, this node runs again and so does the dependent
            // (its upstream runs), so the cache stays right; a kill of the process loses nothing.
            self.committer.submit(i, record);
            self.committing += 1;
            self.sched.finished(i, ok, Release::Eager);
        } else {
            self.sched.finished(i, ok, Release::All);
        }
        Ok(())
    }

    /// The stopping signal: no node starts any more; running ones get the deadline to stop.
    fn interrupt(&mut self) {
        self.interrupted = true;
        let (running, deadline) = (self.tasks.len(), self.opts.cancel_deadline);
        self.progress.note(&format!(
            "interrupted: stopping {running} running node(s) (deadline {}s)",
            deadline.as_secs()
        ));
        tracing::warn!(running, deadline_s = deadline.as_secs(), "interrupted");
        self.deadline = Some(Box::pin(tokio::time::sleep(deadline)));
    }

    /// Running nodes had their deadline: abort them; their records stay uncommitted. Records
    /// already queued are still written.
    async fn abort(&mut self) {
        self.set.abort_all();
        while self.set.join_next().await.is_some() {}
        for (_, r) in self.tasks.drain() {
            self.sched.abandon(r.node);
            let ms = r.since.elapsed().as_millis() as u64;
            r.span
                .in_scope(|| log_finished(Outcome::Cancelled, ms, Some("aborted at the deadline")));
        }
        self.deadline = None;
    }

    /// A node is over: say so and keep its report.
    fn conclude(&mut self, i: usize, outcome: Outcome, reason: Option<String>, ms: u64) {
        let label = match outcome {
            Outcome::Executed => "done",
            Outcome::Restored => "restored",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Cached | Outcome::Cancelled => "stopped",
        };
        let node = &self.nodes[i];
        self.progress.finished(
            &node.stage,
            &node.id,
            label,
            reason.as_deref().unwrap_or(""),
        );
        self.reports[i] = Some(report(node, outcome, reason, ms));
    }

    /// Nothing runs any more: the last records are made durable, a cached or restored publish
    /// node's copies restored, and the summary made.
    fn finish(mut self, round_id: &str) -> Result<Summary, StoreError> {
        self.committer.finish()?;
        if let Some(keeper) = self.keeper.take() {
            keeper.finish();
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let cached = self.reports[i]
                .as_ref()
                .is_some_and(|r| matches!(r.outcome, Outcome::Cached | Outcome::Restored));
            if n.kind == NodeKind::Publish && cached {
                self.store.restore_copies(n)?;
            }
        }
        self.progress.finish();
        let nodes_out: Vec<NodeReport> = self
            .reports
            .into_iter()
            .zip(&self.nodes)
            .map(|(r, n)| {
                r.unwrap_or_else(|| report(n, Outcome::Cancelled, Some("not started".into()), 0))
            })
            .collect();
        let count = |o: Outcome| nodes_out.iter().filter(|n| n.outcome == o).count();
        let cancelled = count(Outcome::Cancelled);
        let summary = Summary {
            round: round_id.to_string(),
            round_dir: self.store.root.clone(),
            executed: count(Outcome::Executed),
            cached: count(Outcome::Cached),
            restored: count(Outcome::Restored),
            failed: count(Outcome::Failed),
            skipped: count(Outcome::Skipped),
            interrupted: self.interrupted || self.cancel.is_cancelled(),
            wall_ms: self.start.elapsed().as_millis() as u64,
            nodes: nodes_out,
        };
        tracing::info!(
            executed = summary.executed,
            cached = summary.cached,
            restored = summary.restored,
            failed = summary.failed,
            skipped = summary.skipped,
            cancelled,
            interrupted = summary.interrupted,
            wall_ms = summary.wall_ms,
            "run finished"
        );
        Ok(summary)
    }
}

fn report(node: &Node, outcome: Outcome, reason: Option<String>, ms: u64) -> NodeReport {
    NodeReport {
        id: node.id.clone(),
        outcome,
        reason,
        duration_ms: ms,
        key: node.key.clone(),
    }
}

/// Each stage with the number of its nodes `pick` selects, in plan order (stages without one
/// left out).
fn per_stage(nodes: &[Node], pick: impl Fn(usize) -> bool) -> Vec<(String, u64)> {
    let mut totals: Vec<(String, u64)> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        if pick(i) {
            match totals.iter_mut().find(|(s, _)| s == &n.stage) {
                Some((_, c)) => *c += 1,
                None => totals.push((n.stage.to_string(), 1)),
            }
        }
    }
    totals
}

/// `run started`, then `cache hits` per stage (and `cache hit` per node at debug).
fn log_start(nodes: &[Node], runs: &[bool], services: &Services, opts: &RunOptions) {
    let to_run = runs.iter().filter(|r| **r).count();
    tracing::info!(
        sandbox = services.sandbox.label(),
        jobs = opts.jobs,
        nodes = nodes.len(),
        to_run,
        cached = nodes.len() - to_run,
        "run started"
    );
    for (stage, count) in per_stage(nodes, |i| !runs[i]) {
        tracing::info!(stage, count, "cache hits");
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        for (n, _) in nodes.iter().zip(runs).filter(|(_, r)| !**r) {
            tracing::debug!(id = %n.id, stage = %n.stage, "cache hit");
        }
    }
}

/// `node finished` (`node restored` for a node the result store gave), inside the node's span.
fn log_finished(outcome: Outcome, wall_ms: u64, reason: Option<&str>) {
    if outcome == Outcome::Restored {
        tracing::info!(wall_ms, "node restored");
    } else if outcome == Outcome::Executed {
        tracing::info!(outcome = outcome.as_str(), wall_ms, "node finished");
    } else {
        tracing::warn!(outcome = outcome.as_str(), wall_ms, reason, "node finished");
    }
}

/// Which nodes may be restored from the result store (the driver's `restorable`), in plan order.
fn restorable(reasons: &[Option<Reason>], deps: &[Vec<usize>], store: bool) -> Vec<bool> {
    let mut forced: Vec<bool> = Vec::with_capacity(reasons.len());
    let mut out = Vec::with_capacity(reasons.len());
    for (i, r) in reasons.iter().enumerate() {
        let f = *r == Some(Reason::Forced) || deps[i].iter().any(|&d| forced[d]);
        forced.push(f);
        out.push(
            store
                && !f
                && matches!(
                    r,
                    Some(
                        Reason::NeverFinished
                            | Reason::KeyChanged
                            | Reason::OutputsChanged
                            | Reason::UpstreamRuns
                    )
                ),
        );
    }
    out
}

/// Runs one node against the store: forget the old record, produce outputs (restored from the
/// result store when `restore` names it and it holds the node's result computed from the same
/// upstream results), prepare the record the committer writes (none when interrupted: the node
/// simply runs again). True when restored.
async fn execute(
    ctx: NodeCtx,
    restore: Option<(Arc<ResultStore>, String)>,
) -> (Result<Vec<PathBuf>, NodeError>, Option<PendingRecord>, bool) {
    let started_at = jiff::Timestamp::now();
    let t = Instant::now();
    let dir = match ctx.store.begin(&ctx.node) {
        Ok(d) => d,
        // A node directory not plainly inside the round (a planted link) fails this node alone,
        // and leaves no record: the record would be written there too.
        Err(e @ StoreError::Outside { .. }) => {
            return (Err(NodeError::Configuration(e.to_string())), None, false);
        }
        Err(e) => return (Err(NodeError::Store(e)), None, false),
    };
    if let Some((results, upstream)) = restore {
        match keep::restore(&results, &ctx.node.key, &upstream, &dir) {
            Ok(Some((entry, paths))) => {
                let (result, record) = restored(&ctx, entry, paths);
                return (result, record, true);
            }
            Ok(None) => {}
            Err(e) => return (Err(NodeError::Store(e)), None, false),
        }
    }
    let result = stages::run(&ctx, &dir).await;
    let finished_at = jiff::Timestamp::now();
    let mut record = NodeRecord {
        format: RECORD_FORMAT,
        id: ctx.node.id.clone(),
        key: ctx.node.key.clone(),
        status: Status::Done,
        failure: None,
        started_at: started_at.to_string(),
        finished_at: finished_at.to_string(),
        duration_ms: t.elapsed().as_millis() as u64,
        attempts: 1,
        usage: None,
        outputs: Vec::new(),
        dirs: Vec::new(),
    };
    let outputs = match &result {
        Ok(outputs) => outputs.as_slice(),
        Err(NodeError::Cancelled | NodeError::Store(_)) => return (result, None, false),
        Err(e) => {
            record.status = Status::Failed;
            if let NodeError::Endpoint { usage, .. } = e {
                record.usage = Some(*usage);
            }
            record.failure = Some(Failure {
                kind: e.kind(),
                message: e.to_string(),
            });
            &[]
        }
    };
    match ctx.store.prepare(&ctx.node, record, outputs) {
        Ok(pending) => (result, Some(pending), false),
        Err(e) => (Err(NodeError::Store(e)), None, false),
    }
}

/// The record of a node restored from the result store: the times and usage of the run that
/// computed it, the outputs as written now.
fn restored(
    ctx: &NodeCtx,
    entry: results::Entry,
    paths: Vec<PathBuf>,
) -> (Result<Vec<PathBuf>, NodeError>, Option<PendingRecord>) {
    let record = NodeRecord {
        format: RECORD_FORMAT,
        id: ctx.node.id.clone(),
        key: ctx.node.key.clone(),
        status: Status::Done,
        failure: None,
        started_at: entry.started_at,
        finished_at: entry.finished_at,
        duration_ms: entry.duration_ms,
        attempts: entry.attempts,
        usage: entry.usage,
        outputs: Vec::new(),
        dirs: Vec::new(),
    };
    match ctx.store.prepare(&ctx.node, record, &paths) {
        Ok(pending) => (Ok(paths), Some(pending)),
        Err(e) => (Err(NodeError::Store(e)), None),
    }
}

impl NodeError {
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Infrastructure(_) | Self::Endpoint { .. } | Self::Store(_) | Self::Cancelled => {
                FailureKind::Infrastructure
            }
            Self::Configuration(_) => FailureKind::Configuration,
            Self::Internal(_) => FailureKind::Internal,
            Self::Budget(_) => FailureKind::Budget,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_nodes_and_all_below_them_are_never_restored() {
        // 0 -> 1 -> 2, and 3 on its own; 4 depends on 1 and 3.
        let deps = vec![vec![], vec![0], vec![1], vec![], vec![1, 3]];
        let r = |reasons: &[Option<Reason>], store| restorable(reasons, &deps, store);
        let all = [
            Some(Reason::NeverFinished),
            Some(Reason::KeyChanged),
            Some(Reason::OutputsChanged),
            Some(Reason::UpstreamRuns),
            None,
        ];
        assert_eq!(r(&all, true), [true, true, true, true, false]);
        assert_eq!(r(&all, false), [false; 5]);
        let forced = [
            Some(Reason::NeverFinished),
            Some(Reason::Forced),
            Some(Reason::UpstreamRuns),
            Some(Reason::KeyChanged),
            Some(Reason::UpstreamRuns),
        ];
        assert_eq!(r(&forced, true), [true, false, false, true, false]);
    }
}
