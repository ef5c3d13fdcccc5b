//! Publish: the round in the formats its stage names (`report.md`, `aggregate.json`,
//! `dataset.json`, `report.html`), rendered by [`crate::report`], written in the node directory
//! and copied to the round directory.

use std::path::{Path, PathBuf};

use super::{NodeCtx, NodeError};
use crate::aggregate::data::ROUND_DATA_JSON;
use crate::aggregate::{AGGREGATE_JSON, Aggregate, RoundData};
use crate::base::fsutil;
use crate::config::PublishStage;
use crate::plan::NodeKind;
use crate::report::{self, Format};

pub fn run(ctx: &NodeCtx, stage: &PublishStage, dir: &Path) -> Result<Vec<PathBuf>, NodeError> {
    let PublishStage { formats } = stage;
    let agg_node = ctx
        .upstream_of_kind(NodeKind::Aggregate)
        .ok_or_else(|| NodeError::Internal("publish without aggregate".into()))?;
    let a: Aggregate = ctx.read_output(agg_node, AGGREGATE_JSON)?;
    let data: RoundData = ctx.read_output(agg_node, ROUND_DATA_JSON)?;
    let mut outputs = Vec::new();
    for f in formats {
        let format = Format::from(*f);
        let name = format.file_name();
        let bytes = report::render(format, &data, &a);
        let path = dir.join(name);
        fsutil::write_replace(&path, &bytes).map_err(super::io(&path))?;
        // The round directory gets a copy of each, where people look first.
        let to = ctx.store.root.join(name);
        fsutil::write_atomic(&to, &bytes).map_err(super::io(&to))?;
        outputs.push(PathBuf::from(name));
    }
    Ok(outputs)
}
