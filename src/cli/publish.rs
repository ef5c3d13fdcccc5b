//! `pipe aggregate` and `pipe publish`: a round's numbers recomputed from its round-data.json,
//! printed or written as report.md, report.html or dataset.json.

use std::path::{Path, PathBuf};

use crate::cli::args::PublishAs;
use crate::cli::common::{import_failed, usage};
use crate::cli::exit::EXIT_OK;

/// `pipe aggregate`: a round's numbers, as text or as JSON.
pub fn aggregate_round(dir: &Path, json: bool) -> i32 {
    let data = match crate::formats::load_round(dir) {
        Ok(d) => d,
        Err(e) => return import_failed(&e),
    };
    let agg = crate::aggregate::compute(&data);
    print!("{}", crate::report::summary(&data, &agg, json));
    EXIT_OK
}

/// `pipe publish`: one round's report or dataset, or with `all` every round's dataset merged.
pub fn publish(dir: &Path, format: Option<PublishAs>, all: bool) -> i32 {
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
