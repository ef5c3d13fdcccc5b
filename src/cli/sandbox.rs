//! The sandbox a run or a check gets, and `pipe sandbox bootstrap`.

use crate::cli::args::SandboxCommand;
use crate::cli::exit::{EXIT_FAILED, EXIT_OK};
use crate::sandbox::Sandbox;
use crate::sandbox::SandboxChoice;

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

/// `pipe sandbox bootstrap`: builds the offline base image unless it is present.
pub async fn sandbox(command: SandboxCommand) -> i32 {
    let SandboxCommand::Bootstrap { image, mirror } = command;
    match crate::sandbox::bootstrap::bootstrap(&image, &mirror, &|m| eprintln!("{m}")).await {
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
