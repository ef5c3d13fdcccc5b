//! `pipe import`: published round data (openbenchmark, Multivac) or HumanEval's problems turned
//! into round or task directories.

use crate::cli::args::ImportCommand;
use crate::cli::common::import_failed;
use crate::cli::exit::EXIT_OK;

pub fn import(cmd: &ImportCommand) -> i32 {
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
