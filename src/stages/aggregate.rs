//! Aggregate: collects whatever upstream produced into a [`RoundData`] (`round-data.json`) and
//! computes the round's numbers from it ([`crate::aggregate::compute`], `aggregate.json`). A
//! judgment whose node failed or was skipped is a dropout labelled as the infrastructure's; a
//! build that was rejected shows as a failed build.

use std::path::{Path, PathBuf};

use super::builds::report::BuildReport;
use super::gate::GateReport;
use super::judge::Judgment;
use super::{NodeCtx, NodeError, write_output};
use crate::aggregate::data::ROUND_DATA_JSON;
use crate::aggregate::{
    self, AGGREGATE_JSON, BootstrapConfig, BuildRecord, GateRecord, JudgmentRecord, ModelInfo,
    Problem, RoundData, RubricInfo, TestRecord, Tier,
};
use crate::base::names::SafeName;
use crate::config::Pipeline;
use crate::config::rubric::{Aggregation, Rubric};
use crate::config::{ProviderKind, StageKind};
use crate::plan::{Node, NodeKind, Subject};
use crate::stages::outputs::{BUILD_JSON, GATE_JSON, JUDGMENT_JSON};
use crate::store::{FailureKind, NodeRecord, Status};

/// What a suite is called in reports: its tasks, the first few by name.
fn suite_name(tasks: &[crate::config::task::Task]) -> String {
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    if names.len() <= 3 {
        names.join(", ")
    } else {
        format!(
            "{}, ... {} ({} tasks)",
            names[..2].join(", "),
            names[names.len() - 1],
            names.len()
        )
    }
}

pub fn collect(ctx: &NodeCtx) -> Result<RoundData, NodeError> {
    let p = ctx.pipeline();
    let deps = ctx.plan.deps(&ctx.node.id);
    let judge_stage = deps
        .iter()
        .find(|d| d.kind == NodeKind::Judge)
        .map(|d| d.stage.clone());
    let rubric: Option<&Rubric> = judge_stage.as_ref().and_then(|s| match &p.stage(s)?.kind {
        StageKind::Judge(j) => Some(&*j.rubric),
        _ => None,
    });
    let mut data = RoundData {
        round: p.round.id.to_string(),
        name: p.round.name.to_string(),
        date: p.round.date.to_string(),
        task: if p.is_suite() {
            suite_name(&p.tasks)
        } else {
            p.task(None).name.to_string()
        },
        replayed: p
            .providers
            .values()
            .all(|pr| matches!(pr.kind, ProviderKind::Replay { .. })),
        source: None,
        rubric: rubric.map_or_else(
            || RubricInfo {
                name: "\u{2014}".into(),
                aggregation: Aggregation::Median,
                criteria: Vec::new(),
                verdicts: Vec::new(),
            },
            RubricInfo::from,
        ),
        models: p
            .models
            .iter()
            .map(|m| ModelInfo {
                id: m.id.to_string(),
                slug: m.model.clone(),
            })
            .collect(),
        samples: p.round.samples,
        representative_sample: p.round.representative_sample,
        builds: Vec::new(),
        gates: Vec::new(),
        judgments: Vec::new(),
        problems: Vec::new(),
        bootstrap: BootstrapConfig::default(),
    };
    for d in &deps {
        let record = ctx.store.record(d);
        if !record.as_ref().is_some_and(|r| r.status == Status::Done) {
            add_unfinished(&mut data, p, d, record, judge_stage.as_ref());
            continue;
        }
        match (&d.subject, d.kind) {
            (Subject::Impl { model, task, .. }, NodeKind::Build) => {
                data.builds
                    .push(build_record(ctx, d, model, task.as_ref())?);
            }
            (
                Subject::Impl {
                    model,
                    sample,
                    task,
                },
                NodeKind::Gate,
            ) => add_gate(ctx, &mut data, d, model, *sample, task.as_ref())?,
            (Subject::Judgment { judge, task, .. }, NodeKind::Judge)
                if Some(&d.stage) == judge_stage.as_ref() =>
            {
                if let Some(j) = judgment_record(ctx, d, judge, task.as_ref())? {
                    data.judgments.push(j);
                }
            }
            _ => {}
        }
    }
    Ok(data)
}

/// A dependency that did not finish: a problem of the round; for a build, a failed build that
/// says why (the endpoint's last error, the budget); for a judgment of the judge stage, a
/// dropout blamed on the infrastructure. What the failed attempts used and cost is kept.
fn add_unfinished(
    data: &mut RoundData,
    p: &Pipeline,
    d: &Node,
    record: Option<NodeRecord>,
    judge_stage: Option<&SafeName>,
) {
    let usage = record.as_ref().and_then(|r| r.usage).unwrap_or_default();
    let failure = record.and_then(|r| r.failure);
    let kind = failure
        .as_ref()
        .map_or(FailureKind::Infrastructure, |f| f.kind);
    // The stored message leads with its kind (`infrastructure: ...`): the problem names the
    // kind on its own, so the message is kept without it.
    let message = failure.map_or_else(
        || "did not run (an upstream node did not finish)".to_string(),
        |f| {
            f.message
                .strip_prefix(&format!("{}: ", kind.label()))
                .map_or_else(|| f.message.clone(), str::to_string)
        },
    );
    data.problems.push(Problem {
        node: d.id.clone(),
        kind: match kind {
            FailureKind::Infrastructure => "infrastructure",
            FailureKind::Configuration => "configuration",
            FailureKind::Internal => "internal",
            FailureKind::Budget => "budget",
        }
        .into(),
        message: message.clone(),
    });
    match &d.subject {
        Subject::Impl {
            model,
            sample,
            task,
        } if d.kind == NodeKind::Build => {
            let price = p.model(model).map(|m| m.price).unwrap_or_default();
            data.builds.push(BuildRecord {
                model: model.to_string(),
                sample: *sample,
                ok: false,
                reason: Some(format!("{}: {message}", kind.label())),
                usage,
                cost_usd: price.cost(usage),
                wall_ms: 0,
                throttled_ms: 0,
                loc: None,
                run_path: Some(d.dir.display().to_string()),
                test_exit_code: None,
                task: task.as_ref().map(ToString::to_string),
                agent: None,
                unmetered: None,
            });
        }
        Subject::Judgment {
            judge,
            task,
            model,
            sample,
        } if Some(&d.stage) == judge_stage => {
            data.judgments.push(JudgmentRecord {
                judge: judge.to_string(),
                model: model.to_string(),
                sample: *sample,
                tier: if judge == model {
                    Tier::SelfJudge
                } else {
                    Tier::Peer
                },
                scores: data
                    .rubric
                    .criteria
                    .iter()
                    .map(|c| (c.id.clone(), None))
                    .collect(),
                weighted: None,
                hard_fail_pass: None,
                verdict: None,
                note: None,
                dropout: Some(if kind == FailureKind::Budget {
                    format!("{}: {message}", kind.label())
                } else {
                    message
                }),
                // Neither an outage nor a spending cap is the judge's fault.
                infrastructure: true,
                usage,
                cost_usd: p
                    .model(judge)
                    .map(|m| m.price)
                    .unwrap_or_default()
                    .cost(usage),
                wall_ms: 0,
                throttled_ms: 0,
                measured: true,
                task: task.as_ref().map(ToString::to_string),
            });
        }
        _ => {}
    }
}

/// A finished build node's report as a build of the round.
fn build_record(
    ctx: &NodeCtx,
    d: &Node,
    model: &SafeName,
    task: Option<&SafeName>,
) -> Result<BuildRecord, NodeError> {
    let b: BuildReport = ctx.read_output(d, BUILD_JSON)?;
    let price = ctx
        .pipeline()
        .model(model)
        .map(|m| m.price)
        .unwrap_or_default();
    Ok(BuildRecord {
        model: b.model.clone(),
        sample: b.sample,
        ok: b.has_implementation(),
        reason: b.reason.clone(),
        usage: b.usage,
        // Recomputed from the current price table: fixing a price needs no re-run
        // (a command harness's CLI-reported cost when its tokens are unknown).
        cost_usd: b.cost_at(price),
        wall_ms: b.wall_ms,
        throttled_ms: b.throttled_ms,
        loc: b.has_implementation().then_some(b.loc),
        run_path: Some(d.dir.display().to_string()),
        test_exit_code: None,
        task: task.map(ToString::to_string),
        agent: b.agent.as_ref().map(|a| crate::aggregate::AgentNote {
            outcome: serde_json::to_value(b.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            steps: a.steps,
            done_rejections: a.done_rejections,
            passes: a.passes,
        }),
        unmetered: (b.harness == crate::config::Harness::Command && b.gateway.is_none())
            .then(|| b.usage_source.clone().unwrap_or_else(|| "none".into())),
    })
}

/// A finished gate node's report as a gate of the round; its last test exit code goes on the
/// build it tested.
fn add_gate(
    ctx: &NodeCtx,
    data: &mut RoundData,
    d: &Node,
    model: &SafeName,
    sample: u32,
    task: Option<&SafeName>,
) -> Result<(), NodeError> {
    let g: GateReport = ctx.read_output(d, GATE_JSON)?;
    if let Some(b) = data.builds.iter_mut().find(|b| {
        b.model == *model && b.sample == sample && b.task.as_deref() == task.map(SafeName::as_str)
    }) {
        b.test_exit_code = g.exit_codes.last().copied().flatten();
    }
    data.gates.push(GateRecord {
        model: model.to_string(),
        sample,
        passed: g.passed,
        tests_passed: g.tests_passed,
        tests_total: g.tests_total,
        tests: g
            .tests
            .iter()
            .map(|t| TestRecord {
                name: t.name.clone(),
                outcome: t.outcome,
                flaky: t.flaky,
            })
            .collect(),
        reason: g.reason.clone(),
        task: task.map(ToString::to_string),
        // Read from the gate's output, never from the round's settings: a gate cached
        // from an earlier run keeps the sandbox it really ran in.
        sandbox: (!g.sandbox.is_empty())
            .then(|| crate::sandbox::canonical_label(&g.sandbox).to_string()),
    });
    Ok(())
}

/// A finished judge node's judgment as a judgment of the round; none when the judge found the
/// implementation not applicable.
fn judgment_record(
    ctx: &NodeCtx,
    d: &Node,
    judge: &SafeName,
    task: Option<&SafeName>,
) -> Result<Option<JudgmentRecord>, NodeError> {
    let j: Judgment = ctx.read_output(d, JUDGMENT_JSON)?;
    if j.not_applicable {
        return Ok(None);
    }
    let price = ctx
        .pipeline()
        .model(judge)
        .map(|m| m.price)
        .unwrap_or_default();
    Ok(Some(JudgmentRecord {
        judge: j.judge,
        model: j.implementation,
        sample: j.sample,
        tier: j.tier,
        scores: j.scores,
        weighted: None,
        hard_fail_pass: j.hard_fail_pass,
        verdict: j.verdict,
        note: j.note,
        dropout: j.dropout,
        infrastructure: false,
        usage: j.usage,
        cost_usd: price.cost(j.usage),
        wall_ms: j.wall_ms,
        throttled_ms: j.throttled_ms,
        measured: true,
        task: task.map(ToString::to_string),
    }))
}

pub fn run(ctx: &NodeCtx, dir: &Path) -> Result<Vec<PathBuf>, NodeError> {
    let data = collect(ctx)?;
    let agg = aggregate::compute(&data);
    Ok(vec![
        write_output(dir, ROUND_DATA_JSON, &data)?,
        write_output(dir, AGGREGATE_JSON, &agg)?,
    ])
}
