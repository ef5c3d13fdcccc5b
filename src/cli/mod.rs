//! The command line. Every expected error maps to an exit code here: 0 all done, 1 some node
//! failed, 2 invalid config or usage (a sandbox this machine cannot provide included), 130
//! interrupted by SIGINT, 143 by SIGTERM, 129 by SIGHUP.

pub mod args;
mod bench;
pub mod check_task;
mod clean;
mod common;
pub mod exit;
pub mod graph;
mod import;
mod publish;
mod run;
pub mod sandbox;
mod status;
mod store;
mod validate;

use clap::Parser;

use args::{Cli, Command};
use exit::{EXIT_INVALID, EXIT_OK};

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

/// One function per command.
async fn dispatch(cmd: Command) -> i32 {
    match cmd {
        Command::Validate { pipeline, json } => validate::validate(&pipeline, json),
        Command::Graph {
            pipeline,
            format,
            explain,
        } => graph::graph(&pipeline, format, explain.as_deref()),
        Command::Run(args) => run::run(args).await,
        Command::Status {
            pipeline,
            out,
            json,
        } => status::status(&pipeline, &out, json),
        Command::Clean {
            pipeline,
            out,
            containers,
        } => clean::clean(pipeline.as_deref(), &out, containers).await,
        Command::CheckTask {
            dirs,
            jobs,
            json,
            sandbox,
        } => check_task::run(&dirs, jobs, json, sandbox).await,
        Command::Bench { command } => bench::bench(command).await,
        Command::Import { command } => import::import(&command),
        Command::Aggregate { round_dir, json } => publish::aggregate_round(&round_dir, json),
        Command::Publish { dir, format, all } => publish::publish(&dir, format, all),
        Command::Sandbox { command } => sandbox::sandbox(command).await,
        Command::Store { command } => store::store(&command),
    }
}
