//! What every phase may use and nothing here depends on a phase: located diagnostics, limits,
//! safe names, atomic file writes, open directory handles, signals, JUnit reports, statistics.

pub mod diag;
pub mod dirhandle;
pub mod fsutil;
pub mod interrupt;
pub mod junit;
pub mod limits;
pub mod names;
pub mod stats;
