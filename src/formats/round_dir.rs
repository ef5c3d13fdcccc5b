//! Round directories: what an import writes (`round-data.json`, `aggregate.json` computed from it,
//! `report.md`, like the aggregate node of a run) and reading round data back (`pipe aggregate`,
//! `pipe publish`).

use std::path::{Path, PathBuf};

use super::error::{ImportError, input, read_json, write_err};
use crate::aggregate::data::ROUND_DATA_JSON;
use crate::aggregate::{self, AGGREGATE_JSON, RoundData};
use crate::base::fsutil;

/// Writes `round-data.json`, `aggregate.json` and `report.md` into `dir`.
pub fn write_round(dir: &Path, data: &RoundData) -> Result<(), ImportError> {
    let agg = aggregate::compute(data);
    let p = dir.join(ROUND_DATA_JSON);
    fsutil::write_json(&p, data).map_err(write_err(&p))?;
    let p = dir.join(AGGREGATE_JSON);
    fsutil::write_json(&p, &agg).map_err(write_err(&p))?;
    let p = dir.join(crate::report::Format::Markdown.file_name());
    let md = crate::report::render(crate::report::Format::Markdown, data, &agg);
    fsutil::write_atomic(&p, &md).map_err(write_err(&p))?;
    Ok(())
}

/// A round directory's `round-data.json`: the directory's own, or its aggregate node's.
pub fn round_data_file(dir: &Path) -> Option<PathBuf> {
    [
        dir.join(ROUND_DATA_JSON),
        dir.join("nodes/aggregate/round-data.json"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// The round data of a round directory.
pub fn load_round(dir: &Path) -> Result<RoundData, ImportError> {
    let file = round_data_file(dir).ok_or_else(|| {
        input(format!(
            "{}: no round-data.json here or under nodes/aggregate/",
            dir.display()
        ))
    })?;
    read_json(&file)
}

/// Every round directory directly under `out` with round data, ordered by date, then round id.
pub fn load_all(out: &Path) -> Result<Vec<RoundData>, ImportError> {
    let entries =
        std::fs::read_dir(out).map_err(|e| input(format!("cannot read {}: {e}", out.display())))?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir() && round_data_file(p).is_some())
        .collect();
    dirs.sort();
    let mut rounds = dirs
        .iter()
        .map(|d| load_round(d))
        .collect::<Result<Vec<_>, _>>()?;
    rounds.sort_by(|a, b| a.date.cmp(&b.date).then(a.round.cmp(&b.round)));
    Ok(rounds)
}
