//! The executor: runs a sealed plan on tokio. A node starts when its dependencies have finished;
//! `--jobs` bounds how many run at once (providers bound their own concurrency); a failed node
//! skips its dependents while independent work goes on; a stopping signal (Ctrl-C, SIGTERM,
//! SIGHUP: [`crate::base::interrupt`]) stops scheduling, cancels running nodes with a deadline, and
//! leaves the store consistent.

pub mod outstanding;
pub mod progress;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::exec::outstanding::{NodeState, Reason, Recorded, outstanding};
use crate::exec::progress::Progress;
use crate::plan::{Node, Plan};
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Executed,
    Cached,
    Failed,
    Skipped,
    Cancelled,
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
    pub failed: usize,
    pub skipped: usize,
    pub interrupted: bool,
    pub wall_ms: u64,
    pub nodes: Vec<NodeReport>,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Waiting,
    Running,
    Finished(Outcome),
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

pub async fn run(
    plan: Arc<Plan>,
    store: Arc<RoundStore>,
    services: Arc<Services>,
    opts: &RunOptions,
    cancel: CancellationToken,
    round_id: &str,
) -> Result<Summary, StoreError> {
    let start = Instant::now();
    let nodes: Vec<Node> = plan.nodes().cloned().collect();
    let deps = plan.dep_positions();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, ds) in deps.iter().enumerate() {
        for d in ds {
            dependents[*d].push(i);
        }
    }
    let reasons = plan_outstanding(&plan, &store, &opts.force);
    let mut states: Vec<State> = Vec::with_capacity(nodes.len());
    let mut reports: Vec<Option<NodeReport>> = vec![None; nodes.len()];
    for (i, r) in reasons.iter().enumerate() {
        if r.is_some() {
            states.push(State::Waiting);
        } else {
            states.push(State::Finished(Outcome::Cached));
            reports[i] = Some(NodeReport {
                id: nodes[i].id.clone(),
                outcome: Outcome::Cached,
                reason: None,
                duration_ms: 0,
                key: nodes[i].key.clone(),
            });
        }
    }
    let mut stage_totals: Vec<(String, u64)> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        if reasons[i].is_some() {
            match stage_totals.iter_mut().find(|(s, _)| s == &n.stage) {
                Some((_, c)) => *c += 1,
                None => stage_totals.push((n.stage.to_string(), 1)),
            }
        }
    }
    let progress = Arc::new(Progress::new(&stage_totals, services.quiet));
    let services = Arc::new(Services {
        progress: Some(progress.clone()),
        ..(*services).clone()
    });

    // Dependencies still to finish, per waiting node; a node is ready at zero.
    let mut remaining: Vec<usize> = deps
        .iter()
        .map(|ds| {
            ds.iter()
                .filter(|d| !matches!(states[**d], State::Finished(_)))
                .count()
        })
        .collect();
    let mut ready: BTreeSet<usize> = (0..nodes.len())
        .filter(|i| states[*i] == State::Waiting && remaining[*i] == 0)
        .collect();
    type Ran = (Result<Vec<PathBuf>, NodeError>, Option<PendingRecord>, u64);
    let mut set: JoinSet<Ran> = JoinSet::new();
    let mut tasks: HashMap<tokio::task::Id, usize> = HashMap::new();
    // A node that ran is finished when its task returns; its record goes to the committer.
    // Dependents that read records (tolerant ones: the aggregate) wait for its acknowledgement.
    let (ack_tx, mut acks) =
        tokio::sync::mpsc::unbounded_channel::<(usize, Result<(), StoreError>)>();
    let committer: Committer<usize> = Committer::start(&store.root, ack_tx);
    let mut committing = 0usize;
    let mut interrupted = false;
    let mut deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        // Start (or skip) ready nodes, lowest plan position first, up to --jobs at once.
        while !cancel.is_cancelled() && tasks.len() < opts.jobs {
            let Some(i) = ready.pop_first() else { break };
            let blocked = deps[i].iter().find(|d| {
                matches!(
                    states[**d],
                    State::Finished(Outcome::Failed | Outcome::Skipped | Outcome::Cancelled)
                )
            });
            if let Some(b) = blocked
                && !nodes[i].tolerant
            {
                let why = format!("upstream {} did not finish", nodes[*b].id);
                conclude(
                    i,
                    Outcome::Skipped,
                    Some(why),
                    0,
                    &nodes,
                    &progress,
                    &mut states,
                    &mut reports,
                );
                release(
                    i,
                    Release::All,
                    &nodes,
                    &dependents,
                    &mut remaining,
                    &states,
                    &mut ready,
                );
                continue;
            }
            states[i] = State::Running;
            progress.started(&nodes[i].stage, &nodes[i].id);
            let ctx = NodeCtx {
                plan: plan.clone(),
                node: nodes[i].clone(),
                store: store.clone(),
                services: services.clone(),
                cancel: cancel.child_token(),
            };
            let handle = set.spawn(async move {
                let t = Instant::now();
                let (result, record) = execute(ctx).await;
                (result, record, t.elapsed().as_millis() as u64)
            });
            tasks.insert(handle.id(), i);
        }
        if tasks.is_empty() && committing == 0 {
            break;
        }
        let joined = tokio::select! {
            j = set.join_next_with_id(), if !tasks.is_empty() => j,
            Some((i, written)) = acks.recv(), if committing > 0 => {
                committing -= 1;
                written?;
                // The record is written: dependents that read records (the aggregate) may start.
                release(i, Release::Tolerant, &nodes, &dependents, &mut remaining, &states, &mut ready);
                continue;
            }
            () = cancel.cancelled(), if !interrupted => {
                interrupted = true;
                progress.note(&format!(
                    "interrupted: stopping {} running node(s) (deadline {}s)",
                    tasks.len(),
                    opts.cancel_deadline.as_secs()
                ));
                deadline = Some(Box::pin(tokio::time::sleep(opts.cancel_deadline)));
                continue;
            }
            () = async { deadline.as_mut().expect("guarded").await }, if deadline.is_some() => {
                // Running nodes had their deadline: abort them; their records stay uncommitted.
                // Records already queued are still written.
                set.abort_all();
                while set.join_next().await.is_some() {}
                tasks.clear();
                deadline = None;
                continue;
            }
        };
        let Some(joined) = joined else { continue };
        let (i, result, record, ms) = match joined {
            Ok((id, (result, record, ms))) => {
                (tasks.remove(&id).expect("spawned"), result, record, ms)
            }
            Err(e) => {
                let i = tasks.remove(&e.id()).expect("spawned");
                let e = NodeError::Internal(format!("the node's task panicked: {e}"));
                (i, Err(e), None, 0)
            }
        };
        let (outcome, reason) = match result {
            Ok(_) => (Outcome::Executed, None),
            Err(NodeError::Cancelled) => (Outcome::Cancelled, Some("interrupted".to_string())),
            Err(NodeError::Store(e)) => return Err(e),
            Err(e) => (Outcome::Failed, Some(e.to_string())),
        };
        conclude(
            i,
            outcome,
            reason,
            ms,
            &nodes,
            &progress,
            &mut states,
            &mut reports,
        );
        if let Some(record) = record {
            // Dependents that read only outputs start now, while the record waits for its group
            // commit: the commit is off the critical path. Should a crash keep a dependent's
            // record and lose this one, this node runs again and so does the dependent
            // (its upstream runs), so the cache stays right; a kill of the process loses nothing.
            committer.submit(i, record);
            committing += 1;
            release(
                i,
                Release::Eager,
                &nodes,
                &dependents,
                &mut remaining,
                &states,
                &mut ready,
            );
        } else {
            release(
                i,
                Release::All,
                &nodes,
                &dependents,
                &mut remaining,
                &states,
                &mut ready,
            );
        }
    }
    committer.finish()?;
    for (i, n) in nodes.iter().enumerate() {
        if n.kind == "publish" && states[i] == State::Finished(Outcome::Cached) {
            store.restore_copies(n)?;
        }
    }
    progress.finish();
    let nodes_out: Vec<NodeReport> = reports
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.unwrap_or_else(|| NodeReport {
                id: nodes[i].id.clone(),
                outcome: Outcome::Cancelled,
                reason: Some("not started".into()),
                duration_ms: 0,
                key: nodes[i].key.clone(),
            })
        })
        .collect();
    let count = |o: Outcome| nodes_out.iter().filter(|n| n.outcome == o).count();
    Ok(Summary {
        round: round_id.to_string(),
        round_dir: store.root.clone(),
        executed: count(Outcome::Executed),
        cached: count(Outcome::Cached),
        failed: count(Outcome::Failed),
        skipped: count(Outcome::Skipped),
        interrupted: interrupted || cancel.is_cancelled(),
        wall_ms: start.elapsed().as_millis() as u64,
        nodes: nodes_out,
    })
}

/// A node is over: say so and keep its report.
#[allow(clippy::too_many_arguments)]
fn conclude(
    i: usize,
    outcome: Outcome,
    reason: Option<String>,
    ms: u64,
    nodes: &[Node],
    progress: &Progress,
    states: &mut [State],
    reports: &mut [Option<NodeReport>],
) {
    let label = match outcome {
        Outcome::Executed => "done",
        Outcome::Failed => "failed",
        Outcome::Skipped => "skipped",
        Outcome::Cached | Outcome::Cancelled => "stopped",
    };
    progress.finished(
        &nodes[i].stage,
        &nodes[i].id,
        label,
        reason.as_deref().unwrap_or(""),
    );
    states[i] = State::Finished(outcome);
    reports[i] = Some(NodeReport {
        id: nodes[i].id.clone(),
        outcome,
        reason,
        duration_ms: ms,
        key: nodes[i].key.clone(),
    });
}

/// Which dependents a finished node releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Those that read only its outputs (its outputs are written; its record is queued).
    Eager,
    /// Those that read its record too (tolerant nodes: the aggregate), once it is written.
    Tolerant,
    /// Every one (a node without a record to wait for).
    All,
}

/// A node finished: its waiting dependents have one dependency fewer to wait for.
fn release(
    i: usize,
    which: Release,
    nodes: &[Node],
    dependents: &[Vec<usize>],
    remaining: &mut [usize],
    states: &[State],
    ready: &mut BTreeSet<usize>,
) {
    for &j in &dependents[i] {
        let wanted = match which {
            Release::Eager => !nodes[j].tolerant,
            Release::Tolerant => nodes[j].tolerant,
            Release::All => true,
        };
        if !wanted {
            continue;
        }
        remaining[j] -= 1;
        if remaining[j] == 0 && states[j] == State::Waiting {
            ready.insert(j);
        }
    }
}

/// Runs one node against the store: forget the old record, produce outputs, prepare the record
/// the committer writes (none when interrupted: the node simply runs again).
async fn execute(ctx: NodeCtx) -> (Result<Vec<PathBuf>, NodeError>, Option<PendingRecord>) {
    let started_at = jiff::Timestamp::now();
    let t = Instant::now();
    let dir = match ctx.store.begin(&ctx.node) {
        Ok(d) => d,
        // A node directory not plainly inside the round (a planted link) fails this node alone,
        // and leaves no record: the record would be written there too.
        Err(e @ StoreError::Outside { .. }) => {
            return (Err(NodeError::Configuration(e.to_string())), None);
        }
        Err(e) => return (Err(NodeError::Store(e)), None),
    };
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
        Err(NodeError::Cancelled | NodeError::Store(_)) => return (result, None),
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
        Ok(pending) => (result, Some(pending)),
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
        }
    }
}
