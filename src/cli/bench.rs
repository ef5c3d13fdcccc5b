//! `pipe bench`: pipe measured, the figures of BENCHMARKS.md.

use crate::cli::args::BenchCommand;
use crate::cli::exit::{EXIT_FAILED, EXIT_OK};

/// `pipe bench <what>`: prints the measurement, or the error.
pub async fn bench(command: BenchCommand) -> i32 {
    let result = match command {
        BenchCommand::Sandbox { task, runs } => crate::tools::bench::sandbox(&task, runs).await,
        BenchCommand::Engine { nodes, runs, jobs } => {
            crate::tools::bench::engine(nodes, runs.max(1), jobs)
        }
        BenchCommand::Concurrency {
            latency_ms,
            jitter_ms,
            jobs,
            runs,
        } => crate::tools::bench::concurrency(latency_ms, jitter_ms, jobs.max(1), runs.max(1)),
        BenchCommand::Gateway { calls } => crate::tools::bench_gateway::gateway(calls.max(1)).await,
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
