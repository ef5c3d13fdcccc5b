//! What the commands share: loading a pipeline with its diagnostics printed, and the errors of
//! usage and import.

use std::path::{Path, PathBuf};

use crate::base::diag::render_all;
use crate::cli::exit::{self, EXIT_INVALID};
use crate::config::load::Purpose;
use crate::config::{self, Pipeline};

pub fn cwd() -> PathBuf {
    std::env::current_dir().unwrap_or_default()
}

/// Loads a pipeline, printing diagnostics; `None` means exit 2.
pub fn load(file: &Path, purpose: Purpose, json: bool) -> Option<Pipeline> {
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

pub fn usage(message: &str) -> i32 {
    eprintln!("error: {message}");
    EXIT_INVALID
}

pub fn import_failed(e: &crate::formats::ImportError) -> i32 {
    eprintln!("error: {}", e.to_string().trim_end());
    exit::import(e)
}
