//! Imports of published rounds into [`RoundData`](crate::aggregate::RoundData): the openbenchmark
//! dataset (schema_version 1, [`openbenchmark`]) and Multivac evaluation files ([`multivac`]),
//! with the rubrics they were judged by ([`rubrics`]). Also reads round directories back
//! ([`round_dir`]: `pipe aggregate`, `pipe publish`).
//!
//! An imported round directory holds `round-data.json`, `aggregate.json` (computed) and
//! `report.md`, like the aggregate node of a run.

mod checks;
pub mod error;
pub mod multivac;
pub mod openbenchmark;
pub mod round_dir;
mod rubrics;

pub use error::ImportError;
pub use round_dir::{load_all, load_round};
