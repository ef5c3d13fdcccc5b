//! `pipe clean`: a round's state and outputs forgotten, and with `--containers` the sandbox
//! containers a killed pipe left behind removed.

use std::path::Path;

use crate::cli::common::{load, usage};
use crate::cli::exit::{EXIT_FAILED, EXIT_INVALID, EXIT_OK};
use crate::config::load::Purpose;
use crate::store::RoundStore;

/// `pipe clean [PIPELINE] [--containers]`.
pub async fn clean(pipeline: Option<&Path>, out: &Path, containers: bool) -> i32 {
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
    let Some(p) = load(pipeline, Purpose::Validate, false) else {
        return EXIT_INVALID;
    };
    let store = RoundStore::new(out, &p.round.id);
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
