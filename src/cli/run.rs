//! `pipe run`: the argument checks (`--force` must name a stage), then the round run to its end
//! or to a signal, and its summary.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::base::diag::{Diag, render_all};
use crate::base::fsutil;
use crate::base::interrupt::Interrupt;
use crate::base::names::{self, SafeName};
use crate::cli::args::RunArgs;
use crate::cli::common::{cwd, load};
use crate::cli::exit::{self, EXIT_FAILED, EXIT_INVALID, EXIT_OK};
use crate::cli::sandbox::{check_cli_images, select_sandbox};
use crate::config::load::Purpose;
use crate::config::{Pipeline, ProviderKind};
use crate::exec::{self, Outcome, RunOptions, Summary};
use crate::plan::Plan;
use crate::provider::Providers;
use crate::provider::replay::RoundPin;
use crate::results::ResultStore;
use crate::stages::Services;
use crate::store::RoundStore;

/// Nodes in flight by default: enough to keep a round's model calls overlapping; the providers
/// and the sandbox bound their own share.
const DEFAULT_JOBS: usize = 16;

/// `pipe run`: loads the pipeline, applies `--sandbox`, checks `--force`, and runs the round.
pub async fn run(args: RunArgs) -> i32 {
    // A replay needs no API key: every provider answers from the recording.
    let purpose = if args.replay.is_some() {
        Purpose::Validate
    } else {
        Purpose::Run
    };
    let Some(mut p) = load(&args.pipeline, purpose, args.json) else {
        return EXIT_INVALID;
    };
    if let Some(dir) = &args.replay
        && let Err(code) = pin_replay(&mut p, &args.pipeline, dir)
    {
        return code;
    }
    if let Some(s) = args.sandbox {
        p.round.sandbox = s;
    }
    if let Err(code) = check_force(&p, &args.pipeline, &args.force) {
        return code;
    }
    execute(p, args).await
}

/// `--replay DIR`: the round takes the id and date its recording pins ([`RoundPin`]), and every
/// provider becomes a strict replay of DIR. A pin of another round is refused; a pipeline edited
/// since the recording is said (the strict replay tells whether a request changed).
fn pin_replay(p: &mut Pipeline, pipeline: &Path, dir: &Path) -> Result<(), i32> {
    let fail = |message: String| {
        eprint!("{}", render_all(&[Diag::error(pipeline, message)], &cwd()));
        Err(EXIT_INVALID)
    };
    let pin = match RoundPin::read(dir) {
        Ok(pin) => pin,
        Err(e) => return fail(format!("--replay: {e}")),
    };
    if pin.name != p.round.name.as_str() {
        return fail(format!(
            "--replay: {} recorded the round `{}`, this pipeline's round is named `{}`",
            dir.display(),
            pin.round,
            p.round.name
        ));
    }
    if fsutil::hash_file(pipeline).ok().as_deref() != Some(pin.pipeline_blake3.as_str()) {
        eprintln!(
            "warning: {} changed since {} was recorded from {}; the replay is strict: a changed request is an error",
            pipeline.display(),
            dir.display(),
            pin.pipeline
        );
    }
    let (Some(date), Ok(id)) = (names::date(&pin.date), SafeName::new(pin.round.clone())) else {
        return fail(format!("--replay: {} pins no valid round", dir.display()));
    };
    p.round.date = date;
    p.round.id = id;
    for provider in p.providers.values_mut() {
        provider.kind = ProviderKind::Replay {
            recordings: dir.to_path_buf(),
            delay_ms: 0,
            jitter_ms: 0,
        };
    }
    Ok(())
}

/// Every `--force` names a stage of the pipeline; an unknown one is printed with the closest name.
fn check_force(p: &Pipeline, pipeline: &Path, force: &[String]) -> Result<(), i32> {
    for f in force {
        if p.stage(f).is_none() {
            let d = Diag::error(pipeline, format!("--force names unknown stage `{f}`")).help_opt(
                crate::base::diag::did_you_mean(f, p.stages.iter().map(|s| s.name.as_str())),
            );
            eprint!("{}", render_all(&[d], &cwd()));
            return Err(EXIT_INVALID);
        }
    }
    Ok(())
}

/// Runs the checked round: lock, sweep, sandbox, scheduler, then the summary and the exit code.
async fn execute(p: Pipeline, args: RunArgs) -> i32 {
    let RunArgs {
        pipeline,
        replay,
        out,
        store: results_at,
        no_store,
        jobs,
        force,
        record,
        strict,
        json,
        verbose,
        ..
    } = args;
    let out: &Path = &out;
    // Signals are caught from here on: a stop before the first node leaves nothing half done.
    let cancel = CancellationToken::new();
    let interrupt = Interrupt::listen(cancel.clone());
    let store = RoundStore::new(out, &p.round.id);
    let lock = match store.lock() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    if let Err(e) = store.sweep() {
        eprintln!("error: {e}");
        return EXIT_FAILED;
    }
    let _log = exec::log::open(&store.root);
    let plan = Arc::new(Plan::build(&p));
    if verbose {
        for n in plan.nodes() {
            eprintln!("key {} {}", n.key, n.id);
        }
    }
    let round_id = p.round.id.clone();
    let Some(sandbox) = round_sandbox(&p, &pipeline).await else {
        return EXIT_INVALID;
    };
    let sandbox_label = sandbox.label();
    if let Some(dir) = &record
        && let Err(e) = RoundPin::of(&p, &pipeline).and_then(|pin| pin.write(dir))
    {
        eprintln!(
            "error: cannot write {}: {e}",
            dir.join(crate::provider::replay::ROUND_FILE).display()
        );
        return EXIT_FAILED;
    }
    let strict = strict || replay.is_some();
    let providers = Arc::new(Providers::new(&p, strict, record));
    if let Some(budget) = &providers.budget {
        crate::stages::spent::seed(budget, &plan, &store, &p);
        let (spent, _) = budget.spent();
        tracing::info!(spent_usd = spent, "budget seeded from kept results");
    }
    let quiet = json && !std::io::stderr().is_terminal();
    let services = Arc::new(Services {
        pipeline: Arc::new(p),
        providers,
        sandbox: Arc::new(sandbox),
        progress: None,
        quiet,
    });
    let results = (!no_store).then(|| open_results(out, results_at)).flatten();
    let opts = RunOptions {
        jobs: jobs.unwrap_or(DEFAULT_JOBS).max(1),
        force: force.into_iter().collect::<BTreeSet<_>>(),
        cancel_deadline: Duration::from_secs(10),
        results,
    };
    let store = Arc::new(store);
    let result = exec::run(
        plan,
        store.clone(),
        services.clone(),
        &opts,
        cancel,
        &round_id,
    )
    .await;
    log_spending(&services.providers);
    // No job runs any more: whatever container an interrupted job could not remove goes now.
    if let Err(e) = services.sandbox.release().await {
        eprintln!("warning: cannot remove this run's sandbox containers: {e}");
    }
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    if let Err(e) = store.finished() {
        eprintln!("error: {e}");
        return EXIT_FAILED;
    }
    drop(lock);
    print_summary(&summary, sandbox_label, json);
    if summary.interrupted {
        eprintln!(
            "stopped by {}: finished nodes are saved; run again to resume",
            interrupt.describe()
        );
        exit::interrupted(&interrupt)
    } else if summary.failed > 0 || summary.skipped > 0 {
        EXIT_FAILED
    } else {
        EXIT_OK
    }
}

/// The round's sandbox, able to run everything the round asks for (its agent-CLI images among
/// it); `None` (the error printed) when not.
async fn round_sandbox(p: &Pipeline, pipeline: &Path) -> Option<crate::sandbox::Sandbox> {
    let sandbox = select_sandbox(
        p.round.sandbox,
        p.round.unisolated_fallback,
        &p.task(None).image,
        &p.round.id,
    )
    .await?;
    check_cli_images(&sandbox, p, pipeline)
        .await
        .then_some(sandbox)
}

/// Each model's time throttled and, under a spending cap, what the round has spent: into the
/// run log.
fn log_spending(providers: &Providers) {
    for (provider, model, throttled) in providers.throttled() {
        tracing::info!(
            provider = %provider,
            model = %model,
            throttled_ms = u64::try_from(throttled.as_millis()).unwrap_or(u64::MAX),
            "throttled"
        );
    }
    if let Some(budget) = &providers.budget {
        let (spent, by_model) = budget.spent();
        for (model, usd) in by_model {
            tracing::info!(model = %model, spent_usd = usd, "spent");
        }
        tracing::info!(spent_usd = spent, "round spent");
    }
}

/// The result store (`--store`, `PIPE_STORE`, or `OUT/.store`), shared with other runs until this
/// one ends. One that cannot be opened (busy with `pipe store gc`, on a read-only file system) is
/// said, and the round runs without it.
fn open_results(out: &Path, at: Option<std::path::PathBuf>) -> Option<Arc<ResultStore>> {
    let root = at.unwrap_or_else(|| out.join(crate::results::DEFAULT_DIR));
    match ResultStore::open(&root) {
        Ok(r) => Some(Arc::new(r)),
        Err(e) => {
            eprintln!("warning: {e}; this run neither restores nor keeps results");
            None
        }
    }
}

/// The run's summary: one JSON object on stdout, or counts, failed nodes and the report on stderr.
fn print_summary(summary: &Summary, sandbox_label: &str, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "round": summary.round, "round_dir": summary.round_dir, "executed": summary.executed,
                "cached": summary.cached, "restored": summary.restored, "failed": summary.failed, "skipped": summary.skipped,
                "interrupted": summary.interrupted, "wall_ms": summary.wall_ms,
                "sandbox": sandbox_label, "nodes": summary.nodes,
            })
        );
    } else {
        eprintln!(
            "{}: {} executed, {} cached, {} restored, {} failed, {} skipped in {:.1}s",
            summary.round,
            summary.executed,
            summary.cached,
            summary.restored,
            summary.failed,
            summary.skipped,
            summary.wall_ms as f64 / 1000.0
        );
        for n in summary
            .nodes
            .iter()
            .filter(|n| matches!(n.outcome, Outcome::Failed | Outcome::Skipped))
        {
            eprintln!(
                "  {:?} {}: {}",
                n.outcome,
                n.id,
                n.reason.as_deref().unwrap_or("")
            );
        }
        let budget = summary
            .nodes
            .iter()
            .filter(|n| {
                n.reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with(crate::report::text::BUDGET_LABEL))
            })
            .count();
        if budget > 0 {
            eprintln!(
                "{budget} node(s) skipped by a spending cap: raise max_cost_usd and run again to resume them"
            );
        }
        let report = summary
            .round_dir
            .join(crate::report::Format::Markdown.file_name());
        if report.exists() {
            eprintln!("report: {}", report.display());
        }
    }
}
