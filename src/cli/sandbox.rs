//! The sandbox a run or a check gets, and `pipe sandbox bootstrap`.

use std::path::Path;

use crate::cli::args::SandboxCommand;
use crate::cli::common::{load, usage};
use crate::cli::exit::{EXIT_FAILED, EXIT_INVALID, EXIT_OK};
use crate::config::Pipeline;
use crate::config::load::Purpose;
use crate::sandbox::SandboxChoice;
use crate::sandbox::bootstrap::{self, Outcome};
use crate::sandbox::{Sandbox, clis, docker, shell_quote};

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

/// Whether the sandbox of a run can run the round's agent-CLI images (`with = [...]`): only
/// Docker can, and each image must be present. False (every problem printed) when not; the
/// fix names `pipeline` as it was given.
pub async fn check_cli_images(sandbox: &Sandbox, p: &Pipeline, pipeline: &Path) -> bool {
    let mut ok = true;
    for needed in p.cli_images() {
        let clis = needed.with.join(", ");
        match sandbox {
            Sandbox::Local(_) => {
                eprintln!(
                    "error: build stage `{}` runs its agent CLIs ({clis}) in a Docker image, which the local sandbox cannot run: run with `--sandbox docker` (or `sandbox = \"docker\"` in [round])",
                    needed.stage
                );
                ok = false;
            }
            Sandbox::Docker(d) => {
                if !docker::has_image(&d.docker, needed.image).await {
                    eprintln!(
                        "error: build stage `{}` runs its agent CLIs ({clis}) in the image `{}`, which is missing: build it with `pipe sandbox bootstrap --pipeline {}`",
                        needed.stage,
                        needed.image,
                        shell_quote(&pipeline.display().to_string())
                    );
                    ok = false;
                }
            }
        }
    }
    ok
}

/// One image `pipe sandbox bootstrap` made sure of.
#[derive(Debug, serde::Serialize)]
struct Made {
    image: String,
    /// The agent CLIs in it; empty for the base image.
    clis: Vec<String>,
    /// `present` or `built`.
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seconds: Option<f64>,
}

/// `pipe sandbox bootstrap`: builds the offline base image unless it is present, then the
/// agent-CLI images asked for (`--with`) and those the pipeline's builds run in (`--pipeline`).
pub async fn sandbox(command: SandboxCommand) -> i32 {
    let SandboxCommand::Bootstrap {
        image,
        mirror,
        with,
        pipeline,
        json,
    } = command;
    let sets = match cli_sets(&with, pipeline.as_deref(), json) {
        Ok(sets) => sets,
        Err(code) => return code,
    };
    if pipeline.is_some() && sets.is_empty() && !json {
        eprintln!("the pipeline's builds run in no agent-CLI image");
    }
    let notify = |m: &str| eprintln!("{m}");
    let mut made = Vec::new();
    let base = bootstrap::bootstrap(&image, &mirror, &notify).await;
    if let Err(e) = record(&mut made, &image, &[], base, json) {
        return failed(&made, &e, json);
    }
    for names in sets {
        let tag = clis::image_on(&image, &names);
        let outcome = clis::build(&image, &names, &notify).await;
        if let Err(e) = record(&mut made, &tag, &names, outcome, json) {
            return failed(&made, &e, json);
        }
    }
    let built = made.iter().filter(|m| m.outcome == "built").count();
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": true, "images": made, "built": built, "present": made.len() - built})
        );
    } else {
        println!(
            "{} image(s): {built} built, {} present",
            made.len(),
            made.len() - built
        );
    }
    EXIT_OK
}

/// The CLI sets to build images of: `--with` (one image holding them all), then each distinct
/// set the pipeline's builds name. An unknown name or a pipeline that does not load is the exit
/// code (its error printed).
fn cli_sets(with: &[String], pipeline: Option<&Path>, json: bool) -> Result<Vec<Vec<String>>, i32> {
    let mut sets: Vec<Vec<String>> = Vec::new();
    if !with.is_empty() {
        if let Err(e) = clis::chosen(with) {
            return Err(usage(&format!("--with: {e}")));
        }
        sets.push(with.to_vec());
    }
    if let Some(file) = pipeline {
        let p = load(file, Purpose::Validate, json).ok_or(EXIT_INVALID)?;
        for needed in p.cli_images() {
            sets.push(needed.with.to_vec());
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    sets.retain(|names| seen.insert(clis::image_for(names)));
    Ok(sets)
}

/// Notes what became of one image, printing it (unless `json`); the error when it failed.
fn record(
    made: &mut Vec<Made>,
    image: &str,
    clis: &[String],
    outcome: Result<Outcome, String>,
    json: bool,
) -> Result<(), String> {
    let (outcome, seconds) = match outcome? {
        Outcome::Present => ("present", None),
        Outcome::Built { seconds } => ("built", Some(seconds)),
    };
    if !json {
        let what = if clis.is_empty() {
            String::new()
        } else {
            format!(" ({})", clis.join(", "))
        };
        match seconds {
            Some(s) => println!("{image}{what}: built in {s:.0}s"),
            None => println!("{image}{what}: present"),
        }
    }
    made.push(Made {
        image: image.to_string(),
        clis: clis.to_vec(),
        outcome,
        seconds,
    });
    Ok(())
}

fn failed(made: &[Made], error: &str, json: bool) -> i32 {
    eprintln!("error: {error}");
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": false, "images": made, "error": error})
        );
    }
    EXIT_FAILED
}
